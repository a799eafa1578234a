"""nano8k.simulate: the telephone channel on known signals, and whole corpora (Kaldi, JSONL, Nano)
written with real WAV files; determinism across worker counts; bad input; sox absent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nano8k import channel, data
from nano8k import telephone_line as telephone
from nano8k import simulate as sim
from nano8k.errors import UserError

# No level, no codec: what the channel's filters and noise do alone.
BARE = telephone.SimulationSettings(codec="none", level_db=None)
HAVE_SOX = telephone.sox_formats() is not None


def tone(freq: float, fs: int, seconds: float, amp: float = 0.3) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(int(fs * seconds)) / fs)


def speechlike(fs: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A gliding-pitch harmonic complex, syllable-modulated, with 0.2 s of silence at both ends."""
    rng = np.random.default_rng(seed)
    n = int(fs * seconds)
    t = np.arange(n) / fs
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / fs
    x = sum(np.sin(k * phase) / k for k in range(1, 25) if k * 160 < fs / 2)
    x = x * (0.55 + 0.45 * np.sin(2 * np.pi * 3.1 * t)) + 0.003 * rng.standard_normal(n)
    edge = int(0.2 * fs)
    x[:edge] = 0
    x[-edge:] = 0
    return (0.1 * x / np.max(np.abs(x))).astype(np.float32)


def gain_db(y: np.ndarray, x: np.ndarray, fs_y: int, fs_x: int) -> float:
    """RMS gain on the steady-state middle half."""
    def rms(v):
        q = len(v) // 4
        return np.sqrt(np.mean(np.asarray(v[q:-q], np.float64) ** 2))
    return 20 * np.log10(rms(y) / rms(x))


# ----------------------------------------------------------------------------- filters, codec


@pytest.mark.parametrize("fs_in", [8000, 16000, 44100])
@pytest.mark.parametrize("out_rate", [8000, 16000])
@pytest.mark.parametrize("freq", [100.0, 3800.0])
def test_stopband_attenuation_end_to_end(fs_in, out_rate, freq):
    x = tone(freq, fs_in, 2.0)
    y, rate, _ = telephone.simulate_utterance(x, fs_in, BARE.replace(out_rate=out_rate))
    assert rate == out_rate
    assert gain_db(y, x, rate, fs_in) <= -20.0


@pytest.mark.parametrize("fs_in", [8000, 16000, 48000])
def test_passband_ripple_end_to_end(fs_in):
    gains = np.array([gain_db(telephone.simulate_utterance(tone(f, fs_in, 1.0), fs_in, BARE)[0], tone(f, fs_in, 1.0),
                              8000, fs_in) for f in np.arange(500.0, 3001.0, 250.0)])
    assert gains.max() - gains.min() < 0.5, gains
    assert np.all(np.abs(gains) < 0.5), gains


def test_16k_output_has_nothing_above_4k():
    y, rate, _ = telephone.simulate_utterance(speechlike(16000, 2.0), 16000, telephone.PRESETS["noisy_call"].replace(out_rate=16000))
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / rate)
    assert rate == 16000
    assert 10 * np.log10(spec[freqs > 4200].sum() / spec.sum()) < -60


def test_g711_table_bit_exact():
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    np.testing.assert_array_equal(channel.g711_quantize(pcm, "mu"), channel.mulaw_decode(channel.mulaw_encode(pcm)))
    np.testing.assert_array_equal(channel.g711_quantize(pcm, "a"), channel.alaw_decode(channel.alaw_encode(pcm)))


@pytest.mark.parametrize("codec, law", [("mulaw", "mu"), ("alaw", "a")])
def test_codec_is_real_g711(codec, law):
    """Same seed with and without the codec: the coded output is exactly G.711 of the uncoded one."""
    x = speechlike(16000, 1.0)
    noisy = telephone.PRESETS["noisy_call"]
    plain, _, _ = telephone.simulate_utterance(x, 16000, noisy.replace(codec="none"), seed=5)
    coded, _, params = telephone.simulate_utterance(x, 16000, noisy.replace(codec=codec), seed=5)
    assert params["codec"] == codec
    np.testing.assert_array_equal(channel.float_to_pcm16(coded), channel.g711_quantize(channel.float_to_pcm16(plain), law))


