#!/usr/bin/env python3
"""Start-up latency of the nano8k CLI (a benchmark printing JSON, not a timed test).

Measures the median wall time of `nano8k train --cfg job +stage=stage1` (target: <= 1.5 s on a
2-core machine), `nano8k --help` and `nano8k align`, and, as the peer in the same run, FunASR's own
`funasr-train --cfg job` on the same composed config (it imports torch and funasr first). Also what
every command that builds a model pays first: FunASR's `import funasr` (all of its modules) against
nano8k's import of the modules Fun-ASR-Nano needs (funasr_gaps.quiet_funasr_import).

usage: scripts/bench_cli.py [--runs 5] [--peer-runs 3] [--no-peer]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def timed(cmd: list[str], runs: int) -> dict:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-400:]}")
    return {"cmd": " ".join(Path(cmd[0]).name if i == 0 else c for i, c in enumerate(cmd)),
            "runs": runs, "median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--peer-runs", type=int, default=3)
    ap.add_argument("--no-peer", action="store_true")
    args = ap.parse_args()

    nano8k = str(BIN / "nano8k")
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "target_s": 1.5,
        "nano8k_train_cfg_job": timed([nano8k, "train", "--cfg", "job", "+stage=stage1"], args.runs),
        "nano8k_help": timed([nano8k, "--help"], args.runs),
        "nano8k_align": timed([nano8k, "align"], args.runs),
    }
    results["meets_target"] = results["nano8k_train_cfg_job"]["median_s"] <= results["target_s"]
    if not args.no_peer:
        with tempfile.TemporaryDirectory() as tmp:
            composed = subprocess.run([nano8k, "train", "--cfg", "job", "--resolve", "+stage=stage1"],
                                      check=True, capture_output=True, text=True).stdout
            Path(tmp, "stage1.yaml").write_text(composed)
            peer = timed([str(BIN / "funasr-train"), "--config-path", tmp, "--config-name", "stage1.yaml",
                          "--cfg", "job"], args.peer_runs)
        results["peer_funasr_train_cfg_job"] = peer
        results["speedup_vs_peer"] = round(peer["median_s"] / results["nano8k_train_cfg_job"]["median_s"], 1)
        python = sys.executable
        ours = timed([python, "-c", "from nano8k import funasr_gaps; funasr_gaps.quiet_funasr_import()"], args.peer_runs)
        full = timed([python, "-c", "import funasr"], args.peer_runs)
        results["funasr_import"] = {"nano8k": ours, "peer_import_funasr": full,
                                    "speedup_vs_peer": round(full["median_s"] / ours["median_s"], 1)}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
