#!/usr/bin/env python3
"""Learning benchmark: the demo's recipe (scripts/demo.py, every step the real command line) trained
from scratch on data/ivr's training voices, then measured on what training never heard, condition
by condition (scripts/conditions.py: seen voices, unseen voices of the training engines, an unseen
engine, digit-by-digit delivery with pauses, a noisy line, non-speech, a real person's recorded
digits), each way of demo.DECODINGS side by side: greedy, strategy=joint, and joint with the
training transcripts' words as its lexicon.

`--minutes M` is the longer recipe: the from-scratch stage trains until M minutes have passed
(then it is stopped as a user would stop it, with Ctrl-C: the trainer checkpoints and the best
model by validation CER goes on to stage 1). `--run DIR` measures a finished demo directory again.

Prints one JSON object:

    {"recipe": {"epochs" | "minutes"}, "wall_s", "train_s",
     "curve": [{"epoch", "wall_s", "val_cer", "val_wer", "val_ctc_cer"}],
     "conditions": {"greedy": {CONDITION: {"cer", "wer", "ctc_cer", ...}}, "joint": {...}, "joint+lexicon": {...}},
     "left_out": {CONDITION: why}, "targets": {...}}

usage: scripts/bench_learn.py [--out runs/bench-learn] [--epochs 36 | --minutes 60] [--run DIR] [--json FILE]
This is a benchmark (run by hand, quoted in the README), not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import demo  # noqa: E402  (the demo's recipe, measured)

# the targets for the demo's model (CER; non-speech: characters a minute)
TARGETS = {"unseen_voices": 0.15, "unseen_engine": 0.30, "pauses": 0.30, "noisy_line": 0.40, "non_speech": 1.0,
           "real_voice": 0.45}


def curve(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{"epoch": r["epoch"], "wall_s": r["wall_s"], "val_cer": round(r["val_cer"], 4),
             "val_wer": round(r["val_wer"], 4), "val_ctc_cer": round(r.get("val_ctc_cer", float("nan")), 4)}
            for r in rows if r["split"] == "valid"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench-learn")
    recipe = ap.add_mutually_exclusive_group()
    recipe.add_argument("--epochs", type=int, default=demo.EPOCHS, help="epochs of the from-scratch stage (the demo's)")
    recipe.add_argument("--minutes", type=float, help="train the from-scratch stage for this long instead")
    ap.add_argument("--run", type=Path, help="a finished demo directory: measure it, train nothing")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()

    started = time.perf_counter()
    out = (args.run or args.out).resolve()
    if args.run is None:
        length = ["--minutes", str(args.minutes)] if args.minutes else ["--epochs", str(args.epochs)]
        subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--out", str(out), *length],
                       check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    else:
        demo.decode_conditions(out, out / "stage1")
    measured = json.loads((out / "conditions.json").read_text())
    scratch = json.loads((out / "from_scratch" / "summary.json").read_text())
    stage1 = json.loads((out / "stage1" / "summary.json").read_text())
    recipe = {"run": str(out)} if args.run else {"minutes": args.minutes} if args.minutes else {"epochs": args.epochs}
    result = {"recipe": recipe,
              "model": demo.MODEL_SIZES, "wall_s": round(time.perf_counter() - started, 1),
              "train_s": round(scratch["wall_s"] + stage1["wall_s"], 1), "curve": curve(out / "from_scratch"),
              "conditions": measured["by_strategy"], "left_out": measured["left_out"], "targets": TARGETS}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