@pytest.mark.skipif(not HAVE_SOX, reason="sox not installed")
@pytest.mark.parametrize("codec", ["gsm", "amr-nb"])
def test_sox_codecs_aligned(codec):
    if telephone.SOX_CODECS[codec] not in telephone.sox_formats():
        pytest.skip(f"this sox has no {codec}")
    x = speechlike(8000, 2.0)
    ref, _, _ = telephone.simulate_utterance(x, 8000, BARE, seed=1)
    y, _, params = telephone.simulate_utterance(x, 8000, BARE.replace(codec=codec), seed=1)
    assert len(y) == len(ref) and params["codec"] == codec
    core = slice(400, -400)
    lags = range(-200, 201)
    corr = [np.dot(y[core], np.roll(ref, d)[core]) for d in lags]
    assert lags[int(np.argmax(corr))] == 0  # no codec delay left
    snr = 10 * np.log10(np.sum(ref[core] ** 2) / np.sum((y - ref)[core] ** 2))
    assert snr > 3.0, snr  # a lossy codec, but clearly the same speech


# ---------------------------------------------------------------------------------- SNR, hum


def test_active_power_ignores_silence():
    x = np.zeros(8000 * 3)
    x[8000:16000] = tone(1000, 8000, 1.0, amp=0.5)
    assert telephone.active_power(x, 8000) == pytest.approx(0.125, rel=1e-3)  # the tone's power, not a third of it
    assert telephone.active_power(np.zeros(100), 8000) == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_line_noise_snr_within_half_db(seed):
    """Achieved SNR (active speech power / added noise power, measured on the output) = drawn SNR."""
    x = speechlike(16000, 2.0, seed)
    settings = BARE.replace(level_db=(-30.0, -20.0), line_snr_db=(5.0, 35.0))
    noisy, _, params = telephone.simulate_utterance(x, 16000, settings, seed=seed)
    clean, _, clean_params = telephone.simulate_utterance(x, 16000, settings.replace(line_snr_db=None), seed=seed)
    assert clean_params["level_db"] == params["level_db"]
    noise = noisy.astype(np.float64) - clean
    achieved = 10 * np.log10(telephone.active_power(clean, 8000) / np.mean(noise**2))
    assert 5.0 <= params["snr_db"] <= 35.0
    assert abs(achieved - params["snr_db"]) <= 0.5, (achieved, params)


def test_background_noise_snr_within_half_db(tmp_path):
    noise_dir = tmp_path / "noise"
    noise_dir.mkdir()
    sf.write(noise_dir / "white.wav", 0.2 * np.random.default_rng(0).standard_normal(44100), 44100, subtype="FLOAT")
    sf.write(noise_dir / "short.flac", 0.1 * np.random.default_rng(1).standard_normal(800), 8000)
    (noise_dir / "notes.txt").write_text("not audio")
    assert [Path(f).name for f in telephone.noise_files(noise_dir)] == ["short.flac", "white.wav"]
    x = speechlike(8000, 3.0)
    settings = BARE.replace(band=None, noise_dir=str(noise_dir), noise_snr_db=(0.0, 20.0))
    seen = set()
    for seed in range(8):
        y, _, params = telephone.simulate_utterance(x, 8000, settings, seed=seed)
        achieved = 10 * np.log10(telephone.active_power(x, 8000) / np.mean((y.astype(np.float64) - x) ** 2))
        assert abs(achieved - params["noise_snr_db"]) <= 0.5, (achieved, params)
        seen.add(params["noise_file"])
    assert seen == {"short.flac", "white.wav"}  # relative to noise_dir, both drawn


def test_scale_to_snr_exact():
    noise = np.random.default_rng(3).standard_normal(1000)
    scaled = telephone.scale_to_snr(noise, 0.01, 17.0)
    assert 10 * np.log10(0.01 / np.mean(scaled**2)) == pytest.approx(17.0, abs=1e-9)
    assert not telephone.scale_to_snr(np.zeros(10), 1.0, 10.0).any()


