#!/usr/bin/env python3
"""GPU readiness in one command (`make gpu-check`): every benchmark that needs a GPU, one JSON.

On one GPU, within about 8 minutes:

  bench_gpu     the released size, bf16: a training step of nano8k's objective against FunASR's
                own forward, and a real `funasr-train-ds` on the same batch (scripts/bench_gpu.py);
  bench_full    the released size through the real command line: `nano8k model random`, train a
                few steps of stage 1, validate, decode, export; wall time, peak RSS, peak GPU
                memory, checkpoint sizes, decode RTF (scripts/bench_full.py --device cuda);
  bench_decode  nano8k's batched decoding against FunASR's one-at-a-time generate, on the GPU, on
                bench_full's released-size model (scripts/bench_decode.py --device cuda);
  torchrun      when two GPUs are visible: `nano8k train nproc_per_node=2` (torchrun, two ranks)
                for an epoch of the tiny model.

`--device cpu` runs the same steps at small sizes (the tiny model; no funasr-train-ds, which
needs CUDA; no torchrun) so the script is known to work on a machine without a GPU. A step that
fails is reported with the end of its output; the others still run. Exit 1 when any step failed.

usage: scripts/gpu_check.py [--device cuda|cpu] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"


def log(message: str) -> None:
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


def step(name: str, cmd: list[str], timeout: int, json_out: bool = True) -> dict:
    log(f"{name}: {' '.join(cmd)}")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    except subprocess.TimeoutExpired:
        return {"ran": False, "error": f"timed out after {timeout} s"}
    wall = round(time.perf_counter() - started, 1)
    if proc.returncode != 0:
        return {"ran": False, "wall_s": wall, "error": (proc.stderr or proc.stdout)[-1500:]}
    report = json.loads(proc.stdout) if json_out else {}
    log(f"{name}: done in {wall} s")
    return {"ran": True, "wall_s": wall, **({"report": report} if json_out else {})}


def torchrun_step(workdir: Path, timeout: int) -> dict:
    """An epoch of the tiny model on two GPUs through nano8k's own torchrun re-execution."""
    nano8k = str(Path(sys.executable).with_name("nano8k"))
    model = workdir / "tiny"
    demo = REPO / "data" / "demo"
    made = subprocess.run([nano8k, "model", "tiny", str(model)], capture_output=True, text=True)
    if made.returncode != 0:
        return {"ran": False, "error": made.stderr[-1500:]}
    lists = {}
    for split in ("train", "dev"):
        kaldi = workdir / f"kaldi_{split}"
        kaldi.mkdir(parents=True, exist_ok=True)
        scp = [line.split(maxsplit=1) for line in (demo / split / "wav.scp").read_text().splitlines()[:16]]
        (kaldi / "wav.scp").write_text("".join(f"{k} {(demo / split / p).resolve()}\n" for k, p in scp))
        (kaldi / "text").write_text("\n".join((demo / split / "text").read_text().splitlines()[:16]) + "\n")
        lists[split] = workdir / f"{split}.jsonl"
        prepared = subprocess.run([nano8k, "data", "prepare", str(kaldi), str(lists[split]), "--model-dir", str(model)],
                                  capture_output=True, text=True)
        if prepared.returncode != 0:
            return {"ran": False, "error": prepared.stderr[-1500:]}
    run = workdir / "torchrun"
    result = step("torchrun", [nano8k, "train", "+stage=stage1", "+preset=tiny", f"model_dir={model}",
                               f"train_data_set_list={lists['train']}", f"valid_data_set_list={lists['dev']}",
                               "train_conf.max_epoch=1", "nproc_per_node=2", "device=cuda", f"hydra.run.dir={run}"],
                  timeout, json_out=False)
    if result["ran"]:
        result["summary"] = json.loads((run / "summary.json").read_text())
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the models and runs here")
    args = ap.parse_args()
    import torch

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA GPU here; `--device cpu` runs the same steps at small sizes")
    gpus = torch.cuda.device_count() if cuda else 0
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="nano8k-gpu-check-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    started = time.perf_counter()
    report: dict = {"check": "gpu_check", "device": args.device, "gpus": gpus,
                    "gpu": torch.cuda.get_device_name(0) if cuda else None}
    try:
        if cuda:
            report["bench_gpu"] = step("bench_gpu", [python, str(SCRIPTS / "bench_gpu.py"), "--device", "cuda",
                                                     "--steps", "10", "--warmup", "2", "--funasr-train-ds-timeout", "150",
                                                     "--workdir", str(workdir / "bench_gpu")], 330)
            report["bench_full"] = step("bench_full", [python, str(SCRIPTS / "bench_full.py"), "--device", "cuda",
                                                       "--workdir", str(workdir / "bench_full"), "--keep"], 300)
            model = workdir / "bench_full" / "model"
            report["bench_decode"] = step("bench_decode", [
                python, str(SCRIPTS / "bench_decode.py"), "--device", "cuda", "--model-dir", str(model),
                "--utterances", "32", "--runs", "2", "--max-new-tokens", "16"], 240) if (model / "model.pt").is_file() \
                else {"ran": False, "error": "bench_full wrote no model"}
            report["torchrun"] = torchrun_step(workdir / "torchrun", 180) if gpus >= 2 else \
                {"ran": False, "note": f"{gpus} GPU visible: the 2-process torchrun step needs two"}
        else:
            report["bench_gpu"] = step("bench_gpu", [python, str(SCRIPTS / "bench_gpu.py"), "--device", "cpu", "--tiny",
                                                     "--steps", "2", "--workdir", str(workdir / "bench_gpu")], 300)
            report["bench_full"] = step("bench_full", [python, str(SCRIPTS / "bench_full.py"), "--device", "cpu",
                                                       "--size", "tiny", "--workdir", str(workdir / "bench_full")], 300)
            report["bench_decode"] = step("bench_decode", [python, str(SCRIPTS / "bench_decode.py"), "--device", "cpu",
                                                           "--utterances", "16", "--runs", "1",
                                                           "--batch-sizes", "16"], 300)
            report["torchrun"] = {"ran": False, "note": "CPU: the 2-process torchrun step needs two GPUs"}
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    report["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__}
    failed = [name for name in ("bench_gpu", "bench_full", "bench_decode")
              if not report[name].get("ran")] + (["torchrun"] if gpus >= 2 and not report["torchrun"]["ran"] else [])
    report["failed"] = failed
    print(json.dumps(report, indent=2))
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
