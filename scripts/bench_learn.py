#!/usr/bin/env python3
"""Learning benchmark: held-out CER of a tiny Fun-ASR-Nano trained from scratch, against training
wall time, on the bundled IVR corpus (data/ivr: 1,620 train / 180 dev utterances); then the same
model decoded with and without training's dither, on the corpus as it is (digital silence between
words) and through a noisy telephone line (`nano8k data simulate --preset noisy_call`).

Every step is the real command line. Prints one JSON object:

    {"corpus", "model": {sizes}, "epochs", "train_s",
     "curve": [{"epoch", "wall_s", "val_cer", "val_wer", "val_ctc_cer"}],
     "minutes_to": {"cer_50", "cer_35", "cer_25"},
     "dither": {"clean": {"training_dither": CER, "no_dither": CER}, "noisy_line": {...}},
     "dev_cer_final_model"}

usage: scripts/bench_learn.py [--out runs/bench-learn] [--epochs 15] [--threads 2] [--json FILE]
This is a benchmark (run by hand, quoted in the README), not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NANO8K = [sys.executable, "-m", "nano8k"]
sys.path.insert(0, str(REPO / "scripts"))
from demo import MODEL_SIZES, SCRATCH_OVERRIDES  # noqa: E402  (the demo's recipe, measured)


def run(args: list[str], **kwargs) -> None:
    proc = subprocess.run([*NANO8K, *args], cwd=REPO, capture_output=True, text=True, **kwargs)
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and args[0] != "data"):
        sys.exit(f"bench_learn: `nano8k {' '.join(args)}` failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def decoded_cer(checkpoint: Path, data: Path, out: Path, *extra: str) -> float:
    run(["decode", f"checkpoint={checkpoint}", f"input={data}", "batch_size=16", f"hydra.run.dir={out}", *extra])
    return json.loads((out / "metrics.json").read_text())["cer"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench-learn")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    model_dir = out / "model"
    run(["model", "tiny", str(model_dir), *MODEL_SIZES])
    for split in ("train", "dev"):
        run(["data", "prepare", f"data/ivr/{split}", str(out / f"{split}.jsonl"), "--model-dir", str(model_dir), "-j", "2"])
    started = time.perf_counter()
    scratch = out / "from_scratch"
    run(["train", "+stage=from_scratch", "+preset=tiny", f"model_dir={model_dir}",
         f"train_data_set_list={out / 'train.jsonl'}", f"valid_data_set_list={out / 'dev.jsonl'}",
         f"train_conf.max_epoch={args.epochs}", *SCRATCH_OVERRIDES, f"hydra.run.dir={scratch}"])
    train_s = time.perf_counter() - started
    valid = [json.loads(line) for line in (scratch / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in valid if r["split"] == "valid"]
    curve = [{"epoch": r["epoch"], "wall_s": r["wall_s"], "val_cer": round(r["val_cer"], 4),
              "val_wer": round(r["val_wer"], 4), "val_ctc_cer": round(r.get("val_ctc_cer", float("nan")), 4)}
             for r in valid]
    minutes_to = {f"cer_{int(100 * t)}": next((round(r["wall_s"] / 60, 2) for r in curve if r["val_cer"] <= t), None)
                  for t in (0.5, 0.35, 0.25)}

    # dither: the trained model on the dev set as it is (digital silence) and through a noisy line
    noisy = out / "dev-noisy"
    run(["data", "simulate", "data/ivr/dev", str(noisy), "--preset", "noisy_call"])  # a Kaldi dir, as the input
    dither = {}
    for name, data in (("clean", out / "dev.jsonl"), ("noisy_line", noisy)):
        dither[name] = {"training_dither": decoded_cer(scratch, data, out / f"decode-{name}"),
                        "no_dither": decoded_cer(scratch, data, out / f"decode-{name}-nodither", "dither=0")}
    result = {"corpus": "data/ivr", "model": MODEL_SIZES, "epochs": args.epochs, "threads": args.threads,
              "train_s": round(train_s, 1), "curve": curve, "minutes_to": minutes_to, "dither": dither,
              "dev_cer_final_model": dither["clean"]["training_dither"]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