@pytest.mark.parametrize("mains", [50.0, 60.0])
def test_hum_at_mains_and_harmonic(mains):
    x = tone(1000.0, 8000, 4.0, amp=0.1)
    settings = BARE.replace(hum_hz=(mains,), hum_snr_db=(10.0, 10.0))
    y, _, params = telephone.simulate_utterance(x, 8000, settings, seed=2)
    assert params["hum_hz"] == mains and params["hum_snr_db"] == 10.0
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / 8000)
    peak = lambda f: spec[np.abs(freqs - f) < 2].max()  # noqa: E731
    floor = np.median(spec)
    assert peak(mains) > 1000 * floor and peak(2 * mains) > 300 * floor
    assert peak(2 * mains) / peak(mains) == pytest.approx(0.3, rel=0.05)  # the seed's harmonic amplitude
    other = 60.0 if mains == 50.0 else 50.0
    assert peak(other) < 0.01 * peak(mains)


# ------------------------------------------------------------------------------- packet loss


def test_packet_loss_rate_and_bursts():
    x = tone(1000.0, 8000, 120.0, amp=0.2)  # 6000 frames of 20 ms
    settings = BARE.replace(loss_rate=(0.1, 0.1), loss_burst=2.0)
    y, _, params = telephone.simulate_utterance(x, 8000, settings, seed=11)
    frames = y[: len(y) // 160 * 160].reshape(-1, 160)
    lost = ~frames.any(axis=1)
    assert abs(lost.mean() - 0.1) < 0.03, lost.mean()
    assert params["loss_rate"] == pytest.approx(lost.mean(), abs=1e-3)
    starts = np.flatnonzero(np.diff(np.r_[0, lost.astype(int)]) == 1)
    assert 1.6 < lost.sum() / len(starts) < 2.5  # mean burst length


def test_packet_loss_mask_statistics():
    rng = np.random.default_rng(0)
    rates = [telephone.loss_mask(5000, 0.05, 1.0, rng).mean() for _ in range(10)]
    assert abs(np.mean(rates) - 0.05) < 0.005
    assert not telephone.loss_mask(100, 0.0, 2.0, rng).any()


def test_packet_loss_probability_and_fill():
    x = speechlike(8000, 2.0)
    off = telephone.PRESETS["lossy_voip"].replace(loss_prob=0.0)
    assert telephone.simulate_utterance(x, 8000, off, seed=1)[2]["loss_rate"] is None
    repeat = BARE.replace(loss_rate=(0.3, 0.3), loss_fill="repeat")
    y, _, params = telephone.simulate_utterance(x, 8000, repeat, seed=1)
    assert params["loss_rate"] > 0.1
    alaw = telephone.SimulationSettings(codec="alaw", loss_rate=(0.3, 0.3))
    y, _, _ = telephone.simulate_utterance(x, 8000, alaw, seed=1)
    pcm = channel.float_to_pcm16(y)
    np.testing.assert_array_equal(channel.g711_quantize(pcm, "a"), pcm)  # lost frames too are A-law levels


# -------------------------------------------------------------------------- utterance seeding


def test_seeds_are_per_key_and_steps_independent():
    assert telephone.utterance_seed(0, "a") != telephone.utterance_seed(0, "b") != telephone.utterance_seed(1, "a")
    assert telephone.utterance_seed(0, "a") == telephone.utterance_seed(0, "a")
    x = speechlike(16000, 1.0)
    noisy = telephone.PRESETS["noisy_call"]
    one = telephone.simulate_utterance(x, 16000, noisy, seed=7)
    again = telephone.simulate_utterance(x, 16000, noisy, seed=7)
    np.testing.assert_array_equal(one[0], again[0])
    assert one[2] == again[2]
    # Switching packet loss on leaves the other steps' draws unchanged.
    lossy = telephone.simulate_utterance(x, 16000, noisy.replace(loss_rate=(0.05, 0.05)), seed=7)
    assert {k: v for k, v in lossy[2].items() if k != "loss_rate"} == {k: v for k, v in one[2].items() if k != "loss_rate"}


def test_input_shapes_and_types():
    x = speechlike(8000, 1.0)
    mono, _, _ = telephone.simulate_utterance(x, 8000, BARE, seed=0)
    stereo, _, _ = telephone.simulate_utterance(np.stack([x, x], axis=1), 8000, BARE, seed=0)
    np.testing.assert_array_equal(mono, stereo)
    as_int, _, _ = telephone.simulate_utterance(channel.float_to_pcm16(x), 8000, BARE, seed=0)
    assert np.max(np.abs(as_int - mono)) < 2e-4
    with pytest.raises(telephone.Rejected, match="silent_audio"):
        telephone.simulate_utterance(np.zeros(8000), 8000, BARE)


# ---------------------------------------------------------------------------------- settings


def test_settings_resolution(tmp_path):
    s = telephone.resolve_settings("noisy_call", codec="alaw", out_rate=16000,
                             overrides=["line_snr_db=10:20", "hum_hz=60", "hum_prob=1", "loss_rate=none"])
    assert (s.codec, s.out_rate, s.line_snr_db, s.hum_hz, s.hum_prob, s.loss_rate) == \
        ("alaw", 16000, (10.0, 20.0), (60.0,), 1.0, None)
    preset = tmp_path / "mine.yaml"
    preset.write_text("preset: lossy_voip\nloss_rate: [0.1, 0.2]\ncodec: alaw\n")
    s = telephone.resolve_settings(preset)
    assert (s.loss_rate, s.codec, s.loss_burst) == ((0.1, 0.2), "alaw", 2.0)
    for bad, match in [({"overrides": ["nope=1"]}, "unknown setting nope"),
                       ({"overrides": ["band=300:4100"]}, "band must satisfy"),
                       ({"codec": "opus"}, "codec must be one of"),
                       ({"out_rate": 11025}, "out_rate must be 8000 or 16000"),
                       ({"overrides": ["line_snr_db=30:10"]}, "low 30 > high 10"),
                       ({"overrides": ["loss_rate"]}, "expected KEY=VALUE")]:
        with pytest.raises(UserError, match=match):
            telephone.resolve_settings("clean_g711", **bad)
    with pytest.raises(UserError, match="unknown preset"):
        telephone.resolve_settings("nope")
    for name, preset_settings in telephone.PRESETS.items():
        assert preset_settings.validate() is preset_settings, name


def test_output_names_never_collide():
    keys = ["utt1", "a b", "a/b", "a_b", "A_B", "Utt1", ".hidden", "-opt", "x" * 300, "日本語", "a_b-" + "0" * 12]
    names = sim.output_names(keys)
    assert len({n.casefold() for n in names.values()}) == len(keys)
    assert all(n.endswith(".wav") and "/" not in n and not n.startswith((".", "-")) for n in names.values())
    assert sim.output_names(["utt001", "utt002"]) == {"utt001": "utt001.wav", "utt002": "utt002.wav"}
    # The 12-hex suffix of a sanitized key cannot be taken by a clean key that spells it out.
    import hashlib
    twin = "a_b-" + hashlib.sha256(b"a b").hexdigest()[:12]
    names = sim.output_names(["a b", twin])
    assert names["a b"] != names[twin]


# ------------------------------------------------------------------------------------ corpora


def make_corpus(root: Path, n: int = 6, rate: int = 16000) -> Path:
    """A Kaldi dir with n utterances (1-1.5 s), utt2spk, and one key that needs sanitizing."""
    kaldi = root / "kaldi"
    (root / "audio").mkdir(parents=True)
    kaldi.mkdir()
    keys = [f"spk{i % 2}-utt{i:02d}" for i in range(n - 1)] + ["spk1-utt:odd"]
    scp, text, spk = [], [], []
    for i, key in enumerate(keys):
        path = root / "audio" / f"{i}.wav"
        sf.write(path, speechlike(rate, 1.0 + 0.1 * i, seed=i), rate, subtype="PCM_16")
        scp.append(f"{key} {path}")
        text.append(f"{key} words of utterance {i}")
        spk.append(f"{key} {key.split('-')[0]}")
    for name, lines in (("wav.scp", scp), ("text", text), ("utt2spk", spk)):
        (kaldi / name).write_text("\n".join(lines) + "\n")
    return kaldi


def outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "wav").iterdir())}


