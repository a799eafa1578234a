"""Scale-out on CPU: multirun with the basic and joblib launchers, failure isolation, sweep
summary, DDP over gloo with two processes (stopped by SIGTERM and resumed), and the
launcher/process-count errors."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from helpers import NANO8K, run_cli

pytestmark = pytest.mark.funasr  # trains the tiny model


@pytest.fixture
def tiny(small_corpus) -> dict:
    return small_corpus


def common(tiny: dict) -> list[str]:
    return ["+stage=stage1", "+preset=tiny", f"model_dir={tiny['model_dir']}", f"valid_data_set_list={tiny['dev']}",
            "train_conf.max_epoch=1", "scheduler_conf.warmup_steps=2"]


def test_a_failing_job_does_not_stop_the_sweep_and_the_summary_marks_it(tiny, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("train", "-m", *common(tiny), f"train_data_set_list=/missing/train.jsonl,{tiny['train']}",
                     f"hydra.sweep.dir={sweep}", timeout=300)
    assert result.code == 1  # a job failed: the sweep says so
    assert "sweep: 2 jobs, 1 completed, 1 failed" in result.stderr
    statuses = {job: json.loads((sweep / job / "status.json").read_text()) for job in ("0", "1")}
    assert statuses["0"]["status"] == "failed" and "/missing/train.jsonl not found" in statuses["0"]["error"]
    assert statuses["1"]["status"] == "completed" and (sweep / "1" / "model.pt.best").is_file()

    summary = run_cli("sweep", "summary", str(sweep), "--sort", "best_val_loss")
    assert summary.code == 0, summary.output
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [r["job"] for r in rows] == ["1", "0"]  # completed (with a loss) first
    assert rows[0]["status"] == "completed" and float(rows[0]["best_val_loss"]) > 0 and int(rows[0]["steps"]) > 0
    assert rows[1]["status"] == "failed" and "not found" in rows[1]["error"]
    assert "failed" in summary.stdout and "every job:" in summary.stdout


def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "+stage=stage1",
                     "optim_conf.lr=1e-4,5e-5", "dry_run=true", f"hydra.sweep.dir={sweep}")
    assert result.code == 0, result.output
    lrs = sorted(yaml.safe_load((sweep / j / "config.yaml").read_text())["optim_conf"]["lr"] for j in ("0", "1"))
    assert lrs == [5e-5, 1e-4]
    assert all(json.loads((sweep / j / "status.json").read_text())["status"] == "completed" for j in ("0", "1"))


def test_ddp_two_cpu_processes_one_run_directory_stopped_and_resumed(tiny, tmp_path):
    run = tmp_path / "run"
    # nproc_per_node re-executes the job under torchrun --standalone (gloo on CPU)
    args = ["train", *common(tiny), f"train_data_set_list={tiny['train']}", "nproc_per_node=2", "device=cpu",
            "train_conf.effective_save_name_excludes=null", "train_conf.validate_interval=1",
            "++dataset_conf.batch_size_sample_max=2", f"hydra.run.dir={run}"]
    # SIGTERM to the job, as SLURM sends it: passed on to torchrun and its ranks, which stop at the same step
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen([str(NANO8K), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 240
    while proc.poll() is None and not (run / "model.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 143, err
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted" and status["signal"] == "SIGTERM" and status["step"] >= 1
    assert err.splitlines()[-1].startswith("interrupted by SIGTERM at ")

    result = run_cli(*args, timeout=300)  # the same command resumes
    assert result.code == 0, result.output
    log = (run / "train.log").read_text()
    assert "parameters identical across 2 ranks: yes" in log
    assert log.count("resumed from") == 1  # one rank writes the log
    checkpoints = {p.name for p in run.glob("model.pt*")}
    assert {"model.pt", "model.pt.avg3", "model.pt.best", "model.pt.ep1"} <= checkpoints
    assert not list(run.glob("*.rank*")) and not list(run.glob(".*.tmp*")) and not (run / ".nano8k.lock").exists()
    assert json.loads((run / "status.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("args,message", [
    (["nproc_per_node=2", "device=cuda"], "nproc_per_node=2: only 0 GPU(s) visible"),
    (["nproc_per_node=2"], "nproc_per_node=2: no GPU here; set device=cpu to run 2 CPU processes (gloo)"),
])
def test_more_processes_than_gpus_is_a_clear_error(tiny, tmp_path, args, message):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = run_cli("train", *common(tiny), f"train_data_set_list={tiny['train']}", *args, f"hydra.run.dir={tmp_path}")
    assert result.code == 2 and result.stderr.strip().startswith(f"error: {message}")


# (the submitit launcher is a dev dependency: tests/test_faults.py runs it)
@pytest.mark.parametrize("launcher,extra", [("ray", "ray"), ("ray_aws", "ray")])
def test_a_launcher_whose_plugin_is_missing_names_the_extra(launcher, extra):
    import importlib.util

    module = "hydra_plugins.hydra_ray_launcher" if extra == "ray" else "hydra_plugins.hydra_submitit_launcher"
    if importlib.util.find_spec(module):
        pytest.skip(f"{module} is installed")
    result = run_cli("train", "-m", f"hydra/launcher={launcher}", "+stage=stage1", "dry_run=true")
    assert result.code == 2
    assert result.stderr.strip() == f"error: hydra/launcher={launcher} needs its Hydra plugin: pip install 'nano8k[{extra}]'"
