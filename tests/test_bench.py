"""scripts/bench_gpu.py runs on CPU with --tiny and prints a complete JSON report.

(scripts/bench_train.py is a by-hand benchmark of several minutes and is not run here.)
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from helpers import REPO

pytestmark = pytest.mark.funasr

STEP_FIELDS = ("step_s_median", "step_s_min", "step_s_max", "step_s_mean", "samples_per_s", "audio_s_per_s",
               "peak_mem_gib")


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.mark.timeout(120)
def test_bench_gpu_tiny_cpu_reports_finite_positive_numbers(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_gpu.py"), "--tiny", "--device", "cpu", "--steps", "2",
         "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)

    assert report["settings"]["size"] == "tiny"
    assert report["settings"]["device"] == "cpu"
    assert report["settings"]["steps"] == 2
    assert report["settings"]["autocast"] is None  # bf16 autocast only on CUDA
    assert report["model"]["params_total"] > 0
    assert report["batch"]["speech"][0] == report["settings"]["batch"]

    assert set(report["modes"]) == {"funasr", "nano8k", "nano8k_no_ctc", "nano8k_no_ctc_no_specaug"}
    for mode, row in report["modes"].items():
        for key in STEP_FIELDS:
            assert _positive(row[key]), f"{mode}.{key} = {row[key]!r}"
        assert row["steps_timed"] == 2
        assert row["finite_loss"] is True
        assert row["trainable_params"] > 0
    # stage1: the frozen, detached CTC branch cannot learn, so training steps do not compute its loss
    assert "loss_ctc" not in report["modes"]["nano8k"]["stats_last"]
    assert "loss_ctc" not in report["modes"]["funasr"]["stats_last"]
    assert "loss_ctc" not in report["modes"]["nano8k_no_ctc"]["stats_last"]
    assert _positive(report["ratio_nano8k_over_funasr_samples_per_s"])
    assert isinstance(report["ctc_report_cost_pct_of_nano8k_step"], (int, float))

    # funasr-train-ds forces CUDA: on CPU it is skipped, with a note
    assert report["funasr_train_ds"]["ran"] is False
    assert "CPU" in report["funasr_train_ds"]["note"]


def _script(name: str, *args: str, timeout: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_bench_full_runs_the_released_size_through_the_cli_on_cpu():
    """About 5 minutes and 9 GB: `nano8k model random --size released`, train, decode, export."""
    from nano8k import random_model

    report = _script("bench_full.py", "--device", "cpu", timeout=2400)
    assert report["parameters"] == random_model.RELEASED_PARAMETERS and report["llm_dtype"] == "fp32"
    steps = report["steps"]
    assert steps["train"]["optimizer_steps"] >= 2 and steps["decode"]["utterances"] == 4
    for step in ("model_random", "train", "decode", "export"):
        assert _positive(steps[step]["wall_s"]) and _positive(steps[step]["peak_rss_gb"]), step
    sizes = steps["train"]["checkpoints_gb"]
    assert {"model.pt", "model.pt.ep1", "model.pt.best", "model.pt.avg3"} <= set(sizes)
    # only model.pt carries the encoder's optimizer state
    assert sizes["model.pt.ep1"] == sizes["model.pt.best"] < sizes["model.pt"] / 2
    assert steps["export"]["checkpoints_gb"]["model.pt"] > sizes["model.pt.avg3"]  # every tensor, the LLM included


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_at_small_sizes():
    report = _script("gpu_check.py", "--device", "cpu", timeout=900)
    assert report["failed"] == [] and report["torchrun"]["ran"] is False
    assert report["bench_full"]["report"]["steps"]["decode"]["utterances"] == 4
    assert report["bench_gpu"]["report"]["settings"]["size"] == "tiny"
    assert report["bench_decode"]["report"]["device"] == "cpu"
