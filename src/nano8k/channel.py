"""Telephone-channel DSP building blocks: resampling, band limiting and G.711 companding.

These are the primitives a narrow-band (8 kHz) channel simulation is built from:

* :func:`resample` — sample-rate conversion with libsoxr ("HQ" quality).
* :func:`bandpass` — zero-phase Butterworth band-pass modelling the 300-3400 Hz telephone band.
* :func:`mulaw_encode` / :func:`mulaw_decode` / :func:`alaw_encode` / :func:`alaw_decode` —
  ITU-T G.711 companding on real 8-bit codes, bit-exact with the classic Sun/CCITT ``g711.c``
  reference (the same algorithm as CPython's ``audioop.lin2ulaw`` / ``ulaw2lin`` / ``lin2alaw`` /
  ``alaw2lin``). Codes are what goes over the wire (μ-law/A-law WAV data chunk bytes).
* :func:`g711` — float-in/float-out convenience that applies the codec's quantization.

Only numpy, scipy and soxr are used; everything is deterministic and vectorized.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import soxr
from scipy import signal

__all__ = [
    "resample",
    "bandpass",
    "mulaw_encode",
    "mulaw_decode",
    "alaw_encode",
    "alaw_decode",
    "g711",
    "g711_table",
    "g711_quantize",
    "float_to_pcm16",
    "pcm16_to_float",
]

# ---------------------------------------------------------------------------------------------
# Resampling and band limiting
# ---------------------------------------------------------------------------------------------


def resample(x: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """Resample ``x`` (1-D, or 2-D as frames x channels) from ``from_hz`` to ``to_hz``.

    Uses libsoxr at "HQ" quality (linear phase, ~-140 dB stop band, pass band flat to ~0.91 of the
    output Nyquist), so a 16 kHz -> 8 kHz conversion itself removes everything above ~3.6 kHz.
    Integer input is converted to float32; float input keeps its dtype.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    if int(from_hz) == int(to_hz):
        return x.copy()
    return soxr.resample(x, int(from_hz), int(to_hz), quality="HQ")


def _bandpass_sos(fs: float, low: float, high: float, order: int) -> np.ndarray:
    nyq = 0.5 * fs
    if not 0.0 < low < high < nyq:
        raise ValueError(f"need 0 < low < high < fs/2, got low={low}, high={high}, fs={fs}")
    return _butter_sos(fs, low, high, order).copy()  # a copy: scipy's sosfilt wants a writable array


@functools.lru_cache(maxsize=32)
def _butter_sos(fs: float, low: float, high: float, order: int) -> np.ndarray:
    # Cached: scipy's butter() costs about 1 ms a call, as much as filtering a few seconds.
    return signal.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")


