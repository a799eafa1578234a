"""On-the-fly augmentation of training audio (`nano8k train +augment=telephone`): per sample and
epoch, speed perturbation, a room response, background noise at an SNR, then the telephone
line of `nano8k data simulate` (telephone_line.simulate_utterance: one implementation, not a copy).

What a sample gets is a pure function of (augment.seed, epoch, key): `plan()` draws it, so a
resumed run sees the same augmentations, the number of data-loader workers changes nothing, and
the trainer can count an epoch's draws (codec, SNR bucket, speed) for its log without touching
audio. funasr_gaps 24 puts the Augmenter where FunASR's Nano dataset applies its
`preprocessor_noise` hook (the waveform of a training sample, before its features), and scales
the lengths its token batcher reads by the slowest speed, so batches stay within batch_size.
Validation is never augmented.

Order (the seed system's design): speed on the clean speech, the room, the room's noise, then
the telephone line (band, level, line noise, hum, codec, packet loss).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nano8k import data
from nano8k.errors import UserError

log = logging.getLogger(__name__)

SNR_BUCKETS = (0.0, 10.0, 20.0)  # the log's SNR buckets: <0, 0-10, 10-20, >=20 dB


@dataclass
class Plan:
    """What one sample gets in one epoch."""

    seed: int
    speed: float = 1.0
    preset: str | None = None  # telephone_line.py's preset (the telephone line); None: no line
    rir: int | None = None  # index into the room responses
    noise: int | None = None  # index into the noise files
    snr_db: float | None = None


class Augmenter:
    """A training run's augmentation (the `augment` config, checked by check()); called by FunASR's
    dataset on a sample's waveform at the front end's rate, with `key` and `epoch` set before."""

    def __init__(self, settings: dict, fs: int, run_seed: int = 0):
        self.settings, self.fs = settings, int(fs)
        self.seed = int(settings.get("seed") if settings.get("seed") is not None else run_seed)
        self.noise_files = _audio_files(settings.get("noise"))
        self.rir_files = _audio_files(settings.get("rir"))
        self.lines = {name: _line(name) for name in settings.get("presets") or {}}  # name or YAML file -> channel
        self.epoch, self.key = 0, None

    @property
    def slowest(self) -> float:
        """The longest a sample can become (1 / the lowest speed factor): the batcher's bound."""
        speed = self.settings.get("speed") or {}
        return 1.0 / min(1.0, _speeds(speed)[0]) if speed else 1.0

    def plan(self, key: str, epoch: int) -> Plan:
        from nano8k import telephone_line as telephone

        s = self.settings
        rng = np.random.default_rng(telephone.utterance_seed(self.seed, f"{epoch}\0{key}"))
        plan = Plan(seed=int(rng.integers(2**63)))
        speed = s.get("speed") or {}
        if speed and rng.random() < float(speed.get("prob", 1.0)):
            if speed.get("range") is not None:
                plan.speed = round(float(rng.uniform(*_speeds(speed))), 4)
            else:
                plan.speed = float(speed["factors"][int(rng.integers(len(speed["factors"])))])
        rir = s.get("rir") or {}
        if self.rir_files and rng.random() < float(rir.get("prob", 1.0)):
            plan.rir = int(rng.integers(len(self.rir_files)))
        noise = s.get("noise") or {}
        if self.noise_files and rng.random() < float(noise.get("prob", 1.0)):
            plan.noise = int(rng.integers(len(self.noise_files)))
            plan.snr_db = float(rng.uniform(*noise.get("snr_db", (5.0, 20.0))))
        presets = s.get("presets") or {}
        if presets and rng.random() < float(s.get("channel_prob", 1.0)):
            names, weights = list(presets), np.array([float(w) for w in presets.values()])
            plan.preset = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        return plan

    def __call__(self, samples: Any) -> Any:
        """FunASR's `preprocessor_noise` hook: the sample's waveform in, the augmented one out."""
        import torch

        from nano8k import channel
        from nano8k import telephone_line as telephone

        plan = self.plan(str(self.key), self.epoch)
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if plan.speed != 1.0:  # sox's `speed`: played faster or slower, pitch and tempo together
            x = channel.resample(x, round(self.fs * plan.speed), self.fs).astype(np.float32)
        rng = np.random.default_rng(plan.seed)
        if plan.rir is not None:
            x = _reverberate(x, self.rir_files[plan.rir], self.fs)
        if plan.noise is not None:
            segment = telephone.noise_segment(self.noise_files[plan.noise], len(x), self.fs, rng)
            power = telephone.active_power(x, self.fs)
            if power > 0:
                x = (x + telephone.scale_to_snr(segment, power, plan.snr_db)).astype(np.float32)
        if plan.preset is not None:
            line = self.lines[plan.preset].replace(out_rate=self.fs, noise_dir=None)  # noise: the step above
            try:
                x, _, _ = telephone.simulate_utterance(x, self.fs, line, seed=plan.seed, noise=())
            except telephone.Rejected:  # silent audio: nothing to put through a line
                pass
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def counts(self, keys: list[str], epoch: int) -> str:
        """One log line: how many of an epoch's samples get which codec, SNR bucket and speed."""
        plans = [self.plan(k, epoch) for k in keys]
        codecs = Counter(self.lines[p.preset].codec if p.preset else "no channel" for p in plans)
        snrs = Counter(_bucket(p.snr_db) for p in plans)
        step = 0.05 if (self.settings.get("speed") or {}).get("range") is not None else 0  # a range: 0.05 buckets
        speeds = Counter(f"{round(p.speed / step) * step:.2f}" if step else f"{p.speed:g}" for p in plans)
        rooms = sum(p.rir is not None for p in plans)

        def show(counter: Counter) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(counter.items()))

        return (f"augmentation of epoch {epoch + 1} ({len(plans)} samples): codec {show(codecs)}; SNR {show(snrs)}; "
                f"speed {show(speeds)}; room responses {rooms}")


