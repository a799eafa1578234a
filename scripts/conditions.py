"""The held-out conditions a demo model is measured on (`scripts/demo.py` prints them,
`scripts/bench_learn.py` reports them): what training never heard, one shift at a time.

    seen_voices    data/ivr/dev     the training voices, new texts (the validation set)
    unseen_voices  data/ivr/voices  voices the training engines never trained on
    unseen_engine  data/ivr/test    pico, an engine never trained on
    pauses         data/ivr/pauses  digit strings read digit by digit with pauses
    noisy_line     data/ivr/dev through `nano8k data simulate --preset noisy_call` (seed 0)
    non_speech     scripts/make_nonspeech.py's twelve kinds, seed 0 (training's clips use seed 1):
                   characters a minute, not CER
    real_voice     a real person: Asterisk's recorded digits (Debian's asterisk-core-sounds-en-wav),
                   assembled into digit strings with pauses, through the same G.711 channel. Never
                   trained on and never used to choose a setting: the yardstick for real speech.
                   Left out (with the reason) where the package is not installed.

`build()` writes every condition into one source/target JSONL (keys `CONDITION/utt`), so that one
`nano8k decode` per strategy decodes them all; `measure()` scores its results per condition
(with nano8k's scorer), for the transcript and for the CTC branch's own hypothesis.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from nano8k import channel, data, score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import make_demo_corpus as corpus  # noqa: E402  (its telephone channel, trimming and mu-law writer)
import make_nonspeech  # noqa: E402

IVR = REPO / "data" / "ivr"
KALDI_CONDITIONS = {"seen_voices": IVR / "dev", "unseen_voices": IVR / "voices", "unseen_engine": IVR / "test",
                    "pauses": IVR / "pauses"}
CONDITIONS = (*KALDI_CONDITIONS, "noisy_line", "non_speech", "real_voice")
ASTERISK_DIGITS = Path("/usr/share/asterisk/sounds/en/digits")
REAL_VOICE_PACKAGE = "asterisk-core-sounds-en-wav"
REAL_VOICE_UTTERANCES = 60


def _kaldi_rows(directory: Path, condition: str) -> list[dict]:
    _, _, entries, _ = data.read_source(directory, need_text=False)  # nano8k's one reader: absolute paths
    return [{"key": f"{condition}/{e.key}", "source": e.audio, "target": e.text or ""} for e in entries]


def real_voice(out: Path) -> list[dict]:
    """Digit strings (3-5 digits) of Asterisk's recorded digits, 0.1-0.35 s apart, 0.2 s of
    silence around, through the corpus's telephone channel (make_demo_corpus.telephone_channel:
    band-pass, speech at -20 dBFS, G.711 mu-law at 8 kHz): a pure function of the index (sha256)."""
    words = corpus.DIGITS[:10]  # zero..nine: Asterisk records no "oh"
    recordings = {}
    for digit, word in enumerate(words):
        x, fs = sf.read(ASTERISK_DIGITS / f"{digit}.wav", dtype="float64")
        recordings[word] = corpus.trim_silence(channel.resample(x, fs, 8000), 8000, 0.0)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(REAL_VOICE_UTTERANCES):
        h = hashlib.sha256(f"real-voice-{i}".encode()).digest()
        said = [words[b % 10] for b in h[1:1 + 3 + h[0] % 3]]
        pieces = [np.zeros(1600)]
        for k, word in enumerate(said):
            if k:
                pieces.append(np.zeros(int(8000 * (0.1 + 0.25 * h[10 + k] / 255))))
            pieces.append(recordings[word])
        path = out / f"real-{i + 1:03d}.wav"
        corpus.write_mulaw_wav(path, corpus.telephone_channel(np.concatenate([*pieces, np.zeros(1600)]), 8000, -20.0))
        rows.append({"key": f"real_voice/real-{i + 1:03d}", "source": str(path), "target": " ".join(said)})
    return rows


def build(out: Path, nano8k: list[str]) -> tuple[Path, dict[str, str]]:
    """Every condition in one source/target JSONL under `out` (made afresh: all of it is derived);
    also {condition: why it is left out}."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rows = [row for condition, directory in KALDI_CONDITIONS.items() for row in _kaldi_rows(directory, condition)]
    noisy = out / "noisy_line"
    subprocess.run([*nano8k, "data", "simulate", str(KALDI_CONDITIONS["seen_voices"]), str(noisy), "--preset",
                    "noisy_call", "--seed", "0"], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    rows += _kaldi_rows(noisy, "noisy_line")
    manifest = make_nonspeech.write(out / "non_speech", per_kind=4, seconds=5.5, seed=0)
    for line in manifest.read_text().splitlines():
        clip = json.loads(line)
        rows.append({"key": f"non_speech/{clip['key']}", "source": str(manifest.parent / clip["source"]), "target": ""})
    left_out = {}
    if (ASTERISK_DIGITS / "0.wav").is_file():
        rows += real_voice(out / "real_voice")
    else:
        left_out["real_voice"] = f"{ASTERISK_DIGITS} not found (apt-get install {REAL_VOICE_PACKAGE})"
    path = out / "conditions.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path, left_out


def measure(results: Path) -> dict[str, dict]:
    """Per condition: CER and WER of the transcript and of the CTC branch's hypothesis; for
    non-speech, characters a minute instead."""
    records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    out: dict[str, dict] = {}
    for condition in CONDITIONS:
        mine = [r for r in records if r["key"].split("/", 1)[0] == condition and r.get("hyp") is not None]
        if not mine:
            continue
        scored = score.score_records(mine, lang="en")
        ctc = score.score_records([{**r, "hyp": r.get("ctc_hyp") or ""} for r in mine], lang="en")
        if condition == "non_speech":
            out[condition] = {"utterances": len(mine), "chars_per_minute": round(scored.non_speech()["chars_per_minute"], 2),
                              "ctc_chars_per_minute": round(ctc.non_speech()["chars_per_minute"], 2)}
        else:
            out[condition] = {"utterances": len(mine), "cer": round(scored.cer, 4), "wer": round(scored.wer, 4),
                              "ctc_cer": round(ctc.cer, 4), "ctc_wer": round(ctc.wer, 4)}
    return out


def table(by_strategy: dict[str, dict[str, dict]]) -> str:
    """The conditions as rows, each strategy's CER (non-speech: characters a minute) as columns."""
    strategies = list(by_strategy)
    lines = [f"  {'condition':<16}" + "".join(f"{s:>15}" for s in strategies) + f"{'CTC alone':>11}"]
    for condition in CONDITIONS:
        cells = [by_strategy[s].get(condition) for s in strategies]
        if not any(cells):
            continue
        if condition == "non_speech":
            row = [f"{c['chars_per_minute']:>11.1f}/min" if c else f"{'-':>15}" for c in cells]
            ctc = next(c for c in cells if c)["ctc_chars_per_minute"]
            lines.append(f"  {condition:<16}" + "".join(row) + f"{ctc:>7.1f}/min")
        else:
            row = [f"{c['cer']:>15.1%}" if c else f"{'-':>15}" for c in cells]
            lines.append(f"  {condition:<16}" + "".join(row) + f"{next(c for c in cells if c)['ctc_cer']:>11.1%}")
    return "\n".join(lines)
