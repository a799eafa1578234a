"""The one audio loader: what nano8k reads audio with, in prepare, check, simulate and decode.

soundfile (libsndfile) reads WAV (PCM, float, mu-law, A-law), FLAC, OGG/Opus, MP3 and SPHERE, and,
given their declared format, the headerless files of Asterisk and FreeSWITCH (RAW_FORMATS: ``.gsm``
GSM 06.10, ``.ulaw``/``.ul``/``.pcmu`` and ``.alaw``/``.al``/``.pcma`` G.711, ``.sln``/``.slin``
16-bit linear at 8 kHz, ``.sln16`` at 16 kHz, ``.raw`` 16-bit linear at a rate the user declares).
A file is read, or refused with one line naming it and what is missing; a file of an unknown
extension is never read as anything else. Samples that are NaN or infinite are a problem of
their own (never "silence").
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from nano8k.errors import one_line
from nano8k.files import atomic_path

# check()'s audio-content thresholds (notes: FunASR trains on such audio as it is).
CLIP_FRACTION = 0.001  # clipped: at least 0.1 % of the samples of some channel at full scale


SILENCE_DBFS = -60.0  # silent: RMS of the channel mix FunASR computes below -60 dB full scale


AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".sph"})


# Sample formats a WAV file holds as they are (decoded samples come back bit-exact when rewritten).
LOSSLESS_WAV_SUBTYPES = {"PCM_U8": "int16", "PCM_16": "int16", "PCM_24": "int32", "PCM_32": "int32",
                         "FLOAT": "float32", "DOUBLE": "float64", "ULAW": "int16", "ALAW": "int16"}


# Largest magnitude a sample format can hold, as soundfile's float reading returns it.
FULL_SCALE = {"ULAW": 32124 / 32768, "ALAW": 32256 / 32768, "PCM_U8": 127 / 128, "PCM_S8": 127 / 128}


FULL_SCALE_DEFAULT = 32767 / 32768


@dataclass
class Audio:
    path: str | None = None  # absolute path that goes into the manifest
    frames: int = 0
    sample_rate: int = 0
    channels: int = 0
    subtype: str = ""
    problem: tuple[str, str] | None = None  # (reason, detail)
    materialized: bool = False  # written under the audio directory
    clipped: float | None = None  # check(): fraction of full-scale samples in the worst channel
    rms_dbfs: float | None = None  # check(): RMS of the channel mix, dB full scale


def resolve_path(location: str, root: Path | None) -> str:
    return os.path.abspath(os.path.join(root, location) if root is not None else location)


def is_url(location: str | None) -> bool:
    return bool(location) and re.match(r"^[a-z][a-z0-9+.-]*://", location, re.I) is not None


def probe(location: str, root: Path | None = None) -> Audio:
    if is_url(location):
        return Audio(problem=("missing_audio", f"{location}: URLs are not supported; download the audio first"))
    path = resolve_path(location, root)
    if not os.path.isfile(path):
        hint = " (Kaldi ark offsets are not supported)" if re.search(r"\.ark:\d+$", location) else ""
        return Audio(path=path, problem=("missing_audio", f"{path} does not exist{hint}"))
    try:
        frames, rate, channels, subtype = header_of(path)
    except Exception as err:  # noqa: BLE001 -- soundfile raises several types
        return Audio(path=path, problem=("unreadable_audio", f"{path}: {one_line(err)}"))
    return Audio(path=path, frames=frames, sample_rate=rate, channels=channels, subtype=subtype)


def header_of(path: str | io.BytesIO) -> tuple[int, int, int, str]:
    """(frames, sample rate, channels, subtype) from soundfile, the reader FunASR falls back to here."""
    import soundfile as sf

    info = sf.info(path)
    if info.samplerate <= 0:
        raise ValueError(f"invalid sample rate {info.samplerate}")
    return int(info.frames), int(info.samplerate), int(info.channels), str(info.subtype)


def run_pipe(command: str) -> tuple[bytes | None, tuple[str, str] | None]:
    try:
        proc = subprocess.run(command, shell=True, capture_output=True, timeout=600)  # noqa: S602 -- opted in
    except subprocess.TimeoutExpired:
        return None, ("pipe_failed", f"'{command}' ran longer than 600 s")
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        return None, ("pipe_failed", f"'{command}' exited with {proc.returncode}" + (f": {err[-1]}" if err else ""))
    return proc.stdout, None


FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # the only sample formats that can hold NaN or infinity


def nonfinite_samples(opener: Callable[[], Any], subtype: str) -> int:
    """How many samples of a float file are NaN or infinite (0 for integer formats, unread)."""
    if subtype not in FLOAT_SUBTYPES:
        return 0
    import numpy as np
    import soundfile as sf

    bad = 0
    with sf.SoundFile(opener()) as f:
        for block in f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
            bad += int(np.count_nonzero(~np.isfinite(block)))
    return bad


def nearest_sample(seconds: Fraction, rate: int) -> int:
    """The sample index nearest to `seconds` (halves round up), exactly."""
    return math.floor(seconds * rate + Fraction(1, 2))


def audio_name(key: str) -> str:
    """File name of an utterance's audio under the audio directory: the key, sanitized, plus 8 hex
    digits of its SHA-1 (keys are unique, so two keys that sanitize alike still differ)."""
    safe = re.sub(r"[^\w.-]+", "_", key).strip("._")[:80] or "utt"
    return f"{safe}-{hashlib.sha1(key.encode('utf-8')).hexdigest()[:8]}.wav"


def write_wav_atomic(path: Path, samples: Any, rate: int, subtype: str) -> None:
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(tmp, samples, rate, subtype=subtype, format="WAV")


def examine(location: str, content: bool) -> Audio:
    """check()'s view of one file: its header and, with `content`, its samples' clipping and level."""
    audio = probe(location)
    if audio.problem is not None or not content or audio.frames == 0:
        return audio
    import numpy as np
    import soundfile as sf

    level = FULL_SCALE.get(audio.subtype, FULL_SCALE_DEFAULT) - 1e-6
    clipped = np.zeros(audio.channels, dtype=np.int64)
    energy, count, nonfinite = 0.0, 0, 0
    try:
        with sf.SoundFile(audio.path) as f:
            for block in f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                nonfinite += int(np.count_nonzero(~np.isfinite(block)))
                clipped += np.count_nonzero(np.abs(block) >= level, axis=0)
                mix = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1)  # what FunASR trains on
                energy += float(np.dot(mix, mix))
                count += len(block)
    except Exception as err:  # noqa: BLE001 -- soundfile raises several types
        audio.problem = ("corrupt_audio", f"the header reads, the samples do not: {audio.path}: {one_line(err)}")
        return audio
    if count < audio.frames:
        audio.problem = ("corrupt_audio", f"read {count} of the {audio.frames} samples the header announces: {audio.path}")
        return audio
    if nonfinite:  # never "silence": the level of such a file is NaN
        audio.problem = ("nonfinite_audio", f"{nonfinite} of {count * audio.channels} samples are NaN or infinite: "
                                            f"{audio.path}")
        return audio
    audio.clipped = float(clipped.max()) / count
    rms = math.sqrt(energy / count)
    audio.rms_dbfs = 20 * math.log10(rms) if rms > 0 else -math.inf
    return audio
