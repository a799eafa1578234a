"""`nano8k pipeline`: the three stages trained one after another on the tiny model, each from the
previous stage's averaged model, interrupted by a real SIGINT in stage 2 and rerun (stage 1
skipped, stage 2 resumed, stage 3 trained); and the mistakes it refuses before anything trains."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import NANO8K, run_cli, tiny_corpus

pytestmark = pytest.mark.funasr
import torch  # noqa: E402

STAGES = ("stage1_encoder_adapt", "stage2_adapter_align", "stage3_lora_domain")
EVERY_STAGE = "overrides=['+preset=tiny','train_conf.max_epoch=1','valid_decode.max_utterances=0'," \
              "'scheduler_conf.warmup_steps=2','train_conf.accum_grad=1']"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_model) -> dict:
    return tiny_corpus(tmp_path_factory.mktemp("pipeline"), train=8, dev=2, model_dir=tiny_model)


def arguments(corpus: dict, pipe: Path, *extra: str) -> list[str]:
    calls = "stage_conf.stage3_lora_domain"
    return ["pipeline", f"model_dir={corpus['model_dir']}", f"train_data_set_list={corpus['train']}",
            f"valid_data_set_list={corpus['dev']}", f"{calls}.train_data_set_list={corpus['train']}",
            f"{calls}.valid_data_set_list={corpus['dev']}", EVERY_STAGE, f"hydra.run.dir={pipe}", *extra]


def weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def averaged(run: Path) -> Path:
    return Path(json.loads((run / "summary.json").read_text())["averaged_model"])


def test_three_stages_interrupted_in_stage_2_then_rerun(corpus, tmp_path):
    pipe = tmp_path / "pipe"
    first, second, third = (pipe / name for name in STAGES)
    longer = "stage_conf.stage2_adapter_align.overrides=['train_conf.max_epoch=3','train_conf.avg_nbest_model=2']"
    command = [str(NANO8K), *arguments(corpus, pipe, longer)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and not (second / "model.pt.ep1").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # to the pipeline only, as a terminal's Ctrl-C: it passes it on once
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    stopped = json.loads((second / "status.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["signal"] == "SIGINT", stopped  # a checkpoint, not an abort
    assert "aborted at once" not in err and "Traceback" not in err
    assert 1 <= torch.load(second / "model.pt", map_location="cpu", weights_only=True)["epoch"] < 3
    status = json.loads((pipe / "status.json").read_text())
    assert status["status"] == "interrupted" and status["stage"] == "stage2_adapter_align", status
    assert err.strip().splitlines()[-1].startswith("stage stage2_adapter_align was interrupted")
    assert json.loads((first / "status.json").read_text())["status"] == "completed" and not third.exists()
    first_model = (first / "model.pt").stat().st_mtime_ns

    rerun = run_cli(*arguments(corpus, pipe, longer), timeout=600)
    assert rerun.code == 0, rerun.output[-3000:]
    outcomes = [r["outcome"] for r in json.loads((pipe / "pipeline.json").read_text())]
    assert outcomes == ["finished earlier", "resumed", "trained"]
    assert (first / "model.pt").stat().st_mtime_ns == first_model  # stage 1 was not trained again
    assert "resumed from" in (second / "train.log").read_text()
    assert json.loads((second / "summary.json").read_text())["epochs"] == 3
    for row in ("stage1_encoder_adapt", "stage2_adapter_align", "stage3_lora_domain"):
        assert row in rerun.stderr.split(f"pipeline {pipe}")[-1]

    # each stage started from the one before: what a stage froze is what the previous one averaged
    s1, s2, s3 = weights(averaged(first)), weights(averaged(second)), weights(third / "model.pt")
    encoder = [k for k in s1 if k.startswith("audio_encoder.")]
    adaptor = [k for k in s2 if k.startswith("audio_adaptor.")]
    assert encoder and adaptor
    assert all(torch.equal(s2[k], s1[k]) for k in encoder)  # stage 2 keeps stage 1's encoder
    assert all(torch.equal(s3[k], s2[k]) for k in adaptor)  # stage 3 keeps stage 2's adaptor
    original = weights(corpus["model_dir"] / "model.pt")
    assert not all(torch.equal(s2[k], original[k]) for k in adaptor)  # and stage 2 did train it
    assert any(k.endswith(".lora_A") for k in s3)
    assert yaml_value(third / "config.yaml", "init_param") == str(second)
    lora = [line.split("\t") for line in (third / "params.tsv").read_text().splitlines() if line.startswith("total")]
    assert json.loads((pipe / "pipeline.json").read_text())[2]["trainable"] == int(lora[0][2])


def yaml_value(path: Path, key: str):
    import yaml

    return yaml.safe_load(path.read_text())[key]


@pytest.mark.parametrize("extra, message", [
    (["stage_conf.stage3_lora_domain.train_data_set_list=null"],
     "stage stage3_lora_domain: stage_conf.stage3_lora_domain.train_data_set_list is not set; give the stage's "
     "training manifest"),
    (["stage_conf.stage3_lora_domain.valid_data_set_list=/nowhere/calls_dev.jsonl"],
     "stage stage3_lora_domain: valid_data_set_list: /nowhere/calls_dev.jsonl not found"),
    (["stage_conf.stage3_lora_domain.overrides=['optim_conf.lrr=1e-5']"],
     "stage stage3_lora_domain: optim_conf.lrr: unknown key; did you mean optim_conf.lr?"),
    (["stage_conf.stage3_lora_domain.overrides=['llm_conf.lora_conf.task_type=SEQ_CLS']"],
     "stage stage3_lora_domain: llm_conf.lora_conf.task_type"),
    (["stages=[stage1_encoder_adapt,stage9]"], "stages: unknown stage 'stage9'; available: "),
    (["stage_conf.stage1_encoder_adapt.train_list=x"],
     "stage_conf.stage1_encoder_adapt.train_list: unknown key"),
])
def test_a_stage_at_fault_is_one_line_before_anything_trains(corpus, tmp_path, extra, message):
    pipe = tmp_path / "pipe"
    result = run_cli(*arguments(corpus, pipe, *extra))
    assert result.code == 2, result.output
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert not any((pipe / name).exists() for name in STAGES)  # no stage started


def test_dry_run_prints_each_stage_s_command(corpus, tmp_path):
    pipe = tmp_path / "pipe"
    result = run_cli(*arguments(corpus, pipe, "dry_run=true"))
    assert result.code == 0, result.output
    lines = [line for line in result.output.splitlines() if "nano8k train +stage=" in line]
    assert [line.split("+stage=")[1].split()[0] for line in lines] == list(STAGES)
    assert f"init_param='{pipe / STAGES[0]}'" in lines[1] and f"init_param='{pipe / STAGES[1]}'" in lines[2]
    assert not any((pipe / name).exists() for name in STAGES)


@pytest.mark.slow  # Hydra's sweep machinery, as `train -m` uses it (test_sweep.py); make test-all runs it
def test_a_sweep_runs_one_pipeline_per_point(corpus, tmp_path):
    sweep = tmp_path / "sweep"
    args = [a for a in arguments(corpus, tmp_path / "unused", "dry_run=true") if not a.startswith("hydra.run.dir=")]
    result = run_cli("pipeline", "-m", *args[1:], "overrides=['+preset=tiny','optim_conf.lr=1e-4'],['+preset=tiny']",
                     f"hydra.sweep.dir={sweep}", timeout=300)
    assert result.code == 0, result.output
    assert "sweep: 2 jobs, 2 completed, 0 failed" in result.stderr
    logs = [(sweep / job / "pipeline.log").read_text() for job in ("0", "1")]
    assert "optim_conf.lr=1e-4" in logs[0] and "optim_conf.lr" not in logs[1]
    assert f"init_param='{sweep / '0' / STAGES[0]}'" in logs[0]  # each point's stages in its own directory