def bandpass(
    x: np.ndarray,
    fs: float,
    low: float = 300.0,
    high: float = 3400.0,
    order: int = 4,
) -> np.ndarray:
    """Band-limit ``x`` to the telephone band ``[low, high]`` Hz (filtered along the last axis).

    A Butterworth band-pass (``order`` per band edge, second-order sections for numerical
    robustness) is applied forward and backward (``sosfiltfilt``): zero phase, so the speech
    stays time-aligned with its transcript, and the magnitude response is squared (-6 dB at
    ``low``/``high``). Defaults at fs 8000: about -78 dB at 100 Hz and -79 dB at 3800 Hz, and a
    maximally flat pass band (within 0.1 dB from 500 to 3000 Hz).
    Output has the input's float dtype (float64 for integer input).
    """
    x = np.asarray(x)
    out_dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    sos = _bandpass_sos(float(fs), float(low), float(high), int(order))
    n = x.shape[-1]
    # Default pad length is 3 * (2 * n_sections + 1); shorten it for very short inputs.
    padlen = min(3 * (2 * len(sos) + 1), max(n - 1, 0))
    y = signal.sosfiltfilt(sos, x.astype(np.float64, copy=False), axis=-1, padlen=padlen)
    return y.astype(out_dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# Float <-> PCM16
# ---------------------------------------------------------------------------------------------


def float_to_pcm16(x: np.ndarray) -> np.ndarray:
    """Float in [-1, 1) -> int16, scale 32768, round to nearest, clip (soundfile's convention)."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767).astype(
        np.int16
    )


def pcm16_to_float(x: np.ndarray, dtype=np.float32) -> np.ndarray:
    """int16 -> float in [-1, 1): divide by 32768 (inverse of :func:`float_to_pcm16`)."""
    return (np.asarray(x, dtype=np.int16).astype(np.float64) / 32768.0).astype(dtype)


# ---------------------------------------------------------------------------------------------
# G.711 (ITU-T), bit-exact with the Sun/CCITT g711.c reference
# ---------------------------------------------------------------------------------------------

_ULAW_BIAS = 0x84  # 132, added in the 16-bit domain (33 in the 14-bit domain)
_ULAW_CLIP = 8159  # 14-bit magnitude clip
# Segment end points (inclusive) used by the reference's search(): the first index whose end point
# is >= the value is the segment (0..7); 8 means overflow, which the reference maps to the
# largest-magnitude code (reached by μ-law for |pcm| >= 32636, where clip + bias = 0x2000).
_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _as_pcm16(pcm16: np.ndarray) -> np.ndarray:
    a = np.asarray(pcm16)
    if a.dtype != np.int16:
        raise TypeError(f"expected int16 PCM, got {a.dtype}")
    return a


def _as_codes(codes: np.ndarray) -> np.ndarray:
    a = np.asarray(codes)
    if a.dtype != np.uint8:
        raise TypeError(f"expected uint8 G.711 codes, got {a.dtype}")
    return a


def mulaw_encode(pcm16: np.ndarray) -> np.ndarray:
    """int16 PCM -> μ-law codes (uint8), as the reference ``linear2ulaw(pcm >> 2)``.

    The input is reduced to 14 bits by an arithmetic shift (floor), so e.g. -1..-4 map to the
    smallest negative level (code 0x7E -> -8) and 0..3 to +0 (code 0xFF). Code 0x7F ("-0") is
    never produced by the encoder but decodes to 0.
    """
    v = _as_pcm16(pcm16).astype(np.int32) >> 2
    neg = v < 0
    mag = np.minimum(np.where(neg, -v, v), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_SEG_UEND, mag, side="left").astype(np.int32)  # 0..8
    uval = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> (seg + 1)) & 0xF))
    return (uval ^ np.where(neg, 0x7F, 0xFF)).astype(np.uint8)


def mulaw_decode(codes: np.ndarray) -> np.ndarray:
    """μ-law codes (uint8) -> int16 PCM, as the reference ``ulaw2linear`` (both 0x7F and 0xFF -> 0)."""
    u = (~_as_codes(codes)).astype(np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def alaw_encode(pcm16: np.ndarray) -> np.ndarray:
    """int16 PCM -> A-law codes (uint8), as the reference ``linear2alaw(pcm >> 3)`` (even bits inverted)."""
    v = _as_pcm16(pcm16).astype(np.int32) >> 3
    neg = v < 0
    mag = np.where(neg, -v - 1, v)  # one's-complement style magnitude, 0..4095
    seg = np.searchsorted(_SEG_AEND, mag, side="left").astype(np.int32)  # 0..7 (mag <= 4095)
    shift = np.maximum(seg, 1)  # segments 0 and 1 share the same step size
    aval = (seg << 4) | ((mag >> shift) & 0xF)
    return (aval ^ np.where(neg, 0x55, 0xD5)).astype(np.uint8)


def alaw_decode(codes: np.ndarray) -> np.ndarray:
    """A-law codes (uint8) -> int16 PCM, as the reference ``alaw2linear`` (no zero level: ±8 minimum)."""
    a = _as_codes(codes).astype(np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = ((a & 0x0F) << 4) + np.where(seg == 0, 8, 0x108)
    t = t << np.maximum(seg - 1, 0)
    return np.where(a & 0x80, t, -t).astype(np.int16)


def g711(x: np.ndarray, law: Literal["mu", "a"] = "mu") -> np.ndarray:
    """Pass float audio in [-1, 1] through a G.711 codec: float -> int16 -> code -> int16 -> float.

    Simulates the quantization (and clipping) a telephone link applies; output dtype is float32
    (or the input's float dtype).
    """
    x = np.asarray(x)
    out_dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    pcm = float_to_pcm16(x)
    if law == "mu":
        y = mulaw_decode(mulaw_encode(pcm))
    elif law == "a":
        y = alaw_decode(alaw_encode(pcm))
    else:
        raise ValueError(f"law must be 'mu' or 'a', got {law!r}")
    return pcm16_to_float(y, dtype=out_dtype)


@functools.lru_cache(maxsize=2)
def g711_table(law: Literal["mu", "a"] = "mu") -> np.ndarray:
    """Read-only int16 table of 65536 entries: ``table[pcm + 32768]`` is ``decode(encode(pcm))``.

    Built from :func:`mulaw_encode`/:func:`mulaw_decode` (or the A-law pair) over every int16
    value, so a look-up is bit-exact with them, and about 50x faster than encoding and decoding.
    """
    if law not in ("mu", "a"):
        raise ValueError(f"law must be 'mu' or 'a', got {law!r}")
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    table = mulaw_decode(mulaw_encode(pcm)) if law == "mu" else alaw_decode(alaw_encode(pcm))
    table.flags.writeable = False
    return table


def g711_quantize(pcm16: np.ndarray, law: Literal["mu", "a"] = "mu") -> np.ndarray:
    """int16 PCM -> the int16 levels a G.711 codec round trip gives (encode then decode), by table."""
    pcm = _as_pcm16(pcm16)
    return np.take(g711_table(law), pcm.view(np.uint16) ^ np.uint16(0x8000))
