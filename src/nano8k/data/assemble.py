"""Whole calls assembled from a corpus's utterances: two channels (agent, customer) taking turns,
with pauses, hold silences and the truth of where each utterance lies. The tests and
`scripts/bench_calls.py` decode them; the file is written a turn at a time, so an hour-long call
never sits in memory."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from nano8k.files import atomic_path


@dataclass
class Turn:
    key: str  # the utterance's
    channel: int  # 0 or 1
    start: float  # seconds in the call
    end: float
    text: str


def assemble_call(utterances: list[tuple[str, str, str]], out: Path, seconds: float, seed: int = 0,
                  rate: int = 8000, pause: tuple[float, float] = (0.6, 2.5), hold_every: int = 12,
                  hold_s: float = 8.0) -> list[Turn]:
    """A stereo call of about `seconds` at `rate` from (key, audio path, transcript) utterances
    (used in turn, cycled; mono, at `rate`), alternating channels mostly, `pause` seconds of
    silence between turns and a hold of `hold_s` every `hold_every` turns; writes OUT (16-bit WAV)
    and OUT with `.truth.jsonl` (one Turn a line); returns the turns."""
    import numpy as np
    import soundfile as sf

    from nano8k.data import audio as audio_files

    draw = random.Random(seed)
    turns: list[Turn] = []
    position, channel, index = 0, 0, 0
    with atomic_path(out) as partial, sf.SoundFile(partial, "w", rate, 2, "PCM_16", format="WAV") as f:
        while position < seconds * rate:
            key, path, text = utterances[index % len(utterances)]
            samples, file_rate = audio_files.load(path)
            if file_rate != rate:
                raise ValueError(f"{path}: {file_rate} Hz, not the call's {rate}")
            gap = int(draw.uniform(*pause) * rate) + (int(hold_s * rate) if index and index % hold_every == 0 else 0)
            block = np.zeros((gap + len(samples), 2), dtype=np.float32)
            block[gap:, channel] = samples.mean(axis=1)
            f.write(block)
            start = position + gap
            turns.append(Turn(f"{key}" if index < len(utterances) else f"{key}#{index // len(utterances) + 1}",
                              channel, round(start / rate, 4), round((start + len(samples)) / rate, 4), text))
            position = start + len(samples)
            index += 1
            channel = 1 - channel if draw.random() < 0.8 else channel
        f.write(np.zeros((int(pause[1] * rate), 2), dtype=np.float32))
    truth = out.with_name(out.name + ".truth.jsonl")
    truth.write_text("".join(json.dumps(asdict(t), ensure_ascii=False) + "\n" for t in turns), encoding="utf-8")
    return turns
