"""Runs that cannot learn are named before training starts (one warning line each, dry runs too),
and a best-model criterion nano8k cannot compute is refused: `nano8k train ... dry_run=true`."""

from __future__ import annotations

import json

import pytest

from helpers import run_cli


@pytest.fixture
def setup(tmp_path) -> dict:
    """A tiny model directory's marker (what `nano8k model tiny` writes beside the model) and a
    manifest of 90 utterances of 2.2 s (speech_length in 10 ms frames, as `data prepare` writes)."""
    model_dir = tmp_path / "tiny"
    model_dir.mkdir()
    (model_dir / "nano8k_tiny.json").write_text(json.dumps({"weights": "random", "config": {}}))
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps({"key": f"u{i}", "speech_length": 218, "text_length": 9}) + "\n"
                                for i in range(90)))
    return {"model_dir": model_dir, "manifest": manifest, "run": tmp_path / "run"}


def dry_run(setup: dict, *overrides: str):
    return run_cli("train", *overrides, "+preset=tiny", f"model_dir={setup['model_dir']}",
                   f"train_data_set_list={setup['manifest']}", f"valid_data_set_list={setup['manifest']}",
                   "dry_run=true", f"hydra.run.dir={setup['run']}")


def warnings(result) -> list[str]:
    return [line.split("this run cannot learn as configured: ", 1)[1] for line in result.output.splitlines()
            if "this run cannot learn as configured: " in line]


def test_stage1_on_a_random_tiny_model_is_named_three_times(setup):
    result = dry_run(setup, "+stage=stage1", "train_conf.max_epoch=3")
    assert result.code == 0, result.output
    found = warnings(result)
    assert len(found) == 3, found
    llm, warmup, specaug = found
    assert llm.startswith("llm_conf.freeze: the LLM is frozen and randomly initialised")
    assert warmup.startswith("scheduler_conf.warmup_steps: 1000 is longer than the whole run")
    assert "train_conf.max_epoch 3" in warmup and "% of optim_conf.lr" in warmup
    assert specaug.startswith("specaug_conf.time_mask_width_range: 2 time masks of up to 49 LFR frames")


def test_a_list_file_of_manifests_is_read_like_its_manifests(setup, tmp_path):
    """train_data_set_list may name a FunASR list file (one manifest a line, data_split): the run's
    length is counted over the manifests it names, as the trainer reads them."""
    listed = tmp_path / "train.list"
    listed.write_text(f"{setup['manifest']}\n\n{setup['manifest']}\n")
    direct = warnings(dry_run(setup, "+stage=stage1", "train_conf.max_epoch=3"))
    via_list = warnings(dry_run({**setup, "manifest": listed}, "+stage=stage1", "train_conf.max_epoch=3"))
    assert len(direct) == len(via_list) == 3, via_list
    assert direct[1].startswith("scheduler_conf.warmup_steps: 1000 is longer than the whole run") and direct[1] != via_list[1]
    assert via_list[1].startswith("scheduler_conf.warmup_steps: 1000 is longer than the whole run")
    assert direct[2] == via_list[2]  # the same lengths: the same SpecAug warning


def test_a_run_that_can_learn_gets_no_warning(setup):
    result = dry_run(setup, "+stage=from_scratch", "scheduler_conf.warmup_steps=20")
    assert result.code == 0, result.output
    assert warnings(result) == []


def test_starting_from_a_run_that_trained_the_llm_is_fine(setup, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "config.yaml").write_text(f"model_dir: {setup['model_dir']}\nllm_conf:\n  freeze: false\n")
    result = dry_run(setup, "+stage=stage1", f"init_param={scratch}", "scheduler_conf.warmup_steps=20",
                     "specaug_conf.time_mask_width_range=[0,5]")
    assert result.code == 0, result.output
    assert warnings(result) == []


def test_everything_frozen_is_named(setup):
    result = dry_run(setup, "+stage=stage1", "audio_encoder_conf.freeze=true", "scheduler_conf.warmup_steps=20",
                     "specaug=null")
    assert [w.split(":")[-1].strip() for w in warnings(result)] == ["every module is frozen, nothing can learn"]


def test_a_decay_that_ends_long_before_the_run_is_named(setup):
    # 90 utterances in batches of about 6: ~15 steps an epoch, 20 epochs
    result = dry_run(setup, "+stage=from_scratch", "scheduler=custom_lambdalr", "scheduler_conf.warmup_steps=20",
                     "++scheduler_conf.total_steps=100")
    assert result.code == 0, result.output
    [decay] = warnings(result)
    assert decay.startswith("scheduler_conf.total_steps: the learning rate reaches 0 at step 100, well before the end")
    result = dry_run(setup, "+stage=from_scratch", "scheduler=custom_lambdalr", "scheduler_conf.warmup_steps=20",
                     "++scheduler_conf.total_steps=400")
    assert result.code == 0, result.output
    assert warnings(result) == []


@pytest.mark.parametrize("overrides, message", [
    (["scheduler=custom_lambdalr", "scheduler_conf.warmup_steps=20", "++scheduler_conf.total_steps=20"],
     "scheduler_conf.total_steps: 20 is out of range: above warmup_steps (20)"),
    (["++train_conf.avg_keep_nbest_models_type=bleu"], "train_conf.avg_keep_nbest_models_type: 'bleu' is not a criterion"),
    (["++train_conf.avg_keep_nbest_models_type=cer", "valid_decode.max_utterances=0"],
     "train_conf.avg_keep_nbest_models_type: cer needs validation decoding"),
    (["valid_decode.batch_size=0"], "valid_decode.batch_size: 0 is out of range"),
])
def test_a_criterion_that_cannot_be_computed_is_refused(setup, overrides, message):
    result = dry_run(setup, "+stage=stage1", *overrides)
    assert result.code == 2 and "Traceback" not in result.output
    assert f"error: {message}" in result.stderr, result.stderr


def test_training_refuses_the_frame_rate_switch_funasr_ignores_in_training(setup):
    result = dry_run(setup, "+stage=stage1", "audio_adaptor_conf.use_low_frame_rate=false")
    assert result.code == 2 and "Traceback" not in result.output
    assert "error: audio_adaptor_conf.use_low_frame_rate: false is applied by FunASR's inference only" in result.stderr
