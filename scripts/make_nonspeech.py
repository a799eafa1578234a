#!/usr/bin/env python3
"""Telephone non-speech clips, generated: what reaches a recogniser when nobody speaks.

Twelve kinds, each a pure function of its seed (numpy only, no recording of anybody):

  digital_silence  exact zeros (a muted leg, a gap a platform inserted)
  comfort_noise    white noise at -65 dBFS (what a codec's CNG plays in a pause)
  line_hiss        band-limited noise 300-3400 Hz at -50 dBFS
  mains_hum        50 or 60 Hz and harmonics at -30 dBFS
  dtmf             key presses (ITU-T Q.23 pairs, 80-120 ms tones, 80 ms gaps)
  ringback         440 + 480 Hz, 2 s on / 4 s off (North America) or 400 + 450 Hz double ring (UK)
  busy             480 + 620 Hz, 0.5 s on / 0.5 s off
  dial_tone        350 + 440 Hz continuous
  hold_music       synthetic chords and a melody (sine partials with decays)
  mulaw_hiss       low-level noise quantised by G.711 μ-law (the idle-channel pattern)
  clicks           impulses and crackle over near-silence
  pink_noise       1/f noise at -40 dBFS

Every clip goes through G.711 μ-law like the demo corpus (except digital silence, which μ-law
keeps at zero). Writes DIR/wav/KIND_NN.wav (8 kHz, 16-bit) and DIR/nonspeech.jsonl, a source/target
manifest whose transcripts are empty (the truth of non-speech):
  {"key": ..., "source": "wav/...", "target": "", "kind": ...}

usage: scripts/make_nonspeech.py DIR [--per-kind 4] [--seconds 5.5] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile

from nano8k import channel

RATE = 8000
DTMF = {"1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "4": (770, 1209), "5": (770, 1336), "6": (770, 1477),
        "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "*": (941, 1209), "0": (941, 1336), "#": (941, 1477)}


def level(x: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x ** 2))) or 1.0
    return x * (10 ** (dbfs / 20) / rms)


def tones(t: np.ndarray, freqs: tuple[float, ...]) -> np.ndarray:
    return sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)


def cadence(t: np.ndarray, on: float, off: float, phase: float = 0.0) -> np.ndarray:
    return (((t + phase) % (on + off)) < on).astype(float)


def make(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / RATE
    if kind == "digital_silence":
        return np.zeros(n)
    if kind == "comfort_noise":
        return level(rng.standard_normal(n), -65)
    if kind == "line_hiss":
        return level(channel.bandpass(rng.standard_normal(n), RATE, 300, 3400), -50)
    if kind == "mains_hum":
        base = rng.choice([50.0, 60.0])
        return level(sum(np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6)) / k for k in (1, 2, 3, 5)), -30)
    if kind == "dtmf":
        x = np.zeros(n)
        at = int(rng.uniform(0.1, 0.4) * RATE)
        while at < n:
            low, high = DTMF[rng.choice(list(DTMF))]
            length = int(rng.uniform(0.08, 0.12) * RATE)
            seg = t[: min(length, n - at)]
            x[at:at + len(seg)] = tones(seg, (low, high))
            at += length + int(rng.uniform(0.08, 0.3) * RATE)
        return level(x, -18) * (x != 0) if x.any() else x
    if kind == "ringback":
        if rng.random() < 0.5:
            return level(tones(t, (440, 480)) * cadence(t, 2.0, 4.0, rng.uniform(0, 6)), -20)
        return level(tones(t, (400, 450)) * cadence(t % 3.0, 0.4, 0.2) * cadence(t, 1.2, 1.8, rng.uniform(0, 3)), -20)
    if kind == "busy":
        return level(tones(t, (480, 620)) * cadence(t, 0.5, 0.5, rng.uniform(0, 1)), -20)
    if kind == "dial_tone":
        return level(tones(t, (350, 440)), -20)
    if kind == "hold_music":
        x = np.zeros(n)
        beat = rng.uniform(0.25, 0.45)
        root = rng.uniform(196, 294)
        scale = [0, 2, 4, 5, 7, 9, 11, 12]
        for i, start in enumerate(np.arange(0, n / RATE, beat)):
            a = int(start * RATE)
            seg = t[: n - a]
            decay = np.exp(-seg / rng.uniform(0.2, 0.6))
            note = root * 2 ** (scale[rng.integers(len(scale))] / 12)
            x[a:] += np.sin(2 * np.pi * 2 * note * seg) * decay * 0.6
            if i % 4 == 0:
                x[a:] += sum(np.sin(2 * np.pi * root * 2 ** (s / 12) * seg) for s in (0, 4, 7)) * decay * 0.3
        return level(channel.bandpass(x, RATE, 300, 3400), -22)
    if kind == "mulaw_hiss":
        return level(rng.standard_normal(n), -58)
    if kind == "clicks":
        x = level(rng.standard_normal(n), -70)
        for at in rng.integers(0, n - 40, size=int(rng.integers(3, 12))):
            x[at:at + rng.integers(2, 30)] += rng.uniform(-0.5, 0.5)
        return x
    if kind == "pink_noise":
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1 / RATE)
        spectrum[1:] /= np.sqrt(freqs[1:])
        spectrum[0] = 0
        return level(np.fft.irfft(spectrum, n), -40)
    raise ValueError(kind)


KINDS = ("digital_silence", "comfort_noise", "line_hiss", "mains_hum", "dtmf", "ringback", "busy", "dial_tone",
         "hold_music", "mulaw_hiss", "clicks", "pink_noise")


def write(out: Path, per_kind: int, seconds: float, seed: int) -> Path:
    (out / "wav").mkdir(parents=True, exist_ok=True)
    lines = []
    for k, kind in enumerate(KINDS):
        for i in range(per_kind):
            rng = np.random.default_rng([seed, k, i])
            n = int(seconds * rng.uniform(0.6, 1.4) * RATE)
            x = np.clip(make(kind, n, rng), -1, 1 - 2 ** -15)
            pcm = channel.float_to_pcm16(x)
            if kind != "digital_silence":
                pcm = channel.mulaw_decode(channel.mulaw_encode(pcm))
            name = f"wav/{kind}_{i:02d}.wav"
            soundfile.write(out / name, pcm, RATE, subtype="PCM_16")
            lines.append({"key": f"{kind}_{i:02d}", "source": name, "target": "", "kind": kind})
    manifest = out / "nonspeech.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-kind", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    manifest = write(args.out, args.per_kind, args.seconds, args.seed)
    print(manifest)


if __name__ == "__main__":
    main()