@pytest.fixture
def noisy_with_everything(tmp_path) -> telephone.SimulationSettings:
    noise_dir = tmp_path / "noise"
    noise_dir.mkdir()
    sf.write(noise_dir / "n.wav", 0.1 * np.random.default_rng(0).standard_normal(16000), 16000)
    return telephone.PRESETS["noisy_call"].replace(noise_dir=str(noise_dir), noise_prob=1.0, hum_prob=1.0,
                                             loss_rate=(0.02, 0.05))


def test_corpus_deterministic_across_workers_and_order(tmp_path, noisy_with_everything):
    kaldi = make_corpus(tmp_path)
    one = sim.simulate_corpus(kaldi, tmp_path / "w1", noisy_with_everything, workers=1, seed=3, progress=False)
    two = sim.simulate_corpus(kaldi, tmp_path / "w2", noisy_with_everything, workers=2, seed=3, progress=False)
    assert one.written == two.written == 6 and one.exit_code == two.exit_code == 0
    assert outputs(tmp_path / "w1") == outputs(tmp_path / "w2")
    for name in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2channel"):
        assert (tmp_path / "w1" / name).read_text().replace("/w1/", "/w2/") == (tmp_path / "w2" / name).read_text()
    assert one.applied["noise"] == one.applied["hum"] == one.applied["packet_loss"] == 6

    # Same key, same output, whatever else is in the corpus and in which order.
    subset = tmp_path / "subset"
    subset.mkdir()
    for name in ("wav.scp", "text"):
        lines = (kaldi / name).read_text().splitlines()
        (subset / name).write_text("\n".join(reversed(lines[2:5])) + "\n")
    sim.simulate_corpus(subset, tmp_path / "w3", noisy_with_everything, workers=1, seed=3, progress=False)
    first = outputs(tmp_path / "w1")
    for name, content in outputs(tmp_path / "w3").items():
        assert first[name] == content
    # Another seed, other draws.
    sim.simulate_corpus(subset, tmp_path / "w4", noisy_with_everything, seed=4, progress=False)
    assert outputs(tmp_path / "w4") != outputs(tmp_path / "w3")


