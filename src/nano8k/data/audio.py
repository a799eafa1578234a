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
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from nano8k.errors import one_line
from nano8k.files import atomic_path

# check()'s audio-content thresholds (notes: FunASR trains on such audio as it is).
CLIP_FRACTION = 0.001  # clipped: at least 0.1 % of the samples of some channel at full scale
SILENCE_DBFS = -60.0  # silent: RMS of the channel mix FunASR computes below -60 dB full scale

# Files with a header soundfile reads (FunASR's loader here: no torchaudio, no ffmpeg).
HEADER_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".sph"})
# Headerless telephony files (Asterisk, FreeSWITCH): suffix -> (soundfile subtype, sample rate;
# None: the user declares it). One channel; 16-bit linear is little-endian (Asterisk's host order).
RAW_FORMATS: dict[str, tuple[str, int | None]] = {
    ".gsm": ("GSM610", 8000),
    ".ulaw": ("ULAW", 8000), ".ul": ("ULAW", 8000), ".mu": ("ULAW", 8000), ".pcmu": ("ULAW", 8000),
    ".alaw": ("ALAW", 8000), ".al": ("ALAW", 8000), ".pcma": ("ALAW", 8000),
    ".sln": ("PCM_16", 8000), ".slin": ("PCM_16", 8000), ".sln12": ("PCM_16", 12000),
    ".sln16": ("PCM_16", 16000), ".sln24": ("PCM_16", 24000), ".sln32": ("PCM_16", 32000),
    ".sln44": ("PCM_16", 44100), ".sln48": ("PCM_16", 48000), ".sln96": ("PCM_16", 96000),
    ".sln192": ("PCM_16", 192000),
    ".raw": ("PCM_16", None),
}
# Formats libsndfile does not read, decoded by sox where it is installed: suffix -> sox type.
SOX_FORMATS = {".amr": "amr-nb", ".awb": "amr-wb", ".vox": "vox"}
AUDIO_SUFFIXES = HEADER_SUFFIXES | frozenset(RAW_FORMATS) | frozenset(SOX_FORMATS)

# Sample formats a WAV file holds as they are (decoded samples come back bit-exact when rewritten).
LOSSLESS_WAV_SUBTYPES = {"PCM_U8": "int16", "PCM_16": "int16", "PCM_24": "int32", "PCM_32": "int32",
                         "FLOAT": "float32", "DOUBLE": "float64", "ULAW": "int16", "ALAW": "int16"}
# Largest magnitude a sample format can hold, as soundfile's float reading returns it.
FULL_SCALE = {"ULAW": 32124 / 32768, "ALAW": 32256 / 32768, "PCM_U8": 127 / 128, "PCM_S8": 127 / 128}
FULL_SCALE_DEFAULT = 32767 / 32768
BLOCK = 1 << 16  # samples read at a time


