"""`nano8k train` end to end on the tiny model and the bundled corpus: real subprocesses, real FunASR."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.funasr  # builds or trains a real FunASR model: not in `make test-fast`
import yaml

from helpers import run_cli, tiny_corpus

import torch  # noqa: E402

STAGE_POLICY = {  # module -> trains?
    "stage1": {"audio_encoder": True, "audio_adaptor": False, "ctc_decoder": False, "ctc": False, "llm": False},
    "config_8k_telephone": {"audio_encoder": True, "audio_adaptor": False, "ctc_decoder": True, "ctc": True,
                            "llm": False},
    "stage2_adapter_align": {"audio_encoder": False, "audio_adaptor": True, "ctc_decoder": True, "ctc": True,
                             "llm": False},
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_model) -> dict:
    return tiny_corpus(tmp_path_factory.mktemp("trainer"), train=16, dev=4, model_dir=tiny_model)


def train(corpus: dict, run_dir: Path, stage: str, *extra: str):
    return run_cli("train", f"+stage={stage}", "+preset=tiny", f"model_dir={corpus['model_dir']}",
                   f"train_data_set_list={corpus['train']}", f"valid_data_set_list={corpus['dev']}",
                   "train_conf.max_epoch=1", "scheduler_conf.warmup_steps=2", f"hydra.run.dir={run_dir}", *extra,
                   timeout=300)


def weights(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state.get("state_dict", state)


def module(key: str) -> str:
    return key.split(".", 1)[0]


@pytest.mark.parametrize("stage", sorted(STAGE_POLICY))
def test_frozen_tensors_stay_bit_identical_and_trainable_ones_move(corpus, tmp_path, stage):
    run = tmp_path / stage
    # keep every tensor in the checkpoint (the LLM is excluded by default) so all can be compared
    result = train(corpus, run, stage, "train_conf.effective_save_name_excludes=null")
    assert result.code == 0, result.output
    before, after = weights(corpus["model_dir"] / "model.pt"), weights(run / "model.pt")
    assert set(after) == set(before)
    for key, start in before.items():
        trains = STAGE_POLICY[stage][module(key)]
        same = torch.equal(start, after[key])
        assert same is not trains, f"{stage}: {key} {'did not change' if trains else 'changed'}"
    table = [line.split("\t") for line in (run / "params.tsv").read_text().splitlines()[1:]]
    trainable = {row[0]: int(row[2]) for row in table}
    for name, trains in STAGE_POLICY[stage].items():
        assert (trainable[name] > 0) is trains, (name, trainable)


def test_run_directory_and_stage_chaining(corpus, tmp_path):
    stage1 = tmp_path / "stage1"
    first = train(corpus, stage1, "stage1", "train_conf.avg_nbest_model=1")
    assert first.code == 0, first.output
    for name in ("config.yaml", "params.tsv", "train.log", "metrics.jsonl", "summary.json", "model.pt",
                 "model.pt.ep1", "model.pt.best", "model.pt.avg1"):
        assert (stage1 / name).is_file(), name
    assert list((stage1 / "tensorboard").glob("events.out.tfevents.*"))
    assert not list(stage1.glob(".*.tmp*")), "a temporary checkpoint was left behind"
    assert yaml.safe_load((stage1 / "config.yaml").read_text())["frontend_conf"]["fs"] == 8000
    summary = json.loads((stage1 / "summary.json").read_text())
    assert summary["steps"] > 0 and summary["averaged_model"].endswith("model.pt.avg1")
    assert summary["best_val_loss"] is not None and len(summary["epochs_log"]) == 1
    assert "llm." not in "".join(weights(stage1 / "model.pt.avg1"))  # effective_save_name_excludes: [llm.]
    assert "audio_encoder" in first.stderr and "trainable" in first.stderr  # the parameter table is shown

    telephone = tmp_path / "telephone"
    second = train(corpus, telephone, "config_8k_telephone", f"init_param={stage1}",
                   "train_conf.effective_save_name_excludes=null", "train_conf.max_epoch=1")
    assert second.code == 0, second.output
    # the LLM came from the base model (stage1 saved none), never from a random init
    base, chained = weights(corpus["model_dir"] / "model.pt"), weights(telephone / "model.pt")
    assert all(torch.equal(base[k], chained[k]) for k in base if k.startswith("llm."))
    log = (telephone / "train.log").read_text()
    assert str(stage1 / "model.pt.avg1") in log


def test_loading_a_run_directory_restores_the_llm_from_base(corpus, tmp_path):
    from omegaconf import OmegaConf

    from nano8k import config, model

    run = tmp_path / "run"
    assert train(corpus, run, "stage1", "train_conf.avg_nbest_model=1").code == 0
    settings = OmegaConf.to_container(config.compose("train", ["+stage=config_8k_telephone", "+preset=tiny",
                                                               f"model_dir={corpus['model_dir']}"]), resolve=True)
    built = model.build(settings, init_param=str(run))
    state = built.model.state_dict()
    averaged, base = weights(run / "model.pt.avg1"), weights(corpus["model_dir"] / "model.pt")
    assert built.loaded_from == [str(corpus["model_dir"] / "model.pt"), str(run / "model.pt.avg1")]
    assert all(torch.equal(state[k], v) for k, v in averaged.items())
    assert all(torch.equal(state[k], v) for k, v in base.items() if k.startswith("llm."))


# Resuming (mid-epoch, after kill -9, SIGTERM, damaged checkpoints): tests/test_faults.py.


@pytest.mark.slow  # an optional integration (nano8k[wandb]): make test-all
def test_wandb_gets_the_same_numbers_as_metrics_jsonl(corpus, tmp_path):
    run = tmp_path / "run"
    result = run_cli("train", "+stage=stage1", "+preset=tiny", f"model_dir={corpus['model_dir']}",
                     f"train_data_set_list={corpus['train']}", f"valid_data_set_list={corpus['dev']}",
                     "train_conf.max_epoch=1", "+train_conf.use_wandb=true", "+train_conf.wandb_project=telephone",
                     "+train_conf.wandb_token=SECRET-KEY", f"hydra.run.dir={run}",
                     env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"}, timeout=300)
    assert result.code == 0, result.output
    offline = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1
    recorded = offline[0].read_bytes()  # W&B's offline record file: the logged values are in it as JSON text
    for record in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()):
        key = "loss" if record["split"] == "train" else "val_loss"
        assert f"{record['split']}/{key}".encode() in recorded and json.dumps(record[key]).encode() in recorded
    assert b"telephone" in recorded  # the project
    assert b"SECRET-KEY" not in recorded  # the API key is not uploaded (config, command line)


def test_early_stopping_ends_the_run_when_validation_stops_improving(corpus, tmp_path):
    run = tmp_path / "run"
    # learning rate 1e-30: no update reaches float32's resolution, so the weights never move and the
    # validation loss after epoch 2 equals epoch 1's
    result = train(corpus, run, "stage1", "train_conf.max_epoch=5", "+train_conf.early_stopping_patience=1",
                   "optim_conf.lr=1e-30")
    assert result.code == 0, result.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["stopped_early"] is True
    assert "early stopping after epoch 2: the validation loss has not improved for 1 epochs" in (run / "train.log").read_text()
    assert "stopped early" in result.stderr
    again = train(corpus, run, "stage1", "train_conf.max_epoch=5", "+train_conf.early_stopping_patience=1",
                  "optim_conf.lr=1e-30")  # a finished run is left alone
    assert again.code == 0 and "finished: it stopped early after epoch 2" in again.stdout
    assert json.loads((run / "summary.json").read_text()) == summary


def test_samples_funasr_would_drop_stop_the_run_unless_allowed(corpus, tmp_path):
    lines = corpus["train"].read_text().splitlines()
    too_long = json.loads(lines[0])
    too_long["speech_length"] = 5000  # over the preset's max_token_length (2000): FunASR skips it silently
    empty = json.loads(lines[1])
    empty["text_length"] = 0
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("\n".join([json.dumps(too_long), json.dumps(empty), *lines[2:]]) + "\n")
    data = {**corpus, "train": manifest}
    refused = train(data, tmp_path / "refused", "stage1")
    assert refused.code == 2
    assert "FunASR would silently drop 2 of 16 samples" in refused.stderr and "allow_drops=true" in refused.stderr
    assert "Traceback" not in refused.output
    rejects = [json.loads(line) for line in (tmp_path / "refused" / "rejects.train.jsonl").read_text().splitlines()]
    assert {r["line"] for r in rejects} == {1, 2}
    allowed = train(data, tmp_path / "allowed", "stage1", "allow_drops=true")
    assert allowed.code == 0, allowed.output


@pytest.mark.parametrize("override,message", [
    ("device=cuda", "device=cuda: no CUDA GPU is available here"),
    ("train_data_set_list=/nonexistent/train.jsonl", "train_data_set_list: /nonexistent/train.jsonl not found"),
    ("model_dir=/nonexistent/model", "model_dir: directory not found: /nonexistent/model"),
    ("init_param=/nonexistent/run", "init_param: /nonexistent/run does not exist"),
])
def test_bad_input_is_one_line(corpus, tmp_path, override, message):
    if override.startswith("device=cuda") and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = train(corpus, tmp_path / "run", "stage1", override)
    assert result.code == 2
    assert message in result.stderr and "Traceback" not in result.output


def test_model_dir_missing_a_file_names_it(corpus, tmp_path):
    import shutil

    broken = tmp_path / "model"
    shutil.copytree(corpus["model_dir"], broken)
    (broken / "multilingual.tiktoken").unlink()
    result = run_cli("train", "+stage=stage1", "+preset=tiny", f"model_dir={broken}",
                     f"train_data_set_list={corpus['train']}", f"valid_data_set_list={corpus['dev']}",
                     f"hydra.run.dir={tmp_path / 'run'}", timeout=300)
    assert result.code == 2
    assert "ctc_tokenizer_conf.vocab_path: multilingual.tiktoken not found" in result.stderr


@pytest.mark.parametrize("kind,message", [("directory", "is a directory"), ("empty", "is empty"),
                                          ("blank", "is empty"), ("binary", "is a binary file")])
def test_a_data_list_that_cannot_be_one_is_named_before_the_model_build(corpus, tmp_path, kind, message):
    path = tmp_path / "train.jsonl"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes({"empty": b"", "blank": b"\n \n", "binary": b"\x00\x01 not text"}[kind])
    result = train({**corpus, "train": path}, tmp_path / "run", "stage1")
    assert result.code == 2 and "Traceback" not in result.output
    assert result.stderr.splitlines() == [f"error: train_data_set_list: {path} {message}" + (
        f"; give the manifest file (e.g. {path / 'train.jsonl'})" if kind == "directory" else
        ", not a JSONL manifest or a list of manifests" if kind == "binary" else "")]
    assert not (tmp_path / "run" / "params.tsv").exists()  # no model was built


def test_unreadable_audio_is_reported_with_key_and_path(corpus, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....not a wave file")
    lines = corpus["train"].read_text().splitlines()
    first = json.loads(lines[0])
    original = first["messages"][1]["content"].split("!", 1)[1].split("<|endofspeech|>")[0]
    first["messages"][1]["content"] = first["messages"][1]["content"].replace(original, str(broken))
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    result = train({**corpus, "train": manifest}, tmp_path / "run", "stage1")
    assert result.code == 2 and "Traceback" not in result.output
    assert "FunASR would silently drop 1 of 16 samples" in result.stderr
    (reject,) = [json.loads(line) for line in (tmp_path / "run" / "rejects.train.jsonl").read_text().splitlines()]
    assert reject["key"] == first["key"] and reject["line"] == 1 and str(broken) in json.dumps(reject)


def test_architecture_mismatch_is_caught_before_loading(corpus, tmp_path):
    result = run_cli("train", "+stage=stage1", f"model_dir={corpus['model_dir']}",  # no +preset=tiny
                     f"train_data_set_list={corpus['train']}", f"valid_data_set_list={corpus['dev']}",
                     f"hydra.run.dir={tmp_path / 'run'}", timeout=300)
    assert result.code == 2 and "Traceback" not in result.output
    assert "architecture mismatch: audio_encoder_conf.output_size is 64 there but 512 here" in result.stderr
    assert "(a tiny model needs +preset=tiny)" in result.stderr


def test_a_warmup_then_linear_decay_schedule_trains(corpus, tmp_path):
    """funasr_gaps 27: FunASR's custom_lambdalr fails to construct on this torch; nano8k's rises
    over warmup_steps, then falls linearly to 0 at total_steps (the lr logged at every step)."""
    run = tmp_path / "decay"
    result = train(corpus, run, "stage1", "scheduler=custom_lambdalr", "scheduler_conf.warmup_steps=2",
                   "++scheduler_conf.total_steps=6", "train_conf.log_interval=1", "optim_conf.lr=1e-3",
                   "dataset_conf.batch_size_sample_max=3")
    assert result.code == 0, result.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lr = {row["step"]: row["lr"] for row in rows if row["split"] == "train"}
    assert len(lr) >= 6, lr  # 16 utterances, at most 2 a batch: more steps than the schedule
    # the lr logged after optimiser step s is the next step's: (s + 1) / 2 in the warmup, then
    # 1 - (s + 1 - 2) / (6 - 2), then 0
    expected = {1: 1e-3, 2: 0.75e-3, 3: 0.5e-3, 4: 0.25e-3, 5: 0.0}
    for step, value in expected.items():
        assert lr[step] == pytest.approx(value, abs=1e-9), (step, lr)
    assert all(value == 0.0 for step, value in lr.items() if step >= 5)


def test_a_scheduler_key_the_scheduler_does_not_take_is_one_line(corpus, tmp_path):
    result = train(corpus, tmp_path / "run", "stage1", "++scheduler_conf.total_steps=6")
    assert result.code == 2 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1].startswith("error: scheduler_conf: scheduler warmuplr rejects it:"), result.stderr
