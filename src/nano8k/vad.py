"""Speech segments of long audio with silero-vad, read and analysed a bounded window at a time.

silero-vad (PyPI) ships its weights (no download) and runs at 8 and 16 kHz: telephone audio is
analysed at its own 8 kHz, 16 kHz audio at 16 kHz, any other rate resampled to 8 kHz. The audio is
read `window_s` seconds at a time (data.audio.load) and fed to the model in its 256/512-sample
frames with its state carried from window to window, so an hour-long call never sits in memory:
only the per-frame speech probabilities (one float per 32 ms) are kept. A frame of digital silence
(exact zeros) scores 0 without the model, which starts afresh after it (SileroVad.speech). silero's
own `get_speech_timestamps_from_probs` turns them into segments: speech of at least `min_speech_ms`,
ended by `min_silence_ms` of silence, padded by `speech_pad_ms`, and split (at the longest pause)
past `max_segment_s`, because Fun-ASR-Nano repeats or hallucinates on much more than 30 s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nano8k import config
from nano8k.errors import UserError

CONF = "vad/silero"  # conf/vad/silero.yaml: the settings a key left out takes
NATIVE_RATES = (8000, 16000)  # silero's own; other rates are resampled to the first
FRAME = {8000: 256, 16000: 512}  # silero's frame, samples


@dataclass
class Segment:
    start: float  # seconds
    end: float


@dataclass
class Speech:
    """One channel's speech: segments and the seconds of audio analysed."""

    segments: list[Segment]
    duration: float

    @property
    def speech_s(self) -> float:
        return sum(s.end - s.start for s in self.segments)


class SileroVad:
    """The silero-vad model with a decode config's `vad` settings (validated by config.py)."""

    def __init__(self, settings: dict):
        import torch

        try:
            with _torch_threads(torch.get_num_threads()):  # importing silero_vad sets torch's threads to 1
                from silero_vad import get_speech_timestamps_from_probs, load_silero_vad
        except ImportError:
            raise UserError("vad=silero needs the silero-vad package: pip install 'silero-vad>=6.2.3'") from None
        self.model = load_silero_vad()
        self._to_segments = get_speech_timestamps_from_probs
        values = config.with_shipped_defaults(settings, CONF)
        self.threshold = float(values["threshold"])
        self.neg_threshold = float(values["neg_threshold"]) if values.get("neg_threshold") is not None else None
        self.min_speech_ms, self.min_silence_ms = int(values["min_speech_ms"]), int(values["min_silence_ms"])
        self.speech_pad_ms = int(values["speech_pad_ms"])
        self.max_segment_s, self.window_s = float(values["max_segment_s"]), float(values["window_s"])

    def speech(self, path: str, channel: int | None, raw_rate: int | None = None) -> Speech:
        """Speech segments of one channel of a file (None: the channels' mean). Raises
        data.audio.AudioProblem when the file cannot be read."""
        import torch

        from nano8k import channel as dsp
        from nano8k.data import audio as audio_files

        frames, rate, _, _ = audio_files.header_of(path, raw_rate)
        vad_rate = rate if rate in NATIVE_RATES else NATIVE_RATES[0]
        frame = FRAME[vad_rate]
        window = max(frame, int(self.window_s * rate))
        probs: list[float] = []
        carry = torch.zeros(0)
        self.model.reset_states()
        silent = False  # the frame before was digital silence

        def probability(frame: Any) -> float:
            """A frame of digital silence (every sample exactly 0: a muted or silence-suppressed
            channel, a PBX's gap) holds no speech: it scores 0 without the model, which starts
            afresh after it, as at a file's start. Carried through seconds of exact zeros,
            silero's state drifted, and short words after the other side's turn scored under its
            threshold (README, "Whole calls")."""
            nonlocal silent
            if not bool(frame.any()):
                if not silent:
                    self.model.reset_states()
                silent = True
                return 0.0
            silent = False
            return float(self.model(frame, vad_rate))

        with _torch_threads(1), torch.inference_mode():  # one frame at a time: threads only cost here
            for start in range(0, frames, window):
                block, _ = audio_files.load(path, raw_rate, start=start, stop=min(start + window, frames), channel=channel)
                samples = block.mean(axis=1)
                if rate != vad_rate:
                    samples = dsp.resample(samples, rate, vad_rate)
                samples = torch.cat([carry, torch.from_numpy(samples.astype("float32"))])
                whole = len(samples) // frame * frame
                for i in range(0, whole, frame):
                    probs.append(probability(samples[i:i + frame]))
                carry = samples[whole:]
            if len(carry):
                probs.append(probability(torch.nn.functional.pad(carry, (0, frame - len(carry)))))
        length = round(frames * vad_rate / rate)
        found = self._to_segments(probs, sampling_rate=vad_rate, threshold=self.threshold,
                                  neg_threshold=self.neg_threshold, min_speech_duration_ms=self.min_speech_ms,
                                  min_silence_duration_ms=self.min_silence_ms, speech_pad_ms=self.speech_pad_ms,
                                  max_speech_duration_s=self.max_segment_s, audio_length_samples=length)
        segments = [Segment(round(s["start"] / vad_rate, 3), round(min(s["end"], length) / vad_rate, 3)) for s in found]
        return Speech([s for s in segments if s.end > s.start], frames / rate)


def detector(settings: dict) -> "SileroVad":
    """The voice-activity detector a decode config's `vad` names (config.VAD_NAMES; silero when
    unnamed): the one place a second detector is added."""
    name = settings.get("name") or "silero"
    if name not in DETECTORS:
        raise UserError(f"vad.name: {name!r} is not one of {', '.join(DETECTORS)}")
    return DETECTORS[name](settings)


def check(settings: dict) -> None:
    """What the schema's single-key bounds cannot say, before any model is loaded."""
    values = config.with_shipped_defaults(settings, CONF)
    if values.get("neg_threshold") is not None and float(values["neg_threshold"]) >= float(values["threshold"]):
        raise UserError(f"vad.neg_threshold: {values['neg_threshold']} must be below vad.threshold ({values['threshold']})")


DETECTORS = {"silero": SileroVad}


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