def test_kaldi_output(tmp_path):
    kaldi = make_corpus(tmp_path)
    report = sim.simulate_corpus(kaldi, tmp_path / "out", telephone.PRESETS["clean_g711"], progress=False)
    out = tmp_path / "out"
    scp = dict(line.split(" ", 1) for line in (out / "wav.scp").read_text().splitlines())
    keys = [line.split()[0] for line in (kaldi / "wav.scp").read_text().splitlines()]
    assert list(scp) == keys  # input order
    assert scp["spk1-utt:odd"].endswith(".wav") and ":" not in Path(scp["spk1-utt:odd"]).name
    for key, path in scp.items():
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "ULAW")
        assert Path(path).parent == out / "wav"
    assert (out / "text").read_text() == (kaldi / "text").read_text()
    assert (out / "utt2spk").read_text() == (kaldi / "utt2spk").read_text()
    assert (out / "spk2utt").read_text().splitlines()[0] == "spk0 spk0-utt00 spk0-utt02 spk0-utt04"
    channels = [json.loads(line.split(" ", 1)[1]) for line in (out / "utt2channel").read_text().splitlines()]
    assert all(c["codec"] == "mulaw" and c["out_rate"] == 8000 and c["level_db"] <= -25.9 for c in channels)
    assert (out / "rejects.jsonl").read_text() == ""
    assert report.seconds_out == pytest.approx(report.seconds_in, abs=0.01)
    with pytest.raises(UserError, match="not empty"):
        sim.simulate_corpus(kaldi, out, progress=False)
    with pytest.raises(UserError, match="is a file of the input .*would overwrite it"):
        sim.simulate_corpus(kaldi, kaldi, overwrite=True, progress=False)


