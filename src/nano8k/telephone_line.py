"""The telephone line: what a call does to speech, one utterance at a time (`simulate_utterance`),
with its settings (`SimulationSettings`, the named `PRESETS`, `resolve_settings`). `nano8k data
simulate` (simulate.py) runs it over a corpus; training augmentation (augment.py) runs it on the fly.

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
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nano8k import channel, data
from nano8k.errors import UserError
from nano8k.files import read_yaml


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
    """The readable audio files under `noise_dir` (data.readable_audio: recursive, sorted by
    relative path, resolved): the list a noise index is drawn from."""
    return data.readable_audio(noise_dir)[0]


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