class AudioProblem(Exception):
    """Audio that cannot be used: `reason` (a reject reason) and a one-line `detail` naming the file."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


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
    headerless: bool = False  # a raw telephony file (or one sox decodes): FunASR's loader cannot read it as it is


def resolve_path(location: str, root: Path | str | None) -> str:
    """The one path rule: a relative `location` is taken from `root` (the input's directory, or
    --audio-root), an absolute one as it is; `~` is expanded."""
    location = os.path.expanduser(location)
    return os.path.abspath(os.path.join(root, location) if root is not None else location)


def is_url(location: str | None) -> bool:
    return bool(location) and re.match(r"^[a-z][a-z0-9+.-]*://", location, re.I) is not None


def is_audio_name(path: str | Path) -> bool:
    """Whether the file name says audio nano8k reads (a header format, raw telephony, or sox's)."""
    return os.path.splitext(str(path))[1].lower() in AUDIO_SUFFIXES


def needs_conversion(path: str) -> bool:
    """A file FunASR's loader cannot read as it is (headerless but for .gsm, which libsndfile knows
    by name; or a format only sox reads): `prepare` writes it as WAV."""
    suffix = os.path.splitext(path)[1].lower()
    return (suffix in RAW_FORMATS and suffix != ".gsm") or suffix in SOX_FORMATS


def _raw_args(path: str, raw_rate: int | None) -> dict:
    suffix = os.path.splitext(path)[1].lower()
    subtype, rate = RAW_FORMATS[suffix]
    rate = rate or raw_rate
    if not rate:
        raise AudioProblem("unreadable_audio", f"{path}: headerless 16-bit PCM ({suffix}) has no sample rate; declare "
                                               "it (--raw-rate / raw_rate)")
    return {"samplerate": int(rate), "channels": 1, "format": "RAW", "subtype": subtype, "endian": "LITTLE"}


def _sox_decoded(path: str) -> io.BytesIO:
    """A file only sox reads, decoded to an in-memory WAV (16-bit PCM at the file's own rate)."""
    kind = SOX_FORMATS[os.path.splitext(path)[1].lower()]
    try:
        proc = subprocess.run(["sox", "-q", "-V1", "-t", kind, path, "-t", "wav", "-e", "signed-integer", "-b", "16",
                               "-"], capture_output=True, timeout=600)
    except FileNotFoundError:
        raise AudioProblem("unreadable_audio", f"{path}: {kind} audio needs sox, which is not on PATH "
                                               "(apt-get install sox libsox-fmt-all)") from None
    except subprocess.TimeoutExpired:
        raise AudioProblem("unreadable_audio", f"{path}: sox ran longer than 600 s") from None
    if proc.returncode != 0 or not proc.stdout:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioProblem("unreadable_audio", f"{path}: sox cannot decode it as {kind}"
                                               + (f" ({err[-1]})" if err else "; is libsox-fmt-all installed?"))
    return io.BytesIO(proc.stdout)


def open_audio(source: str | bytes | io.BytesIO, raw_rate: int | None = None, as_funasr: bool = False) -> Any:
    """An open soundfile.SoundFile of a path (any format of AUDIO_SUFFIXES) or of in-memory bytes
    (a pipe's output). `as_funasr`: open it as FunASR's loader does (soundfile, no declared format),
    so what check reports is what training meets. Raises AudioProblem."""
    import soundfile as sf

    label = "the command's output" if isinstance(source, (bytes, io.BytesIO)) else str(source)
    try:
        if isinstance(source, bytes):
            return sf.SoundFile(io.BytesIO(source))
        if isinstance(source, io.BytesIO):
            return sf.SoundFile(source)
        suffix = os.path.splitext(source)[1].lower()
        if as_funasr and needs_conversion(source):
            what = f"headerless {RAW_FORMATS[suffix][0]}" if suffix in RAW_FORMATS else f"{SOX_FORMATS[suffix]} audio"
            raise AudioProblem("unreadable_audio", f"{source}: {what}: FunASR's loader (soundfile) cannot read it; "
                                                   "`nano8k data prepare` writes it as WAV")
        if suffix in RAW_FORMATS:
            return sf.SoundFile(source, **_raw_args(source, raw_rate))
        if suffix in SOX_FORMATS:
            return sf.SoundFile(_sox_decoded(source))
        return sf.SoundFile(source)
    except AudioProblem:
        raise
    except Exception as err:  # noqa: BLE001 -- soundfile raises several types
        raise AudioProblem("unreadable_audio", f"{label}: {one_line(err)}") from None


def header_of(source: str | bytes | io.BytesIO, raw_rate: int | None = None,
              as_funasr: bool = False) -> tuple[int, int, int, str]:
    """(frames, sample rate, channels, subtype). Raises AudioProblem."""
    with open_audio(source, raw_rate, as_funasr) as f:
        if f.samplerate <= 0:
            raise AudioProblem("unreadable_audio", f"{source}: invalid sample rate {f.samplerate}")
        return int(f.frames), int(f.samplerate), int(f.channels), str(f.subtype)


def not_a_file(path: Path | str) -> str | None:
    """What a path that is not a regular file is ("does not exist", "is a FIFO", ...), told by
    stat alone (opening a FIFO waits for a writer forever); None for a regular file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    for test, what in ((stat.S_ISREG, None), (stat.S_ISDIR, "is a directory"), (stat.S_ISFIFO, "is a FIFO"),
                       (stat.S_ISCHR, "is a character device"), (stat.S_ISBLK, "is a block device"),
                       (stat.S_ISSOCK, "is a socket")):
        if test(mode):
            return what
    return "is not a regular file"


def probe(location: str, root: Path | str | None = None, raw_rate: int | None = None, as_funasr: bool = False) -> Audio:
    """The header of the file at `location` (resolved against `root`), or its problem."""
    if is_url(location):
        return Audio(problem=("missing_audio", f"{location}: URLs are not supported; download the audio first"))
    path = resolve_path(location, root)
    what = not_a_file(path)
    if what is not None:
        hint = " (Kaldi ark offsets are not supported)" if re.search(r"\.ark:\d+$", location) else ""
        return Audio(path=path, problem=("missing_audio", f"{path} {what}{hint}"))
    try:
        frames, rate, channels, subtype = header_of(path, raw_rate, as_funasr)
    except AudioProblem as err:
        return Audio(path=path, problem=(err.reason, err.detail))
    return Audio(path=path, frames=frames, sample_rate=rate, channels=channels, subtype=subtype,
                 headerless=needs_conversion(path))


def blocks(f: Any, dtype: str = "float32") -> Iterator[Any]:
    """The samples of an open SoundFile, frames x channels, BLOCK at a time (seekable or not: a raw
    GSM file or a pipe's output is not, and soundfile's own blocks() refuses those)."""
    while True:
        block = f.read(BLOCK, dtype=dtype, always_2d=True)
        if not len(block):
            return
        yield block


def load(source: str | bytes | io.BytesIO, raw_rate: int | None = None, start: int = 0, stop: int | None = None,
         channel: int | None = None, dtype: str = "float32", label: str | None = None) -> tuple[Any, int]:
    """(samples frames x channels, sample rate) of a file or in-memory audio: samples [start, stop),
    one channel when `channel` is given (of a multi-channel file; a mono file is kept), in `dtype`.
    Raises AudioProblem (naming `label`, by default the path): unreadable, corrupt (fewer samples
    than the header says), no such channel, non-finite samples."""
    import numpy as np

    if label is None:
        label = "the command's output" if isinstance(source, (bytes, io.BytesIO)) else str(source)
    with open_audio(source, raw_rate) as f:
        rate, total, channels = int(f.samplerate), int(f.frames), int(f.channels)
        if channel is not None and channel >= channels and channels > 1:
            raise AudioProblem("no_such_channel", f"channel {channel} of a {channels}-channel file: {label}")
        stop = total if stop is None else min(stop, total)
        count = max(stop - start, 0)
        try:
            if start:
                if f.seekable():
                    f.seek(start)
                else:
                    f.read(start, dtype=dtype, always_2d=True)
            samples = f.read(count, dtype=dtype, always_2d=True)
        except Exception as err:  # noqa: BLE001 -- soundfile raises several types
            raise AudioProblem("corrupt_audio", f"{label}: {one_line(err)}") from None
    if len(samples) < count:
        raise AudioProblem("corrupt_audio", f"{label}: read {len(samples)} of {count} samples from sample {start}")
    if channel is not None and channels > 1:
        samples = samples[:, [channel]]
    if samples.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        if bad:
            raise AudioProblem("nonfinite_audio", f"{bad} samples are NaN or infinite: {label}")
    return samples, rate


def run_pipe(command: str) -> bytes:
    """The output of a wav.scp pipe command (`cmd |`; run only when the user allows pipes).
    Raises AudioProblem("pipe_failed")."""
    try:
        proc = subprocess.run(command, shell=True, capture_output=True, timeout=600)  # noqa: S602 -- opted in
    except subprocess.TimeoutExpired:
        raise AudioProblem("pipe_failed", f"'{command}' ran longer than 600 s") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioProblem("pipe_failed", f"'{command}' exited with {proc.returncode}" + (f": {err[-1]}" if err else ""))
    return proc.stdout


FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # the only sample formats that can hold NaN or infinity


def nonfinite_samples(opener: Callable[[], Any], subtype: str) -> int:
    """How many samples of a float file are NaN or infinite (0 for integer formats, unread).
    `opener` returns an open SoundFile."""
    if subtype not in FLOAT_SUBTYPES:
        return 0
    import numpy as np

    with opener() as f:
        return sum(int(np.count_nonzero(~np.isfinite(block))) for block in blocks(f))


def nearest_sample(seconds: Fraction, rate: int) -> int:
    """The sample index nearest to `seconds` (halves round up), exactly."""
    return math.floor(seconds * rate + Fraction(1, 2))


# a segment ending at most this far past its recording is cut at the recording's end (Kaldi's
# extract-segments --max-overshoot default); further is refused
SEGMENT_TOLERANCE = 0.5


def segment_samples(segment: tuple[Fraction, Fraction], total: int, rate: int, recording: str, label: str,
                    tolerance: float = SEGMENT_TOLERANCE) -> tuple[int, int]:
    """The one segment rule (prepare, check and decode): (start, stop) samples of a segment of a
    recording of `total` samples; an end past it by at most `tolerance` seconds is cut there.
    A segment that starts at or after the end, or ends further past it: AudioProblem."""
    start, stop = (nearest_sample(Fraction(t), rate) for t in segment)
    length = f"recording {recording} is {total / rate:.3f} s ({total} samples at {rate} Hz): {label}"
    if start >= total:
        raise AudioProblem("segment_out_of_range", f"starts at {float(segment[0]):g} s; the {length}")
    if stop - total > tolerance * rate:
        raise AudioProblem("segment_out_of_range", f"ends at {float(segment[1]):g} s, {(stop - total) / rate:.3f} s "
                                                   f"past the end (tolerance {tolerance:g} s); the {length}")
    return start, min(stop, total)


def audio_name(key: str) -> str:
    """File name of an utterance's audio under the audio directory: the key, sanitized, plus 8 hex
    digits of its SHA-1 (keys are unique, so two keys that sanitize alike still differ)."""
    safe = re.sub(r"[^\w.-]+", "_", key).strip("._")[:80] or "utt"
    return f"{safe}-{hashlib.sha1(key.encode('utf-8')).hexdigest()[:8]}.wav"


def write_wav_atomic(path: Path, samples: Any, rate: int, subtype: str) -> None:
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(tmp, samples, rate, subtype=subtype, format="WAV")


def examine(location: str, content: bool, root: Path | str | None = None) -> Audio:
    """check()'s view of one file, as FunASR's loader opens it: its header and, with `content`, its
    samples' clipping and level."""
    audio = probe(location, root, as_funasr=True)
    if audio.problem is not None or not content or audio.frames == 0:
        return audio
    import numpy as np

    level = FULL_SCALE.get(audio.subtype, FULL_SCALE_DEFAULT) - 1e-6
    clipped = np.zeros(audio.channels, dtype=np.int64)
    energy, count, nonfinite = 0.0, 0, 0
    try:
        with open_audio(audio.path, as_funasr=True) as f:
            for block in blocks(f):
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