def test_csv_tsv_and_folder_outputs_in_the_input_format(tmp_path):
    import csv

    kaldi = make_corpus(tmp_path, n=3)
    keys = [line.split()[0] for line in (kaldi / "wav.scp").read_text().splitlines()]
    texts = dict(line.split(" ", 1) for line in (kaldi / "text").read_text().splitlines())
    for fmt, delimiter in (("csv", ","), ("tsv", "\t")):
        report = sim.simulate_corpus(kaldi, tmp_path / fmt, telephone.PRESETS["clean_g711"], output_format=fmt, progress=False)
        assert report.manifest.suffix == f".{fmt}" and report.written == 3
        rows = list(csv.DictReader(report.manifest.open(encoding="utf-8"), delimiter=delimiter))
        assert [r["key"] for r in rows] == keys
        assert all(r["text"] == texts[r["key"]] and sf.info(r["audio"]).samplerate == 8000 for r in rows)
        assert all(r["codec"] == "mulaw" and r["out_rate"] == "8000" for r in rows)
        # a CSV input keeps its format by default, and reads back as the same corpus
        again = sim.simulate_corpus(report.manifest, tmp_path / f"{fmt}-again", telephone.PRESETS["clean_g711"], progress=False)
        assert again.output_format == fmt and again.written == 3

    folder = sim.simulate_corpus(kaldi, tmp_path / "folder", telephone.PRESETS["clean_g711"], output_format="folder",
                                 progress=False)
    wavs = sorted((tmp_path / "folder" / "wav").glob("*.wav"))
    assert len(wavs) == 3 and all(w.with_suffix(".txt").read_text().strip() in texts.values() for w in wavs)
    channel = [json.loads(line) for line in (tmp_path / "folder" / "channel.jsonl").read_text().splitlines()]
    assert [c["key"] for c in channel] == keys and all(c["channel"]["codec"] == "mulaw" for c in channel)
    # the folder reads back as a folder corpus, and stays a folder by default
    again = sim.simulate_corpus(tmp_path / "folder" / "wav", tmp_path / "folder-again", telephone.PRESETS["clean_g711"],
                                progress=False)
    assert folder.output_format == "folder" and again.output_format == "folder" and again.written == 3


def test_written_audio_is_what_simulate_utterance_returns(tmp_path):
    kaldi = make_corpus(tmp_path, n=2)
    for codec, rate in (("alaw", 8000), ("mulaw", 16000), ("none", 8000)):
        settings = telephone.SimulationSettings(codec=codec, out_rate=rate, line_snr_db=(20.0, 20.0))
        out = tmp_path / f"{codec}{rate}"
        sim.simulate_corpus(kaldi, out, settings, seed=9, progress=False)
        key = "spk0-utt00"
        x, fs = sf.read(tmp_path / "audio" / "0.wav", dtype="float32")
        expected, _, _ = telephone.simulate_utterance(x, fs, settings, telephone.utterance_seed(9, key))
        written, written_rate = sf.read(out / "wav" / f"{key}.wav", dtype="float32")
        assert written_rate == rate
        np.testing.assert_array_equal(written, expected)