def _line(preset: str) -> Any:
    """A telephone line: one of telephone_line.py's presets, or a YAML file of its settings (ranges)."""
    from nano8k import telephone_line as telephone

    try:
        return telephone.resolve_settings(preset)
    except UserError as err:
        raise UserError(f"augment.presets.{preset}: {err}") from None


def _bucket(snr: float | None) -> str:
    from nano8k import compare

    return "no noise" if snr is None else compare.bucket_label(snr, SNR_BUCKETS, " dB")


def _reverberate(x: np.ndarray, path: str, fs: int) -> np.ndarray:
    """x convolved with a room impulse response (its direct path moved to time 0, its energy 1)."""
    from scipy.signal import fftconvolve

    from nano8k import channel
    from nano8k.data import audio as audio_files

    response, rate = audio_files.load(path, dtype="float64")
    response = response.mean(axis=1)
    if rate != fs:
        response = channel.resample(response, rate, fs)
    response = response[int(np.argmax(np.abs(response))):]
    norm = math.sqrt(float(np.sum(response**2))) or 1.0
    return fftconvolve(x, response / norm)[: len(x)].astype(np.float32)


def _audio_files(section: dict | None) -> tuple[str, ...]:
    """The readable audio files of a section's `dir`: a folder or a list file (data.readable_audio)."""
    if not section or not section.get("dir"):
        return ()
    return data.readable_audio(str(section["dir"]))[0]


def _speeds(speed: dict) -> tuple[float, float]:
    """The lowest and highest speed factor of the `speed` section (factors or a range)."""
    values = list(speed.get("range") or speed.get("factors") or [])
    return min(values), max(values)


def check(settings: dict) -> None:
    """One line naming the key for what cannot work, before anything is built: an SNR range upside
    down, a speed of 0 or less, an unknown preset, weights that do not add up to anything, a noise
    or room folder that is missing or holds no readable audio (unreadable files are reported once
    each and left out)."""
    for dotted in ("channel_prob", "noise.prob", "speed.prob", "rir.prob"):
        section, _, leaf = dotted.rpartition(".")
        value = (settings.get(section) or {}).get(leaf) if section else settings.get(leaf)
        if value is not None and not 0 <= float(value) <= 1:
            raise UserError(f"augment.{dotted}: {value} must be within [0, 1]")
    presets = settings.get("presets") or {}
    for name, weight in presets.items():
        _line(name)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
            raise UserError(f"augment.presets.{name}: weight {weight!r} must be a number >= 0")
    if presets and sum(float(w) for w in presets.values()) <= 0:
        raise UserError("augment.presets: the weights add up to 0")
    speed = settings.get("speed") or {}
    if speed:
        if speed.get("range") is not None and speed.get("factors"):
            raise UserError("augment.speed: give factors or a range, not both")
        name = "range" if speed.get("range") is not None else "factors"
        values = speed.get(name) or []
        if not values or any(not isinstance(f, (int, float)) or f <= 0 for f in values):
            raise UserError(f"augment.speed.{name}: {values!r}: every factor must be above 0")
        if name == "range" and (len(values) != 2 or values[0] > values[1]):
            raise UserError(f"augment.speed.range: {values!r}: give [low, high], low first")
    for section in ("noise", "rir"):
        conf = settings.get(section) or {}
        if not conf:
            continue
        if section == "noise":
            low, high = conf.get("snr_db", (5.0, 20.0))
            if low > high:
                raise UserError(f"augment.noise.snr_db: [{low}, {high}] is upside down (low first)")
        folder = conf.get("dir")
        if not folder:
            raise UserError(f"augment.{section}.dir: not set; give the folder (or list file) of {section} audio")
        if not Path(str(folder)).exists():
            raise UserError(f"augment.{section}.dir: {folder}: no such directory or list file")
        readable, left_out = data.readable_audio(str(folder))
        for path in left_out:
            log.warning("augment.%s.dir: %s: not readable audio; left out", section, path)
        if left_out:
            log.warning("augment.%s.dir: %d readable files used, %d left out", section, len(readable), len(left_out))
        if not readable:
            raise UserError(f"augment.{section}.dir: {folder} holds no readable audio")
