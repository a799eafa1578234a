#!/usr/bin/env python3
"""`make demo`: nano8k's main job on embedded defaults, offline, on CPU.

1. writes a tiny Fun-ASR-Nano (same classes as the released model, random weights);
2. prepares the bundled telephone corpus (data/demo: 100 espeak-ng utterances through a G.711
   channel at 8 kHz) into the Nano JSONL FunASR reads;
3. trains `+stage=stage1` (native 8 kHz features, encoder only);
4. trains `+stage=config_8k_telephone` starting from stage 1's averaged model (16 kHz front end,
   encoder + CTC branch);
5. decodes the dev set with the final model and scores it (corpus CER/WER: the tiny model's
   weights are random, so expect ~100%: the point is the pipeline, not the numbers);
6. prints the parameter tables, the loss curves and where everything went.

Every step is the real command line, run as a subprocess, exactly as a user would type it.
usage: scripts/demo.py [--out runs/demo] [--epochs 3]
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


def step(title: str, args: list[str]) -> None:
    print(f"\n==> {title}\n    nano8k {' '.join(args)}", flush=True)
    started = time.perf_counter()
    proc = subprocess.run([*NANO8K, *args], cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"demo: step failed ({title}), exit status {proc.returncode}")
    print(f"    ({time.perf_counter() - started:.1f}s)", flush=True)


def show_run(name: str, run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    curve = summary["loss_curve"]
    print(f"\n{name}: {run_dir}")
    print("  parameters (module, total, trainable):")
    for line in (run_dir / "params.tsv").read_text().splitlines()[1:]:
        module, total, trainable = line.split("\t")
        print(f"    {module:<14}{int(total):>12,}{int(trainable):>12,}")
    for row in summary["epochs_log"]:
        print(f"  epoch {row['epoch']}: train loss {row['train_loss']:.3f}, validation loss {row['val_loss']:.3f}, "
              f"accuracy {row['val_acc']:.3f}")
    if curve:
        print("  train loss (step:loss): " + " ".join(f"{p['step']}:{p['loss']:.1f}" for p in curve))
    print(f"  best validation loss {summary['best_val_loss']:.4f}, accuracy {summary['best_val_acc']:.4f}; "
          f"{summary['steps']} steps, {summary['wall_s']:.0f}s")
    print(f"  averaged model: {summary['averaged_model']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "demo")
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    started = time.perf_counter()

    model_dir = out / "tiny-model"
    step("a tiny Fun-ASR-Nano (random weights)", ["model", "tiny", str(model_dir), "--seed", "0"])
    for split in ("train", "dev"):
        step(f"prepare the bundled {split} set", ["data", "prepare", f"data/demo/{split}", str(out / f"{split}.jsonl"),
                                                   "--model-dir", str(model_dir)])
    common = ["+preset=tiny", f"model_dir={model_dir}", f"train_data_set_list={out / 'train.jsonl'}",
              f"valid_data_set_list={out / 'dev.jsonl'}", f"train_conf.max_epoch={args.epochs}",
              "train_conf.log_interval=5", "train_conf.avg_nbest_model=2", "scheduler_conf.warmup_steps=10"]
    stage1, telephone = out / "stage1", out / "config_8k_telephone"
    step("stage 1: encoder adaptation on native 8 kHz features",
         ["train", "+stage=stage1", *common, f"hydra.run.dir={stage1}"])
    step("config_8k_telephone, starting from stage 1's averaged model",
         ["train", "+stage=config_8k_telephone", *common, f"init_param={stage1}", f"hydra.run.dir={telephone}"])

    decoded = out / "decode-dev"
    step("decode and score the dev set with the final model",
         ["decode", f"checkpoint={telephone}", "input=data/demo/dev", "batch_size=8", "max_new_tokens=16",
          f"hydra.run.dir={decoded}"])

    show_run("stage1", stage1)
    show_run("config_8k_telephone (from stage1)", telephone)
    metrics = json.loads((decoded / "metrics.json").read_text())
    print(f"\ndecode-dev: {decoded}\n  {metrics['utterances']} utterances, CER {metrics['cer']:.2%}, "
          f"WER {metrics['wer']:.2%}, RTF {metrics['rtf']:.3f} (random tiny weights: the numbers mean nothing)")
    print(f"\nEverything is under {out}: tiny-model/, train.jsonl, dev.jsonl, one run directory per stage "
          "(config.yaml, params.tsv, train.log, metrics.jsonl, tensorboard/, checkpoints model.pt*, summary.json) "
          "and decode-dev/ (results.jsonl, metrics.json).")
    print(f"demo finished in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