def test_jsonl_and_nano_output(tmp_path):
    kaldi = make_corpus(tmp_path, n=3)
    scp = [line.split(" ", 1) for line in (kaldi / "wav.scp").read_text().splitlines()]
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("".join(json.dumps({"key": k, "source": p, "target": f"text {i}", "lang": "en"}) + "\n"
                             for i, (k, p) in enumerate(scp)))
    sim.simulate_corpus(jsonl, tmp_path / "j", telephone.PRESETS["lossy_voip"], progress=False)
    rows = [json.loads(line) for line in (tmp_path / "j" / "train.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == [k for k, _ in scp]
    assert all(r["lang"] == "en" and r["source"].startswith(str(tmp_path / "j" / "wav")) for r in rows)
    assert all(set(r["channel"]) == {"codec", "level_db", "snr_db", "hum_hz", "hum_snr_db", "loss_rate",
                                     "noise_file", "noise_snr_db", "out_rate"} for r in rows)

    # A Nano manifest: the path in the user turn replaced, lengths recomputed for the new audio.
    nano = tmp_path / "nano.jsonl"
    nano.write_text("".join(json.dumps({
        "key": k, "messages": [{"role": "system", "content": data.DEFAULT_SYSTEM},
                               {"role": "user", "content": f"语音转写：<|startofspeech|>!{p}<|endofspeech|>"},
                               {"role": "assistant", "content": f"text {i}"}],
        "speech_length": 1, "text_length": 2, "duration": 9.9, "sample_rate": 16000}, ensure_ascii=False) + "\n"
        for i, (k, p) in enumerate(scp)))
    for rate in (8000, 16000):
        out = tmp_path / f"n{rate}"
        report = sim.simulate_corpus(nano, out, telephone.PRESETS["clean_g711"].replace(out_rate=rate), progress=False)
        assert report.output_format == "nano" and report.written == 3
        for row in map(json.loads, (out / "nano.jsonl").read_text().splitlines()):
            (path,) = data.audio_paths([row["messages"][1]["content"]])
            assert row["messages"][1]["content"].startswith("语音转写：<|startofspeech|>!" + str(out / "wav"))
            info = sf.info(path)
            assert row["sample_rate"] == info.samplerate == rate
            assert row["speech_length"] == data.fbank_frames(info.frames, rate, data.DEFAULT_FRONTEND_FS)
            assert row["duration"] == pytest.approx(info.frames / rate)
            assert row["text_length"] == 2 and row["channel"]["out_rate"] == rate
    # Nano -> Kaldi works; Kaldi -> Nano needs `data prepare`.
    sim.simulate_corpus(nano, tmp_path / "nk", output_format="kaldi", progress=False)
    assert (tmp_path / "nk" / "text").read_text().splitlines()[1] == f"{scp[1][0]} text 1"
    with pytest.raises(UserError, match="data prepare"):
        sim.simulate_corpus(kaldi, tmp_path / "kn", output_format="nano", progress=False)


def test_bad_input_is_reported_and_the_rest_written(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, speechlike(16000, 1.0), 16000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000), 8000)
    short = tmp_path / "short.wav"
    sf.write(short, speechlike(8000, 1.0)[:100], 8000)
    nan = tmp_path / "nan.wav"
    samples = speechlike(8000, 1.0)
    samples[[10, 20]] = [np.nan, np.inf]
    sf.write(nan, samples, 8000, subtype="FLOAT")
    lines = [
        {"key": "ok1", "source": str(good), "target": "hello"},
        {"key": "missing", "source": str(tmp_path / "nope.wav"), "target": "hello"},
        "{not json",
        {"key": "corrupt", "source": str(corrupt), "target": "hello"},
        {"key": "silent", "source": str(silent), "target": "hello"},
        {"key": "short", "source": str(short), "target": "hello"},
        {"key": "notext", "source": str(good)},
        {"key": "ok1", "source": str(good), "target": "duplicate"},
        {"key": "ok 2", "source": str(good), "target": "world"},
        {"key": "nan", "source": str(nan), "target": "hello"},
    ]
    manifest = tmp_path / "in.jsonl"
    manifest.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        report = sim.simulate_corpus(manifest, out, workers=workers, progress=False)
        assert report.written == 2 and report.exit_code == 1
        got = {(p.line, p.key, p.reason) for p in report.rejects}
        assert got == {(2, "missing", "missing_audio"), (3, None, "malformed_line"),
                       (4, "corrupt", "unreadable_audio"), (5, "silent", "silent_audio"),
                       (6, "short", "audio_too_short"), (7, "notext", "no_text"), (8, "ok1", "duplicate_key"),
                       (10, "nan", "nonfinite_audio")}
        rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
        assert [(r["file"], r["line"], r["key"], r["reason"]) for r in rejects] == \
            [(str(manifest), p.line, p.key, p.reason) for p in report.rejects]
        assert all(r["detail"] for r in rejects)
        rows = [json.loads(line) for line in (out / "in.jsonl").read_text().splitlines()]
        assert [r["key"] for r in rows] == ["ok1", "ok 2"]
        assert sorted(p.name for p in (out / "wav").iterdir()) == sorted(
            sim.output_names(["ok1", "ok 2"]).values())  # no partial or temporary files
        assert "2 of 10 utterances simulated" in report.summary() and "8 rejected" in report.summary()
        assert "2 samples are NaN or infinite" in next(p.detail for p in report.rejects if p.key == "nan")
    # A key with whitespace cannot go into a Kaldi output: rejected, not fatal.
    report = sim.simulate_corpus(manifest, tmp_path / "k", output_format="kaldi", progress=False)
    assert ("ok 2", "bad_key") in {(p.key, p.reason) for p in report.rejects}


def test_sox_missing_message(tmp_path):
    """A PATH without sox: codec gsm fails up front with a one-line message naming the fix."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    kaldi = make_corpus(tmp_path, n=2)
    code = ("import sys\nfrom pathlib import Path\nfrom nano8k import telephone_line as telephone\nfrom nano8k import simulate as sim\nfrom nano8k.errors import UserError\n"
            "try:\n    sim.simulate_corpus(Path(sys.argv[1]), Path(sys.argv[2]), telephone.PRESETS['gsm'], progress=False)\n"
            "except UserError as err:\n    print(err)\n    sys.exit(2)\n")
    env = {**os.environ, "PATH": str(bindir)}
    proc = subprocess.run([sys.executable, "-c", code, str(kaldi), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout.strip() == ("codec gsm needs sox, which is not on PATH: install it (Debian/Ubuntu: apt-get "
                                   "install sox) or use codec mulaw, alaw or none")
    assert not (tmp_path / "out").exists()  # nothing written
    if shutil.which("sox"):  # the same machine with sox on PATH: it runs
        report = sim.simulate_corpus(kaldi, tmp_path / "gsm", telephone.PRESETS["gsm"], progress=False)
        assert report.written == 2 and sf.info(tmp_path / "gsm" / "wav" / "spk0-utt00.wav").subtype == "PCM_16"


def test_segments_pipes_and_progress(tmp_path):
    """Kaldi segments are cut from their recording; `cmd |` entries run only when allowed."""
    kaldi = make_corpus(tmp_path, n=2)
    rec = (kaldi / "wav.scp").read_text().splitlines()[0].split(" ", 1)[1]
    seg_dir = tmp_path / "segmented"
    seg_dir.mkdir()
    (seg_dir / "wav.scp").write_text(f"rec1 {rec}\nrec2 cat {rec} |\n")
    (seg_dir / "segments").write_text("s1 rec1 0.10 0.60\ns2 rec1 0.50 1.00\ns3 rec2 0.00 0.25\ns4 rec1 5.0 6.0\n")
    (seg_dir / "text").write_text("s1 one\ns2 two\ns3 three\ns4 four\n")
    with pytest.raises(UserError, match="pipe"):
        sim.simulate_corpus(seg_dir, tmp_path / "refused", progress=False)
    report = sim.simulate_corpus(seg_dir, tmp_path / "out", allow_pipes=True, progress=True)
    assert report.written == 3 and [(p.key, p.reason) for p in report.rejects] == [("s4", "segment_out_of_range")]
    lengths = {k: sf.info(tmp_path / "out" / "wav" / f"{k}.wav").frames for k in ("s1", "s2", "s3")}
    assert lengths == {"s1": 4000, "s2": 4000, "s3": 2000}
    # The same segment simulated from a cut file is the same audio (the seed follows the key).
    x, fs = sf.read(rec, dtype="float32")
    expected, _, _ = telephone.simulate_utterance(x[1600:9600], fs, telephone.PRESETS["clean_g711"], telephone.utterance_seed(0, "s1"))
    np.testing.assert_array_equal(sf.read(tmp_path / "out" / "wav" / "s1.wav", dtype="float32")[0], expected)


def test_yaml_numbers_are_coerced(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("out_rate: '16000'\nloss_burst: 3\nhum_hz: [60]\nline_snr_db: 20\n")
    s = telephone.resolve_settings(preset)
    assert (s.out_rate, s.loss_burst, s.hum_hz, s.line_snr_db) == (16000, 3.0, (60.0,), (20.0, 20.0))
    preset.write_text("out_rate: fast\n")
    with pytest.raises(UserError, match="out_rate must be a number"):
        telephone.resolve_settings(preset)
