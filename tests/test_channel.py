"""Tests for nano8k.channel: G.711 bit-exactness, band-pass response, resampling."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from nano8k import channel

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # audioop is deprecated in 3.11/3.12
    try:
        import audioop  # the Sun/CCITT g711.c reference; removed from the stdlib in 3.13
    except ImportError:  # pragma: no cover - Python >= 3.13
        audioop = None

needs_audioop = pytest.mark.skipif(audioop is None, reason="stdlib audioop (G.711 oracle) missing")

ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)


# ------------------------------------------------------------------------------------- G.711


@needs_audioop
def test_mulaw_decode_all_codes_match_reference():
    ref = np.frombuffer(audioop.ulaw2lin(ALL_CODES.tobytes(), 2), dtype=np.int16)
    np.testing.assert_array_equal(channel.mulaw_decode(ALL_CODES), ref)


@needs_audioop
def test_alaw_decode_all_codes_match_reference():
    ref = np.frombuffer(audioop.alaw2lin(ALL_CODES.tobytes(), 2), dtype=np.int16)
    np.testing.assert_array_equal(channel.alaw_decode(ALL_CODES), ref)


@needs_audioop
def test_mulaw_encode_all_int16_match_reference():
    ref = np.frombuffer(audioop.lin2ulaw(ALL_PCM.tobytes(), 2), dtype=np.uint8)
    got = channel.mulaw_encode(ALL_PCM)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, ref)


@needs_audioop
def test_alaw_encode_all_int16_match_reference():
    ref = np.frombuffer(audioop.lin2alaw(ALL_PCM.tobytes(), 2), dtype=np.uint8)
    got = channel.alaw_encode(ALL_PCM)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, ref)


def test_mulaw_round_trip_codes():
    # Every code survives code -> lin -> code, except the "-0" code 0x7F: it decodes to 0, which
    # the reference encoder writes as "+0" (0xFF). Both zero codes decode to 0.
    back = channel.mulaw_encode(channel.mulaw_decode(ALL_CODES))
    expected = ALL_CODES.copy()
    expected[0x7F] = 0xFF
    np.testing.assert_array_equal(back, expected)
    assert channel.mulaw_decode(np.array([0x7F, 0xFF], dtype=np.uint8)).tolist() == [0, 0]


def test_alaw_round_trip_codes():
    # A-law has no zero level (smallest levels are +-8), so all 256 codes round-trip exactly.
    back = channel.alaw_encode(channel.alaw_decode(ALL_CODES))
    np.testing.assert_array_equal(back, ALL_CODES)


def test_g711_known_anchor_values():
    # Reference anchors independent of audioop: silence, full scale and the extreme codes.
    assert channel.mulaw_encode(np.array([0, 32767, -32768], np.int16)).tolist() == [0xFF, 0x80, 0x00]
    assert channel.mulaw_decode(np.array([0x80, 0x00], np.uint8)).tolist() == [32124, -32124]
    assert channel.alaw_encode(np.array([0, 32767, -32768], np.int16)).tolist() == [0xD5, 0xAA, 0x2A]
    assert channel.alaw_decode(np.array([0xAA, 0x2A, 0xD5], np.uint8)).tolist() == [32256, -32256, 8]


def test_g711_type_checks():
    with pytest.raises(TypeError):
        channel.mulaw_encode(np.zeros(4, dtype=np.float32))
    with pytest.raises(TypeError):
        channel.alaw_decode(np.zeros(4, dtype=np.int16))
    with pytest.raises(ValueError):
        channel.g711(np.zeros(4), law="x")


@pytest.mark.parametrize("law", ["mu", "a"])
def test_g711_float_helper(law):
    t = np.arange(8000) / 8000.0
    x = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    y = channel.g711(x, law=law)
    assert y.dtype == np.float32 and y.shape == x.shape
    # Idempotent: output lies on codec levels.
    np.testing.assert_array_equal(channel.g711(y, law=law), y)
    # Measured SQNR for this -6 dBFS 1 kHz sine: ~34 dB (mu), ~35 dB (A); require > 30 dB.
    snr = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((y - x).astype(np.float64) ** 2))
    assert snr > 30.0, snr
    # Same result as going through the integer codec explicitly.
    pcm = channel.float_to_pcm16(x)
    enc, dec = (
        (channel.mulaw_encode, channel.mulaw_decode)
        if law == "mu"
        else (channel.alaw_encode, channel.alaw_decode)
    )
    np.testing.assert_array_equal(channel.float_to_pcm16(y), dec(enc(pcm)))


# ---------------------------------------------------------------------------------- band-pass


def _sine_gain_db(freq: float, fs: int = 8000, seconds: float = 2.0) -> float:
    """Gain of channel.bandpass for a unit sine, measured on the steady-state middle half."""
    t = np.arange(int(fs * seconds)) / fs
    x = np.sin(2 * np.pi * freq * t)
    y = channel.bandpass(x, fs)
    q = len(x) // 4
    rms = lambda v: np.sqrt(np.mean(v[q:-q] ** 2))  # noqa: E731
    return 20 * np.log10(rms(y) / rms(x))


@pytest.mark.parametrize("freq", [100.0, 3800.0])
def test_bandpass_stopband_attenuation(freq):
    assert _sine_gain_db(freq) <= -20.0


def test_bandpass_passband_ripple():
    gains = np.array([_sine_gain_db(f) for f in np.arange(500.0, 3001.0, 100.0)])
    assert gains.max() - gains.min() < 0.5, gains
    assert np.all(np.abs(gains) < 0.5), gains


def test_bandpass_shapes_and_short_input():
    x = np.random.default_rng(0).standard_normal((2, 4000)).astype(np.float32)
    y = channel.bandpass(x, 8000)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y[1], channel.bandpass(x[1], 8000), atol=1e-6)
    assert channel.bandpass(np.ones(5), 8000).shape == (5,)
    with pytest.raises(ValueError):
        channel.bandpass(x, 8000, low=300.0, high=4000.0)


# ----------------------------------------------------------------------------------- resample


@pytest.mark.parametrize("from_hz", [16000, 22050, 44100, 48000])
def test_resample_preserves_1khz_sine(from_hz):
    amp, f0, to_hz = 0.5, 1000.0, 8000
    t = np.arange(int(from_hz * 1.0)) / from_hz
    x = (amp * np.sin(2 * np.pi * f0 * t)).astype(np.float32)
    y = channel.resample(x, from_hz, to_hz)
    assert y.dtype == np.float32
    assert abs(len(y) - to_hz) <= 1
    mid = np.asarray(y[len(y) // 4 : 3 * len(y) // 4], dtype=np.float64)  # avoid filter edges
    win = np.hanning(len(mid))
    spec = np.abs(np.fft.rfft(mid * win, n=8 * len(mid)))
    freqs = np.fft.rfftfreq(8 * len(mid), 1.0 / to_hz)
    assert abs(freqs[np.argmax(spec)] - f0) < 2.0
    assert abs(np.sqrt(2.0 * np.mean(mid**2)) - amp) < 0.01 * amp


def test_resample_identity_and_int_input():
    x = np.arange(100, dtype=np.int16)
    y = channel.resample(x, 8000, 8000)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x.astype(np.float32))


# ------------------------------------------------------------------------- bundled demo corpus

DEMO = __import__("pathlib").Path(__file__).resolve().parent.parent / "data" / "demo"


def test_demo_corpus_is_mulaw_and_consistent():
    """The committed corpus decodes to G.711 levels and its Kaldi files point at real WAVs."""
    import soundfile as sf

    utts = {}
    for split in ("train", "dev"):
        scp = dict(line.split(" ", 1) for line in (DEMO / split / "wav.scp").read_text().splitlines())
        txt = dict(line.split(" ", 1) for line in (DEMO / split / "text").read_text().splitlines())
        assert scp.keys() == txt.keys() and list(scp) == sorted(scp)
        assert all(t and not any(c.isdigit() for c in t) for t in txt.values())
        utts.update({k: DEMO / split / p for k, p in scp.items()})
    assert len(utts) >= 90
    for path in list(utts.values())[::7]:
        info = sf.info(path)  # paths are relative to the data directory
        assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "ULAW")
        assert 1.0 <= info.duration <= 3.0
        x, _ = sf.read(path, dtype="int16")
        np.testing.assert_array_equal(channel.mulaw_decode(channel.mulaw_encode(x)), x)
