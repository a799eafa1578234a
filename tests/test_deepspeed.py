"""DeepSpeed (train_conf.use_deepspeed) on CPU: DeepSpeed's CPU accelerator over gloo runs the same
engine code (ZeRO partitioning, its accumulation, clipping and checkpoints) as on GPUs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from helpers import run_cli
from nano8k import deepspeed_support
from nano8k.errors import UserError


def settings(**train_conf) -> dict:
    return {"train_conf": {"use_deepspeed": True, "accum_grad": 1, "grad_clip": 5.0, **train_conf},
            "optim": "adam", "optim_conf": {"lr": 5e-5}}


# -- the engine config -----------------------------------------------------------------------------


def test_presets_take_accumulation_clipping_and_precision_from_train_conf():
    ds = deepspeed_support.engine_config(settings(accum_grad=4, grad_clip=1.5, use_bf16=True), on_cuda=True,
                                         bf16_supported=True)
    assert ds["zero_optimization"]["stage"] == 1  # null deepspeed_config: zero1
    assert (ds["gradient_accumulation_steps"], ds["gradient_clipping"]) == (4, 1.5)
    assert ds["bf16"]["enabled"] is True and ds["fp16"]["enabled"] is False
    on_cpu = deepspeed_support.engine_config(settings(use_bf16=True, deepspeed_config="zero2"), on_cuda=False,
                                             bf16_supported=False)
    assert on_cpu["zero_optimization"]["stage"] == 2 and on_cpu["bf16"]["enabled"] is False


def test_a_json_value_that_contradicts_train_conf_wins_with_a_warning(tmp_path, caplog):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"gradient_accumulation_steps": 8, "gradient_clipping": "auto",
                                "optimizer": {"type": "AdamW", "params": {"lr": "auto", "weight_decay": 0.1}}}))
    with caplog.at_level(logging.WARNING, logger="nano8k.deepspeed_support"):
        ds = deepspeed_support.engine_config(settings(accum_grad=2, deepspeed_config=str(path)), False, False)
    assert ds["gradient_accumulation_steps"] == 8 and ds["gradient_clipping"] == 5.0
    assert ds["optimizer"]["params"] == {"lr": 5e-5, "weight_decay": 0.1}
    assert f"deepspeed_config {path} sets gradient_accumulation_steps=8; train_conf.accum_grad=2 is not used" in caplog.text
    assert "DeepSpeed builds the optimizer; optim=adam is not used" in caplog.text


@pytest.mark.parametrize("content,message", [
    (None, "ds.json not found (a JSON file, or a preset: zero1, zero2)"),
    ('{"zero_optimization": {"stage": 1},\n', "ds.json line 2 column 1: Expecting property name"),
    ('{"zero_optimization": {"stage": 3}}', "zero_optimization.stage=3: nano8k runs ZeRO stages 0-2"),
    ('{"scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": "auto"}}}',
     "cannot fill 'auto' for scheduler.params.warmup_num_steps"),
    ('[1, 2]', "must hold a JSON object"),
])
def test_bad_deepspeed_configs_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "ds.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError) as err:
        deepspeed_support.engine_config(settings(deepspeed_config=str(path)), False, False)
    assert str(err.value).startswith("deepspeed_config: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_bad_deepspeed_config_fails_before_any_process_starts(tmp_path):
    result = run_cli("train", "+stage=stage1", "train_conf.use_deepspeed=true", "train_conf.deepspeed_config=/missing/ds.json",
                     "nproc_per_node=2", "dry_run=true", f"hydra.run.dir={tmp_path}")
    assert result.code == 2
    assert result.stderr.strip() == "error: deepspeed_config: /missing/ds.json not found (a JSON file, or a preset: zero1, zero2)"


def test_an_unknown_preset_names_the_presets():
    with pytest.raises(UserError, match=r"'zero9' is neither a JSON file nor a nano8k preset \(zero1, zero2\)"):
        deepspeed_support.engine_config(settings(deepspeed_config="zero9"), False, False)


def test_without_deepspeed_installed_the_error_names_the_extra(tmp_path):
    blocker = tmp_path / "deepspeed"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('not installed here')\n")
    code = "from nano8k import deepspeed_support; deepspeed_support.require('cpu')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0
    assert "train_conf.use_deepspeed: true needs DeepSpeed: pip install 'nano8k[deepspeed]'" in proc.stderr


# -- training ------------------------------------------------------------------------------------


@pytest.fixture
def tiny(small_corpus) -> dict:
    return small_corpus


def train(tiny: dict, run, *args: str, timeout: int = 300):
    return run_cli("train", "+stage=stage1", "+preset=tiny", f"model_dir={tiny['model_dir']}",
                   f"train_data_set_list={tiny['train']}", f"valid_data_set_list={tiny['dev']}", "device=cpu",
                   "scheduler_conf.warmup_steps=2", "optim_conf.lr=1e-2", *args, f"hydra.run.dir={run}", timeout=timeout)


def losses(run) -> list[float]:
    return [r.get("loss", r.get("val_loss")) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


@pytest.mark.funasr
@pytest.mark.slow  # four training processes (~3 min on 2 cores): make test-all; zero2 below keeps DeepSpeed in make test
def test_zero1_trains_and_resumes_exactly_as_the_plain_loop(tiny, tmp_path):
    import torch

    plain, ds = tmp_path / "plain", tmp_path / "ds"
    # dither off: its generator starts over in a resumed process (test_faults); then a resumed run
    # is the uninterrupted one, and the plain loop can run straight through
    no_dither = "+frontend_conf.dither=0.0"
    assert train(tiny, plain, "train_conf.max_epoch=2", no_dither).code == 0
    for epochs in (1, 2):  # the second run resumes from the first's model.pt
        result = train(tiny, ds, f"train_conf.max_epoch={epochs}", "train_conf.use_deepspeed=true", no_dither)
        assert result.code == 0, result.output
    assert "resumed from" in (ds / "train.log").read_text() and "DeepSpeed: preset zero1, ZeRO stage 1" in (ds / "train.log").read_text()
    assert losses(ds) == pytest.approx(losses(plain), rel=1e-6)
    plain_ckpt, ds_ckpt = (torch.load(run / "model.pt", map_location="cpu", weights_only=False) for run in (plain, ds))
    assert ds_ckpt["state_dict"].keys() == plain_ckpt["state_dict"].keys()
    for key, value in plain_ckpt["state_dict"].items():
        assert torch.allclose(ds_ckpt["state_dict"][key], value, atol=1e-6, rtol=0), key
    # FunASR's checkpoint files; the partitioned optimizer in the one DeepSpeed state model.pt names
    assert ds_ckpt["deepspeed_state"] == "deepspeed/model.pt.ep2" and "optimizer" not in ds_ckpt
    assert sorted(p.name for p in (ds / "deepspeed").iterdir() if p.is_dir()) == ["model.pt.ep2"]

    mixed = train(tiny, plain, "train_conf.max_epoch=3", "train_conf.use_deepspeed=true", no_dither)  # before the build
    assert mixed.code == 2 and not (plain / "model.pt.ep3").exists()
    assert f"error: {plain / 'model.pt'}: written without DeepSpeed, so it resumes only with use_deepspeed=false" in mixed.stderr


@pytest.mark.funasr
def test_zero2_on_two_processes_keeps_ranks_identical_and_writes_one_set_of_checkpoints(tiny, tmp_path):
    run = tmp_path / "run"
    result = train(tiny, run, "train_conf.max_epoch=2", "train_conf.use_deepspeed=true", "train_conf.deepspeed_config=zero2",
                   "nproc_per_node=2", "train_conf.effective_save_name_excludes=null")
    assert result.code == 0, result.output
    log = (run / "train.log").read_text()
    assert "DeepSpeed: preset zero2, ZeRO stage 2" in log and "parameters identical across 2 ranks: yes" in log
    assert log.count("validation at step") == 2  # one rank writes the log
    assert sorted(p.name for p in run.glob("model.pt*")) == ["model.pt", "model.pt.avg3", "model.pt.best",
                                                            "model.pt.ep1", "model.pt.ep2"]
    state = run / "deepspeed" / "model.pt.ep2"
    assert sorted(p.name for p in state.glob("zero_pp_rank_*")) == ["zero_pp_rank_0_mp_rank_00_optim_states.pt",
                                                                   "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
