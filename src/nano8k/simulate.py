"""Telephone-channel simulation: turn a clean corpus (any sample rate) into 8 kHz telephone speech.

`simulate_corpus(source, out_dir, settings, workers, seed, output_format)` reads what `nano8k data
prepare` reads (Kaldi directory with optional segments/utt2spk, source/target JSONL, CSV/TSV, folder;
through :mod:`nano8k.data`'s own readers) or a Nano JSONL, passes every utterance through
`simulate_utterance` and writes ``out_dir/wav/<name>.wav`` plus a manifest in the input's format
(Kaldi, JSONL or Nano), a ``rejects.jsonl`` and a report. `simulate_utterance(samples, sample_rate,
settings, seed)` is the pure per-utterance function; `PRESETS` holds the named settings
(`resolve_settings` applies a preset, a YAML file and KEY=VALUE overrides).

Audio is written as 8 kHz G.711 WAV (one byte a sample: the exact codes) when the output is 8 kHz
mu-law/A-law, else as 16-bit PCM; what is written is exactly what `simulate_utterance` returns.

The channel, in the order a call meets it (every step optional except the rate change)::

    speech (any rate, channels averaged)
      1. + background noise   acoustic noise at the talker's microphone: a random crop of a random
                              file of `noise_dir` (soxr-resampled to the speech's rate, tiled if
                              short), at an SNR drawn from `noise_snr_db`, with probability `noise_prob`
      2. resample to 8 kHz    libsoxr HQ (nano8k.channel.resample)
      3. band-pass            `band` (default 300-3400 Hz): Butterworth, zero phase
                              (nano8k.channel.bandpass), the handset + loop + G.712 filtering
      4. level                active-speech level drawn from `level_db` dBFS (peak kept <= `peak_limit`)
      5. + line noise         white noise of the analogue loop, SNR drawn from `line_snr_db`
      6. + mains hum          50 or 60 Hz (drawn from `hum_hz`) plus its 2nd harmonic at
                              `hum_harmonic` x the amplitude, random phases, SNR drawn from `hum_snr_db`
      7. codec                G.711 mu-law / A-law on real 8-bit codes (nano8k.channel, bit-exact
                              with the ITU-T reference), GSM 06.10 or AMR-NB (through sox), or none
      8. packet loss          VoIP: 20 ms frames lost by a two-state (Gilbert) model with a loss rate
                              drawn from `loss_rate` and mean burst `loss_burst` frames; lost frames
                              are silence (`zero`, no concealment) or the last frame repeated at -6 dB
                              per lost frame (`repeat`)
      9. output rate          8000 Hz, or 16000 Hz (soxr HQ upsampling) for the upsampling recipe

Line noise and hum enter after the band-pass and before the codec: they are picked up on the
analogue loop between the handset and the exchange's A/D converter, so they are quantized by the
codec like the speech (a 300 Hz high-pass in front of them would remove the 50 Hz hum that real
lines carry). Background noise enters first, at the microphone, so the channel filters it like the
speech. Packet loss hits the coded stream, after the codec.

**SNR** everywhere is the *active-speech* power of the signal the noise is added to, over the
noise's mean power across the whole utterance, in dB. Active-speech power is the mean power of the
20 ms frames whose power is within 40 dB of the loudest frame (`active_power`), so leading and
trailing silence does not lower the reference (the seed measured over the whole file). The noise
realization is scaled to exactly the drawn SNR: the achieved SNR at the point of mixing is the
drawn one (background noise: at the source rate, before the band-pass; line noise and hum: on the
band-passed, levelled speech, before the codec adds its own quantization noise).

**Randomness**: every utterance draws from its own generator, seeded from the global seed and the
utterance key (`utterance_seed`: sha256 of both), so an utterance's output depends only on
(settings, seed, key, audio): not on the number of workers, on the order of the input or on the
other utterances. Each step has its own stream, so switching one step off leaves the others'
draws unchanged (A/B comparisons isolate one effect).

Every output line records what was applied in a `channel` object (Kaldi output: ``utt2channel``)::

    {"codec": "mulaw", "level_db": -26.0, "snr_db": 21.4, "hum_hz": 50.0, "hum_snr_db": 31.2,
     "loss_rate": 0.032, "noise_file": "cafe/03.wav", "noise_snr_db": 9.8, "out_rate": 8000}

(None for a step that was not applied; `loss_rate` is the fraction of frames actually lost.)

One bad input line or file never stops a run: it is reported (file, line, key, reason) in the
report and in ``rejects.jsonl``, and the rest is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import math
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nano8k import channel, data
from nano8k.data import Entry, Problem
from nano8k.data.problems import RejectCounts
from nano8k.data.sources import check_apart
from nano8k.data.manifest import with_audio
from nano8k.errors import UserError, one_line
from nano8k.files import read_yaml

__all__ = [
    "CODECS",
    "PRESETS",
    "SimulationSettings",
    "SimulateReport",
    "resolve_settings",
    "simulate_utterance",
    "simulate_corpus",
    "utterance_seed",
    "active_power",
    "scale_to_snr",
    "hum",
    "loss_mask",
    "output_names",
    "noise_files",
    "sox_formats",
    "require_codec",
]

CHANNEL_RATE = 8000  # every channel step runs at the narrow-band rate
OUT_RATES = (8000, 16000)
CODECS = ("mulaw", "alaw", "gsm", "amr-nb", "none")
SOX_CODECS = {"gsm": "gsm", "amr-nb": "amr-nb"}  # codec -> sox file type
# Samples the decoded stream lags the input (measured by cross-correlation; tests check it): AMR-NB
# has a 5 ms look-ahead (3GPP TS 26.090), GSM 06.10 none. Removed so the output stays aligned.
SOX_CODEC_DELAY = {"gsm": 0, "amr-nb": 40}
LOSS_FILLS = ("zero", "repeat")
ACTIVE_FRAME_MS = 20
ACTIVE_FLOOR_DB = 40.0
MIN_SECONDS = 0.025  # one 25 ms fbank window: shorter audio gives speech_length 0
OUTPUT_FORMATS = ("kaldi", "jsonl", "nano", "csv", "tsv", "folder")

# Reasons an utterance is not written (all have effect "reject"); see data.PREPARE_REASONS too.
SIMULATE_REASONS: dict[str, str] = {
    "malformed_line": "the line cannot be parsed (bad JSON, not an object, no messages, a field of the wrong type)",
    "duplicate_key": "the key was already used by an earlier line (the first one is kept)",
    "no_audio": "no audio (no wav.scp entry / no source field / no <|startofspeech|>!path in the user turn)",
    "no_text": "audio without a transcript",
    "multiple_audio": "a Nano line with more than one audio file (only single-audio lines are simulated)",
    "bad_key": "the key has whitespace, which a Kaldi output cannot hold",
    "missing_audio": "the audio file does not exist (or is a URL)",
    "unreadable_audio": "soundfile cannot read the audio",
    "nonfinite_audio": "NaN or infinite samples: no level, no SNR, and nothing FunASR can compute features from",
    "pipe_failed": "the wav.scp command failed or did not write readable audio",
    "audio_too_short": "shorter than one 25 ms window",
    "silent_audio": "the audio is digital silence: no speech level to set an SNR against",
    "codec_failed": "sox failed to encode or decode the utterance",
    "write_failed": "the output audio could not be written",
    "segment_out_of_range": "a Kaldi segment outside its recording (beyond data.SEGMENT_TOLERANCE)",
    "no_such_channel": "the channel the entry names is not in the file",
    "simulation_failed": "an unexpected error while simulating (a bug: please report it)",
}

Range = tuple[float, float]


# ---------------------------------------------------------------------------------------------
# Settings and presets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationSettings:
    """What the channel does. Ranges are (low, high) and drawn uniformly per utterance; a range of
    None switches the step off; `*_prob` is the probability that an utterance gets the step."""

    out_rate: int = 8000  # 8000, or 16000 for the upsampling recipe
    band: Range | None = (300.0, 3400.0)  # band-pass edges in Hz (None: no band-pass)
    filter_order: int = 4  # Butterworth order per edge, applied forward and backward
    level_db: Range | None = (-26.0, -26.0)  # active-speech level before the codec, dBFS (None: keep)
    peak_limit: float = 0.95  # the level gain never takes the speech peak above this
    codec: str = "mulaw"  # mulaw, alaw, gsm, amr-nb, none
    amr_mode: int = 7  # AMR-NB mode for sox -C: 0..7 = 4.75 .. 12.2 kbit/s
    line_snr_db: Range | None = None
    line_noise_prob: float = 1.0
    hum_hz: tuple[float, ...] = (50.0, 60.0)  # mains frequencies to draw from
    hum_snr_db: Range | None = None
    hum_prob: float = 1.0
    hum_harmonic: float = 0.3  # 2nd-harmonic amplitude relative to the fundamental
    loss_rate: Range | None = None  # fraction of 20 ms frames lost
    loss_prob: float = 1.0
    loss_burst: float = 2.0  # mean burst length in frames (1: independent losses)
    loss_frame_ms: float = 20.0
    loss_fill: str = "zero"  # zero (no concealment) or repeat
    noise_dir: str | None = None  # folder of background-noise audio (searched recursively)
    noise_snr_db: Range = (5.0, 20.0)
    noise_prob: float = 1.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # numbers from YAML or the command line
            kind = type(f.default)
            value = getattr(self, f.name)
            if kind in (int, float) and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
                try:
                    object.__setattr__(self, f.name, kind(value))
                except (TypeError, ValueError):
                    raise UserError(f"{f.name} must be a number, got {value!r}") from None
            elif kind is str and not isinstance(value, str):
                raise UserError(f"{f.name} must be a string, got {value!r}")
        for name in ("band", "level_db", "line_snr_db", "hum_snr_db", "loss_rate", "noise_snr_db"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _as_range(name, value))
        if isinstance(self.hum_hz, (int, float)):
            object.__setattr__(self, "hum_hz", (float(self.hum_hz),))
        else:
            object.__setattr__(self, "hum_hz", tuple(float(f) for f in self.hum_hz))
        if self.noise_dir is not None:
            object.__setattr__(self, "noise_dir", str(self.noise_dir))

    def validate(self) -> SimulationSettings:
        """Raise UserError (one line) for a value the channel cannot use; return self."""
        nyq = CHANNEL_RATE / 2
        problems = []
        if self.out_rate not in OUT_RATES:
            problems.append(f"out_rate must be 8000 or 16000, got {self.out_rate}")
        if self.band is not None and not 0 < self.band[0] < self.band[1] < nyq:
            problems.append(f"band must satisfy 0 < low < high < {nyq:g} Hz, got {list(self.band)}")
        if not 1 <= self.filter_order <= 12:
            problems.append(f"filter_order must be 1..12, got {self.filter_order}")
        if self.codec not in CODECS:
            problems.append(f"codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if not 0 <= self.amr_mode <= 7:
            problems.append(f"amr_mode must be 0..7, got {self.amr_mode}")
        if self.level_db is not None and self.level_db[1] > 0:
            problems.append(f"level_db must be <= 0 dBFS, got {list(self.level_db)}")
        if not 0 < self.peak_limit <= 1:
            problems.append(f"peak_limit must be in (0, 1], got {self.peak_limit}")
        for name in ("line_noise_prob", "hum_prob", "loss_prob", "noise_prob"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.hum_hz or any(not 0 < 2 * f < nyq for f in self.hum_hz):
            problems.append(f"hum_hz must be frequencies with 0 < 2f < {nyq:g} Hz, got {list(self.hum_hz)}")
        if self.loss_rate is not None and not 0 <= self.loss_rate[0] <= self.loss_rate[1] < 1:
            problems.append(f"loss_rate must be within [0, 1), got {list(self.loss_rate)}")
        if self.loss_burst < 1:
            problems.append(f"loss_burst must be >= 1 frame, got {self.loss_burst}")
        if not 1 <= self.loss_frame_ms <= 1000:
            problems.append(f"loss_frame_ms must be 1..1000, got {self.loss_frame_ms}")
        if self.loss_fill not in LOSS_FILLS:
            problems.append(f"loss_fill must be one of {', '.join(LOSS_FILLS)}, got {self.loss_fill!r}")
        if self.noise_dir is not None and not Path(self.noise_dir).is_dir():
            problems.append(f"noise_dir {self.noise_dir}: no such directory")
        if problems:
            raise UserError("; ".join(problems))
        return self

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> SimulationSettings:
        return dataclasses.replace(self, **changes)


def _as_range(name: str, value: Any) -> Range:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value), float(value))
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number or a [low, high] pair, got {value!r}") from None
    if low > high:
        raise UserError(f"{name}: low {low:g} > high {high:g}")
    return (low, high)


PRESETS: dict[str, SimulationSettings] = {
    # G.711 at a nominal level, nothing else: the channel alone.
    "clean_g711": SimulationSettings(),
    "clean_g711a": SimulationSettings(codec="alaw"),
    # A noisy analogue line: level spread, loop noise, hum on half of the calls, background noise
    # (when a noise folder is given) on most.
    "noisy_call": SimulationSettings(
        level_db=(-32.0, -20.0), line_snr_db=(15.0, 30.0), hum_snr_db=(20.0, 35.0), hum_prob=0.5,
        noise_snr_db=(5.0, 20.0), noise_prob=0.8,
    ),
    # G.711 over a lossy VoIP path, no concealment.
    "lossy_voip": SimulationSettings(
        level_db=(-30.0, -22.0), line_snr_db=(30.0, 45.0), loss_rate=(0.01, 0.05), loss_burst=2.0,
    ),
    # Mobile calls (sox needed).
    "gsm": SimulationSettings(codec="gsm", level_db=(-30.0, -22.0), line_snr_db=(25.0, 40.0)),
    "amr_nb": SimulationSettings(codec="amr-nb", amr_mode=7, level_db=(-30.0, -22.0), line_snr_db=(25.0, 40.0)),
    # The seed's intended chain with its bugs fixed: 16 kHz output, line noise 15-25 dB with hum
    # at 20 % of the noise power (+7 dB), loss on half of the files (1-5 %, 1-3 frame bursts).
    "seed_like": SimulationSettings(
        out_rate=16000, level_db=(-26.0, -20.0), line_snr_db=(15.0, 25.0), hum_hz=(50.0,),
        hum_snr_db=(22.0, 32.0), loss_rate=(0.01, 0.05), loss_prob=0.5, loss_burst=2.0,
    ),
}


def resolve_settings(
    preset: str | Path = "clean_g711",
    *,
    codec: str | None = None,
    out_rate: int | None = None,
    noise_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> SimulationSettings:
    """A preset name (see PRESETS) or a YAML file of SimulationSettings fields, then the explicit
    options, then `KEY=VALUE` overrides (ranges as `15:25`, `15,25` or `[15, 25]`; `none` = off).
    Validated; errors are UserErrors naming the key."""
    settings = _load_preset(preset)
    changes: dict[str, Any] = {}
    if codec is not None:
        changes["codec"] = codec
    if out_rate is not None:
        changes["out_rate"] = int(out_rate)
    if noise_dir is not None:
        changes["noise_dir"] = str(noise_dir)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"override {item!r}: expected KEY=VALUE (e.g. line_snr_db=15:25)")
        changes[key] = _parse_value(key, text.strip())
    return _with_changes(settings, changes, "override").validate()


def _load_preset(preset: str | Path) -> SimulationSettings:
    name = str(preset)
    if name in PRESETS:
        return PRESETS[name]
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise UserError(f"{path}: preset file not found")
        data = read_yaml(path, "preset file")
        base = data.pop("preset", None)
        settings = _load_preset(base) if base is not None else SimulationSettings()
        return _with_changes(settings, data, str(path))
    raise UserError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)} or give a YAML file")


def _with_changes(settings: SimulationSettings, changes: Mapping[str, Any], where: str) -> SimulationSettings:
    known = {f.name for f in dataclasses.fields(SimulationSettings)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise UserError(f"{where}: unknown setting {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    try:
        return dataclasses.replace(settings, **changes)
    except (TypeError, ValueError) as err:
        raise UserError(f"{where}: {err}") from None


_RANGE_FIELDS = {"band", "level_db", "line_snr_db", "hum_snr_db", "loss_rate", "noise_snr_db"}


def _parse_value(key: str, text: str) -> Any:
    low = text.lower()
    if low in ("none", "null", "off", "~", ""):
        return None
    if key in _RANGE_FIELDS or key == "hum_hz":
        parts = [p for p in re.split(r"[:,\s\[\]]+", text) if p]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise UserError(f"{key}={text}: expected numbers (a range as LOW:HIGH)") from None
        if key == "hum_hz":
            return tuple(values)
        if len(values) == 1:
            return (values[0], values[0])
        if len(values) != 2:
            raise UserError(f"{key}={text}: expected one number or LOW:HIGH")
        return tuple(values)
    default = next(f.default for f in dataclasses.fields(SimulationSettings) if f.name == key) \
        if key in {f.name for f in dataclasses.fields(SimulationSettings)} else None
    try:
        if isinstance(default, bool):
            return low in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise UserError(f"{key}={text}: expected a {type(default).__name__}") from None
    return text


# ---------------------------------------------------------------------------------------------
# Building blocks (public: tested on known signals)
# ---------------------------------------------------------------------------------------------


def utterance_seed(seed: int, key: str) -> int:
    """The per-utterance seed: a 128-bit integer from sha256(global seed, key)."""
    digest = hashlib.sha256(f"{int(seed)}\0{key}".encode()).digest()
    return int.from_bytes(digest[:16], "little")


def _streams(seed: int | np.random.SeedSequence, n: int) -> list[np.random.Generator]:
    """n independent generators for one utterance (one per channel step)."""
    if isinstance(seed, np.random.SeedSequence):
        entropy, base = seed.entropy, tuple(seed.spawn_key)
    else:
        entropy, base = int(seed), ()
    return [np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(*base, i))) for i in range(n)]


def active_power(x: np.ndarray, fs: int, floor_db: float = ACTIVE_FLOOR_DB, frame_ms: float = ACTIVE_FRAME_MS) -> float:
    """Mean power of the frames (`frame_ms`, no overlap) within `floor_db` of the loudest frame:
    the speech power an SNR refers to. Audio shorter than a frame: its mean power."""
    x = np.asarray(x, dtype=np.float64)
    hop = max(int(round(fs * frame_ms / 1000)), 1)
    n = len(x) // hop
    if n < 1:
        return float(np.mean(x**2)) if len(x) else 0.0
    frames = np.einsum("ij,ij->i", x[: n * hop].reshape(n, hop), x[: n * hop].reshape(n, hop)) / hop
    peak = frames.max()
    if peak <= 0:
        return 0.0
    return float(frames[frames >= peak * 10 ** (-floor_db / 10)].mean())


def scale_to_snr(noise: np.ndarray, speech_power: float, snr_db: float) -> np.ndarray:
    """`noise` scaled so that speech_power / mean(noise**2) is exactly `snr_db` (in dB)."""
    noise = np.asarray(noise, dtype=np.float64)
    power = float(np.mean(noise**2))
    if power <= 0:
        return np.zeros_like(noise)
    return noise * math.sqrt(speech_power / (power * 10 ** (snr_db / 10)))


def hum(n: int, fs: int, freq: float, harmonic: float = 0.3, phases: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Mains hum: a sine at `freq` plus its 2nd harmonic at `harmonic` x the amplitude (unit fundamental).
    An integer frequency repeats every fs / gcd(fs, freq) samples: one period is computed and tiled."""
    period = n
    if float(freq).is_integer() and float(fs).is_integer():
        period = min(n, int(fs) // math.gcd(int(fs), int(freq)))
    t = np.arange(period) / fs
    one = np.sin(2 * np.pi * freq * t + phases[0]) + harmonic * np.sin(4 * np.pi * freq * t + phases[1])
    return one if period == n else np.resize(one, n)


def loss_mask(n_frames: int, rate: float, burst: float, rng: np.random.Generator) -> np.ndarray:
    """Lost frames (bool) from a two-state Gilbert model: stationary loss probability `rate`, mean
    burst length `burst` frames (P(bad->good) = 1/burst, P(good->bad) = rate / (burst (1 - rate)))."""
    if n_frames <= 0 or rate <= 0:
        return np.zeros(max(n_frames, 0), dtype=bool)
    r = 1.0 / burst
    p = min(rate * r / (1.0 - rate), 1.0)
    u = rng.random(n_frames + 1)
    mask = np.empty(n_frames, dtype=bool)
    bad = bool(u[0] < rate)  # start in the stationary distribution
    for i in range(n_frames):
        bad = (u[i + 1] >= r) if bad else (u[i + 1] < p)
        mask[i] = bad
    return mask


def _apply_loss(y: np.ndarray, mask: np.ndarray, frame: int, fill: str, silence: float) -> np.ndarray:
    y = y.copy()
    for i in np.flatnonzero(mask):
        start, stop = i * frame, min((i + 1) * frame, len(y))
        if fill == "repeat" and i > 0:
            prev = y[(i - 1) * frame: i * frame]
            y[start:stop] = prev[: stop - start] * 0.5
        else:
            y[start:stop] = silence
    return y


# ---------------------------------------------------------------------------------------------
# sox codecs
# ---------------------------------------------------------------------------------------------


def sox_formats() -> frozenset[str] | None:
    """File types the `sox` on PATH supports (from `sox -h`), or None when there is no sox."""
    return _sox_formats(os.environ.get("PATH", ""))


@functools.lru_cache(maxsize=4)
def _sox_formats(path_env: str) -> frozenset[str] | None:
    exe = shutil.which("sox", path=path_env)
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-h"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"AUDIO FILE FORMATS:(.*)", out)
    return frozenset(m.group(1).split()) if m else frozenset()


def require_codec(codec: str) -> None:
    """UserError when `codec` needs a sox that is missing or lacks the format."""
    kind = SOX_CODECS.get(codec)
    if kind is None:
        return
    formats = sox_formats()
    if formats is None:
        raise UserError(f"codec {codec} needs sox, which is not on PATH: install it (Debian/Ubuntu: apt-get install "
                        "sox) or use codec mulaw, alaw or none")
    if kind not in formats:
        lib = "libopencore-amrnb" if codec == "amr-nb" else "libgsm"
        raise UserError(f"codec {codec}: this sox has no '{kind}' format (`sox -h` lists the formats); install a sox "
                        f"built with {lib} (Debian/Ubuntu's sox package has it) or use codec mulaw, alaw or none")


class _CodecError(Exception):
    pass


def _sox_codec(x: np.ndarray, codec: str, amr_mode: int) -> np.ndarray:
    """8 kHz float audio through the codec and back (two sox processes, pipes, no files)."""
    kind = SOX_CODECS[codec]
    delay = SOX_CODEC_DELAY[codec]
    pcm = np.concatenate([channel.float_to_pcm16(x), np.zeros(delay, np.int16)]).astype("<i2").tobytes()
    raw = ["-t", "raw", "-r", str(CHANNEL_RATE), "-L", "-e", "signed-integer", "-b", "16", "-c", "1"]
    encode = ["sox", "-q", "-V1", *raw, "-", "-t", kind, *(["-C", str(amr_mode)] if codec == "amr-nb" else []), "-"]
    decode = ["sox", "-q", "-V1", "-t", kind, "-", *raw, "-"]
    coded = _run_sox(encode, pcm)
    back = np.frombuffer(_run_sox(decode, coded), dtype="<i2")
    back = back[delay:delay + len(x)]  # time-aligned with the input
    out = np.zeros(len(x), dtype=np.float64)
    out[:len(back)] = back / 32768.0
    return out


def _run_sox(cmd: list[str], data: bytes) -> bytes:
    try:
        proc = subprocess.run(cmd, input=data, capture_output=True, timeout=600)
    except FileNotFoundError:
        raise UserError("sox is not on PATH (needed for codec gsm/amr-nb): apt-get install sox") from None
    except subprocess.TimeoutExpired:
        raise _CodecError(f"{' '.join(cmd[:1] + cmd[-3:])} ran longer than 600 s") from None
    if proc.returncode != 0 or not proc.stdout:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise _CodecError(f"sox exited with {proc.returncode}" + (f": {err[-1]}" if err else ""))
    return proc.stdout


# ---------------------------------------------------------------------------------------------
# Background noise
# ---------------------------------------------------------------------------------------------


def noise_files(noise_dir: str | Path) -> tuple[str, ...]:
    """Audio files under `noise_dir` (recursive; extensions soundfile reads), sorted by relative
    path: the list a noise index is drawn from. Unreadable or empty files are left out."""
    return _noise_files(str(Path(noise_dir).resolve()))


@functools.lru_cache(maxsize=8)
def _noise_files(root: str) -> tuple[str, ...]:
    import soundfile as sf

    exts = {"." + e.lower() for e in sf.available_formats()} | {".wav", ".flac", ".ogg", ".opus", ".mp3"}
    found = []
    for path in sorted(Path(root).rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
        if path.is_file() and path.suffix.lower() in exts:
            try:
                info = sf.info(str(path))
            except Exception:  # noqa: BLE001 -- any unreadable file is left out
                continue
            if info.frames > 0 and info.samplerate > 0:
                found.append(str(path))
    return tuple(found)


def noise_segment(path: str, n: int, fs: int, rng: np.random.Generator) -> np.ndarray:
    """n samples at fs from a random offset of the noise file (tiled when short)."""
    import soundfile as sf

    info = sf.info(path)
    need = int(math.ceil(n * info.samplerate / fs)) + 16
    if info.frames > need:
        start = int(rng.integers(0, info.frames - need + 1))
        seg, rate = sf.read(path, start=start, frames=need, dtype="float64", always_2d=True)
    else:
        seg, rate = sf.read(path, dtype="float64", always_2d=True)
        seg = np.roll(seg, -int(rng.integers(0, len(seg))), axis=0)
    seg = seg.mean(axis=1)
    if rate != fs:
        seg = channel.resample(seg, rate, fs)
    if len(seg) < n:
        seg = np.resize(seg, n)  # tiles
    return seg[:n]


# ---------------------------------------------------------------------------------------------
# One utterance
# ---------------------------------------------------------------------------------------------


class Rejected(Exception):
    """Audio the channel cannot take (silent, a codec failure): `reason` and `detail`."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


_SILENCE = {"mulaw": 0.0, "alaw": 8 / 32768.0}  # the codec's level closest to zero


def simulate_utterance(
    samples: np.ndarray,
    sample_rate: int,
    settings: SimulationSettings = PRESETS["clean_g711"],
    seed: int | np.random.SeedSequence = 0,
    noise: Sequence[str] | None = None,
) -> tuple[np.ndarray, int, dict]:
    """One utterance through the telephone channel (see the module docstring for the steps).

    `samples`: 1-D, or 2-D frames x channels (averaged), any dtype soundfile returns; `sample_rate`
    any positive rate. `seed`: the utterance's seed (`utterance_seed(global_seed, key)` in a
    corpus). `noise`: background-noise files to draw from (default: `noise_files(settings.noise_dir)`).
    Returns (float32 samples in [-1, 1) on the int16 grid: exactly what a PCM16 / G.711 WAV
    stores, the output rate, the applied parameters). Raises Rejected for silent audio.
    """
    x = np.asarray(samples)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.ndim != 1:
        raise ValueError(f"samples must be 1-D or frames x channels, got shape {np.shape(samples)}")
    if np.issubdtype(x.dtype, np.integer):
        x = x / float(np.iinfo(x.dtype).max + 1)
    x = x.astype(np.float32, copy=False)  # soxr is 3x faster on float32; 24 bits are plenty
    fs = int(sample_rate)
    if len(x) == 0:
        raise Rejected("audio_too_short", "no samples")
    rng_level, rng_noise, rng_line, rng_hum, rng_loss = _streams(seed, 5)
    params: dict[str, Any] = {"codec": settings.codec, "level_db": None, "snr_db": None, "hum_hz": None,
                              "hum_snr_db": None, "loss_rate": None, "noise_file": None, "noise_snr_db": None,
                              "out_rate": settings.out_rate}

    # 1. background noise at the microphone, at the source rate
    files = noise if noise is not None else (noise_files(settings.noise_dir) if settings.noise_dir else ())
    if files and rng_noise.random() < settings.noise_prob:
        index = int(rng_noise.integers(len(files)))
        snr = float(rng_noise.uniform(*settings.noise_snr_db))
        speech_power = active_power(x, fs)
        segment = noise_segment(files[index], len(x), fs, rng_noise)
        if speech_power > 0 and np.any(segment):
            x = (x + scale_to_snr(segment, speech_power, snr)).astype(np.float32)
            name = files[index]
            if settings.noise_dir:  # noise_files() lists resolved paths
                name = os.path.relpath(name, Path(settings.noise_dir).resolve())
            params["noise_file"] = name.replace(os.sep, "/")
            params["noise_snr_db"] = round(snr, 3)

    # 2-3. narrow band
    y = channel.resample(x, fs, CHANNEL_RATE) if fs != CHANNEL_RATE else x
    y = y.astype(np.float64)
    if settings.band is not None:
        y = channel.bandpass(y, CHANNEL_RATE, settings.band[0], settings.band[1], settings.filter_order)

    # 4. level
    power = active_power(y, CHANNEL_RATE)
    if power <= 0:
        raise Rejected("silent_audio", "no signal left after the band-pass" if np.any(x) else "all samples are zero")
    if settings.level_db is not None:
        target = float(rng_level.uniform(*settings.level_db))
        gain = math.sqrt(10 ** (target / 10) / power)
        peak = float(np.max(np.abs(y)))
        gain = min(gain, settings.peak_limit / peak) if peak > 0 else gain
        y = y * gain
        power *= gain * gain
    params["level_db"] = round(10 * math.log10(power), 3)

    # 5. line noise, 6. hum: on the analogue loop, before the codec
    n = len(y)
    if settings.line_snr_db is not None and rng_line.random() < settings.line_noise_prob:
        snr = float(rng_line.uniform(*settings.line_snr_db))
        y = y + scale_to_snr(rng_line.standard_normal(n), power, snr)
        params["snr_db"] = round(snr, 3)
    if settings.hum_snr_db is not None and rng_hum.random() < settings.hum_prob:
        freq = float(settings.hum_hz[int(rng_hum.integers(len(settings.hum_hz)))])
        snr = float(rng_hum.uniform(*settings.hum_snr_db))
        phases = tuple(rng_hum.uniform(0, 2 * np.pi, 2))
        y = y + scale_to_snr(hum(n, CHANNEL_RATE, freq, settings.hum_harmonic, phases), power, snr)
        params["hum_hz"], params["hum_snr_db"] = freq, round(snr, 3)

    # 7. codec
    if settings.codec in _SILENCE:
        y = _g711(y, settings.codec)
    elif settings.codec in SOX_CODECS:
        try:
            y = _sox_codec(y, settings.codec, settings.amr_mode)
        except _CodecError as err:
            raise Rejected("codec_failed", str(err)) from None

    # 8. packet loss on the coded stream
    if settings.loss_rate is not None and rng_loss.random() < settings.loss_prob:
        rate = float(rng_loss.uniform(*settings.loss_rate))
        frame = max(int(round(CHANNEL_RATE * settings.loss_frame_ms / 1000)), 1)
        n_frames = -(-n // frame)
        mask = loss_mask(n_frames, rate, settings.loss_burst, rng_loss)
        if mask.any():
            y = _apply_loss(y, mask, frame, settings.loss_fill, _SILENCE.get(settings.codec, 0.0))
            if settings.codec in _SILENCE:  # what a G.711 receiver stores: back on the codec's levels
                y = _g711(y, settings.codec)
        params["loss_rate"] = round(float(mask.mean()), 4)

    # 9. output rate, on the int16 grid
    if settings.out_rate != CHANNEL_RATE:
        y = channel.resample(y, CHANNEL_RATE, settings.out_rate)
    out = channel.pcm16_to_float(channel.float_to_pcm16(y), dtype=np.float32)
    return out, settings.out_rate, params


def _g711(y: np.ndarray, codec: str) -> np.ndarray:
    """Float audio through G.711 (8-bit codes, bit-exact, by table); float64 levels."""
    pcm = channel.g711_quantize(channel.float_to_pcm16(y), "mu" if codec == "mulaw" else "a")
    return pcm * (1.0 / 32768.0)


def _wav_subtype(settings: SimulationSettings) -> str:
    """G.711 at 8 kHz is stored as G.711 (one byte a sample, the exact codes); the rest as PCM16."""
    if settings.out_rate == CHANNEL_RATE and settings.codec == "mulaw":
        return "ULAW"
    if settings.out_rate == CHANNEL_RATE and settings.codec == "alaw":
        return "ALAW"
    return "PCM_16"


# ---------------------------------------------------------------------------------------------
# Output names
# ---------------------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def output_names(keys: Iterable[str]) -> dict[str, str]:
    """key -> file name (`.wav`), distinct even on a case-insensitive file system.

    A key that is already a safe name (letters, digits, `._-`, not starting with `.` or `-`, at
    most 100 characters) and whose lower case no other name shares is used as is; any other key
    gets its sanitized form plus `-` and 12 hex digits of its sha256, so keys that sanitize alike
    ("a b", "a/b", "a_b" next to "A_B") still get different files."""
    keys = list(keys)
    stems = {k: (_UNSAFE.sub("_", k).lstrip(".-")[:100] or "utt") for k in keys}
    folded = Counter(s.casefold() for s in stems.values())
    names: dict[str, str] = {}
    for key, stem in stems.items():
        if stem == key and folded[stem.casefold()] == 1:
            names[key] = stem
        else:
            names[key] = f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    clash = Counter(n.casefold() for n in names.values())
    for key, name in names.items():  # a clean key equal to another's hashed name: full digests
        if clash[name.casefold()] > 1:
            names[key] = f"{stems[key]}-{hashlib.sha256(key.encode()).hexdigest()}"
    if len({n.casefold() for n in names.values()}) != len(names):  # pragma: no cover - sha256 collision
        raise RuntimeError("output names collide")
    return {k: n + ".wav" for k, n in names.items()}


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------


@dataclass
class SimulateReport(RejectCounts):
    source: Path
    out_dir: Path
    manifest: Path  # the manifest file (the directory for Kaldi output)
    rejects_file: Path
    input_format: str  # kaldi, jsonl, table, folder, nano
    output_format: str  # kaldi, jsonl, nano
    settings: SimulationSettings
    seed: int
    written: int = 0
    rejects: list = field(default_factory=list)  # nano8k.data.Problem
    seconds_in: float = 0.0
    seconds_out: float = 0.0
    applied: Counter = field(default_factory=Counter)  # step -> utterances it was applied to
    hint: str = ""  # every audio file missing: where relative paths were taken from

    @property
    def exit_code(self) -> int:
        """0 when every input line was written, 1 when any was rejected."""
        return 1 if self.rejects else 0

    def summary(self) -> str:
        s = self.settings
        lines = [f"{self.manifest}: {self.written} of {self.total} utterances simulated ({self.output_format}, "
                 f"codec {s.codec}, {s.out_rate} Hz, seed {self.seed}), {self.seconds_out / 3600:.2f} h of audio "
                 f"in {self.out_dir / 'wav'}"]
        if self.written:
            steps = ", ".join(f"{k} {self.applied[k]}" for k in ("noise", "line_noise", "hum", "packet_loss"))
            lines.append(f"applied to: {steps} (of {self.written}; per utterance in its 'channel' field)")
        if self.rejects:
            reasons = ", ".join(f"{r} {n}" for r, n in self.counts.most_common())
            lines.append(f"{self.rejected} rejected ({reasons}): see {self.rejects_file}")
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)


def simulate_corpus(
    source: Path,
    out_dir: Path,
    settings: SimulationSettings = PRESETS["clean_g711"],
    workers: int = 1,
    seed: int = 0,
    output_format: str | None = None,
    *,
    frontend_fs: int | None = None,
    allow_pipes: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    audio_root: Path | None = None,
    raw_rate: int | None = None,
) -> SimulateReport:
    """Simulate every utterance of `source` into `out_dir` (see the module docstring).

    `source`: anything `nano8k data prepare` reads (a Kaldi data directory with optional segments
    and utt2spk, a source/target JSONL, a CSV/TSV, a folder of audio + .txt), read by nano8k.data's
    own readers, or a Nano JSONL (single-audio lines). `output_format`: kaldi, jsonl, nano, csv,
    tsv or folder (default: the input's format). A Nano output needs a Nano input, whose
    text_length it keeps; for other inputs write kaldi or jsonl and run `nano8k data prepare`.

    Writes ``out_dir/wav/<name>.wav`` (names from `output_names`), the manifest (Kaldi: wav.scp,
    text, utt2channel, and utt2spk + spk2utt when speakers are known; JSONL/Nano:
    ``out_dir/<input name>.jsonl``, the input's fields with the new absolute path and a `channel`
    object; Nano: speech_length, duration and sample_rate recomputed for the new audio, counted at
    `frontend_fs`, default 16000), and ``out_dir/rejects.jsonl`` (always; empty when nothing was
    rejected). Lines keep the input's order. `out_dir` must be absent or empty unless `overwrite`.
    Multi-channel audio is averaged. Never raises for a bad line or file: see the report.
    """
    source, out_dir = Path(source), Path(out_dir)
    if workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    settings = settings.validate()
    require_codec(settings.codec)
    frontend_fs = data.DEFAULT_FRONTEND_FS if frontend_fs is None else int(frontend_fs)
    if frontend_fs <= 0:
        raise UserError(f"frontend_fs must be a positive sample rate, got {frontend_fs}")

    input_format, location, items, rejects = data.read_source(source, allow_pipes=allow_pipes, manifests=True,
                                                              audio_root=audio_root)
    table_format = "tsv" if location.suffix.lower() == ".tsv" else "csv"
    output_format = output_format or {"kaldi": "kaldi", "nano": "nano", "table": table_format,
                                      "folder": "folder"}.get(input_format, "jsonl")
    if output_format not in OUTPUT_FORMATS:
        raise UserError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    if output_format == "nano" and input_format != "nano":
        raise UserError("a Nano manifest needs text_length from the model's tokenizer: write kaldi or jsonl output "
                        "and run `nano8k data prepare` on it")
    out_dir = out_dir.absolute()
    stem = Path(location.resolve().name).stem or "data"
    manifest = {"kaldi": out_dir, "folder": out_dir / "wav", "csv": out_dir / f"{stem}.csv",
                "tsv": out_dir / f"{stem}.tsv"}.get(output_format, out_dir / f"{stem}.jsonl")
    written_files = {out_dir / n for n in ("rejects.jsonl",)} | (
        {out_dir / n for n in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2channel")} if output_format == "kaldi"
        else {manifest})
    check_apart(written_files, location)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise UserError(f"{out_dir}: not empty; choose a new directory or allow overwriting (--overwrite)")
    noise: tuple[str, ...] = ()
    if settings.noise_dir is not None:  # absolute: `noise_file` is recorded relative to it
        settings = settings.replace(noise_dir=str(Path(settings.noise_dir).resolve()))
    if settings.noise_dir is not None and settings.noise_prob > 0:
        noise = noise_files(settings.noise_dir)
        if not noise:
            raise UserError(f"noise_dir {settings.noise_dir}: no readable audio files")

    if output_format == "kaldi":  # Kaldi files are whitespace-separated
        kept = []
        for item in items:
            if re.search(r"\s", item.key):
                rejects.append(_problem(item, "bad_key", f"whitespace in the key {item.key!r}"))
            else:
                kept.append(item)
        items = kept

    wav_dir = out_dir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    names = output_names(item.key for item in items)
    tasks = [(item.key, item.audio, item.pipe, item.segment, item.channel, str(wav_dir / names[item.key]), raw_rate)
             for item in items]
    results = _run_tasks(tasks, settings, int(seed), noise, workers, progress)

    report = SimulateReport(source=source, out_dir=out_dir, manifest=manifest, rejects_file=out_dir / "rejects.jsonl",
                            input_format=input_format, output_format=output_format, settings=settings, seed=int(seed))
    records: list[tuple[Entry, dict]] = []
    for item, result in zip(items, results):
        if "reason" in result:
            rejects.append(_problem(item, result["reason"], result["detail"]))
            continue
        records.append((item, result))
        report.seconds_in += result["seconds_in"]
        report.seconds_out += result["samples"] / result["rate"]
        applied = result["channel"]
        report.applied["noise"] += applied["noise_file"] is not None
        report.applied["line_noise"] += applied["snr_db"] is not None
        report.applied["hum"] += applied["hum_hz"] is not None
        report.applied["packet_loss"] += bool(applied["loss_rate"])

    if output_format == "kaldi":
        _write_kaldi(out_dir, records)
    elif output_format in ("csv", "tsv"):
        _write_table(manifest, records, "\t" if output_format == "tsv" else ",")
    elif output_format == "folder":
        _write_folder(out_dir, records)
    else:
        _write_jsonl(manifest, records, output_format, frontend_fs)
    report.written = len(records)
    report.rejects = sorted(rejects, key=lambda p: (p.file, p.line))
    report.hint = data.audio_root_hint(report.rejects, len(items), location, audio_root)
    data.write_rejects(report, report.rejects_file)
    return report


def _problem(item: Entry, reason: str, detail: str) -> Any:
    return Problem(item.file, item.line, item.key, reason, detail, input=item.raw)


# --- running ---------------------------------------------------------------------------------

_JOB: dict[str, Any] = {}


def _init_worker(settings: SimulationSettings, seed: int, noise: tuple[str, ...]) -> None:
    _JOB.update(settings=settings, seed=seed, noise=noise)


def _one(task: tuple) -> dict:
    """Read, simulate and write one utterance; a failure becomes {"reason", "detail"}."""
    key, audio, pipe, segment, channel_index, out_path, raw_rate = task
    settings: SimulationSettings = _JOB["settings"]
    try:
        samples, rate = _load(audio, pipe, segment, channel_index, raw_rate)
        if len(samples) < MIN_SECONDS * rate:
            raise Rejected("audio_too_short", f"{len(samples)} samples at {rate} Hz: {audio}")
        out, out_rate, params = simulate_utterance(samples, rate, settings, utterance_seed(_JOB["seed"], key),
                                                   noise=_JOB["noise"])
        _write_wav(out_path, out, out_rate, _wav_subtype(settings))
    except Rejected as err:
        return {"reason": err.reason, "detail": err.detail}
    except Exception as err:  # noqa: BLE001 -- one utterance never stops the run
        return {"reason": "simulation_failed", "detail": f"{audio}: {type(err).__name__}: {one_line(err)}"}
    return {"path": out_path, "samples": len(out), "rate": out_rate, "seconds_in": len(samples) / rate,
            "channel": params}


def _load(audio: str, pipe: bool, segment: tuple | None, channel_index: int | None,
          raw_rate: int | None = None) -> tuple[np.ndarray, int]:
    """(frames x channels float32, rate) of a file, a pipe's output, a segment, or one channel,
    through data.audio, the loader prepare and decode use (never NaN: non-finite audio is refused)."""
    from nano8k.data import audio as audio_files

    try:
        if pipe:
            source: Any = audio_files.run_pipe(audio)
            label, unreadable = f"'{audio}'", "pipe_failed"
        else:
            if audio_files.is_url(audio):
                raise Rejected("missing_audio", f"{audio}: URLs are not supported; download the audio first")
            what = audio_files.not_a_file(audio)
            if what is not None:
                raise Rejected("missing_audio", f"{audio} {what}")
            source, label, unreadable = audio, audio, "unreadable_audio"
        start, stop = 0, None
        if segment is not None:
            total, rate, _, _ = audio_files.header_of(source, raw_rate)
            start, stop = audio_files.segment_samples(segment, total, rate, label, label)
        return audio_files.load(source, raw_rate, start=start, stop=stop, channel=channel_index)
    except audio_files.AudioProblem as err:
        reason = unreadable if pipe and err.reason in ("unreadable_audio", "corrupt_audio") else err.reason
        raise Rejected(reason, err.detail) from None


def _write_wav(path: str, samples: np.ndarray, rate: int, subtype: str) -> None:
    import soundfile as sf

    try:
        with data.atomic_path(Path(path)) as tmp:
            sf.write(tmp, channel.float_to_pcm16(samples), rate, subtype=subtype, format="WAV")
    except Exception as err:  # noqa: BLE001
        raise Rejected("write_failed", f"{path}: {one_line(err)}") from None


def _run_tasks(tasks: list, settings: SimulationSettings, seed: int, noise: tuple[str, ...], workers: int,
               progress: bool) -> list[dict]:
    """_one over the tasks, results in input order: in-process for one worker, else a process pool
    (forkserver, which imports this module once: workers are never forks of a possibly threaded
    caller); a rich progress bar on stderr."""
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(tasks) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            if "forkserver" in multiprocessing.get_all_start_methods():
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(["nano8k.simulate", "nano8k.data", "soundfile"])  # imported once
            else:
                context = multiprocessing.get_context("spawn")
            pool = stack.enter_context(ProcessPoolExecutor(
                max_workers=min(workers, len(tasks)), mp_context=context,
                initializer=_init_worker, initargs=(settings, seed, noise)))
            results: Iterable[dict] = pool.map(_one, tasks, chunksize=max(1, min(32, len(tasks) // (workers * 8))))
        else:
            _init_worker(settings, seed, noise)
            results = map(_one, tasks)
        if not progress or len(tasks) < 2:
            return list(results)
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        bar = stack.enter_context(Progress(*columns, console=Console(stderr=True), transient=True))
        task = bar.add_task("simulating", total=len(tasks))
        out = []
        for result in results:
            out.append(result)
            bar.advance(task)
        return out


# --- writing ---------------------------------------------------------------------------------


def _write_kaldi(out_dir: Path, records: list[tuple[Entry, dict]]) -> None:
    data.write_kaldi(out_dir, [data.KaldiRow(item.key, r["path"], item.text, item.speaker, r["channel"])
                               for item, r in records])


def _write_jsonl(manifest: Path, records: list[tuple[Entry, dict]], output_format: str, frontend_fs: int) -> None:
    rows = []
    for item, result in records:
        path = result["path"]
        if output_format == "nano":
            row = with_audio(item.obj or {}, path)
            row["key"] = item.key
            row["speech_length"] = data.fbank_frames(result["samples"], result["rate"], frontend_fs)
            row["duration"] = round(result["samples"] / result["rate"], 6)
            row["sample_rate"] = result["rate"]
        elif item.audio_field is not None:  # a source/target JSONL: its fields, the new path
            row = dict(item.obj or {})
            row[item.audio_field] = path
        else:
            row = {"key": item.key, "source": path, "target": item.text}
            if item.speaker:
                row["speaker"] = item.speaker
        row["channel"] = result["channel"]
        rows.append(row)
    data.write_jsonl_atomic(manifest, rows)


CHANNEL_COLUMNS = data.CHANNEL_FIELDS  # the drawn parameters, one column each


def _write_table(manifest: Path, records: list[tuple[Entry, dict]], delimiter: str) -> None:
    """CSV/TSV: key, audio, text, speaker, then the drawn channel parameters as columns (so
    `nano8k compare` can bucket by codec or SNR once decoded)."""
    import csv

    with data.atomic_path(manifest) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["key", "audio", "text", "speaker", *CHANNEL_COLUMNS])
        for item, result in records:
            writer.writerow([item.key, result["path"], item.text, item.speaker or "",
                             *("" if result["channel"].get(c) is None else result["channel"][c] for c in CHANNEL_COLUMNS)])


def _write_folder(out_dir: Path, records: list[tuple[Entry, dict]]) -> None:
    """A folder of audio with same-stem .txt transcripts (what `data prepare` reads as a folder), plus
    channel.jsonl with each utterance's drawn channel parameters."""
    for item, result in records:
        Path(result["path"]).with_suffix(".txt").write_text(item.text + "\n", encoding="utf-8")
    data.write_jsonl_atomic(out_dir / "channel.jsonl",
                             [{"key": item.key, "audio": result["path"], "channel": result["channel"]}
                              for item, result in records])
