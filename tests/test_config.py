"""Composition of the shipped configs, their fidelity to the seed, and strict validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from nano8k import config
from nano8k.errors import UserError

from helpers import NANO8K, SHARED, invoke

STAGES = ("config_8k_telephone", "stage1_encoder_adapt", "stage1")


def composed(*overrides: str) -> dict:
    return OmegaConf.to_container(config.compose("train", overrides), resolve=True)


def flat(node: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in node.items():
        if isinstance(v, dict) and v:
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# --- composition ---------------------------------------------------------------------------


def test_primary_config_is_the_pretrained_base_only():
    cfg = composed()
    assert cfg["model"] == "FunASRNano" and cfg["frontend_conf"]["fs"] == 16000
    assert cfg["specaug"] is None and cfg["train_conf"]["use_deepspeed"] is True
    assert cfg["model_dir"] == "FunAudioLLM/Fun-ASR-Nano-2512" and cfg["init_param"] is None
    assert cfg["dataset_conf"]["audio_adaptor_downsample_rate"] == 1  # interpolation resolved


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_composes_and_validates(stage):
    cfg = composed(f"+stage={stage}")
    assert config.problems(cfg) == []
    assert cfg["audio_encoder_conf"]["freeze"] is False and cfg["specaug"] == "SpecAugLFR"


def test_stage1_alias_is_identical_to_stage1_encoder_adapt():
    assert composed("+stage=stage1") == composed("+stage=stage1_encoder_adapt")
    only = lambda s: OmegaConf.to_container(config.compose("train", [f"+stage={s}"], stage_only=True))  # noqa: E731
    assert only("stage1") == only("stage1_encoder_adapt")


def test_stage_files_hold_only_the_keys_the_recipe_sets():
    telephone = flat(OmegaConf.to_container(config.compose("train", ["+stage=config_8k_telephone"], stage_only=True)))
    stage1 = flat(OmegaConf.to_container(config.compose("train", ["+stage=stage1"], stage_only=True)))
    # OMITTED in the seed for both stages: inherited, never restated
    for omitted in ("audio_encoder_conf.attention_heads", "audio_encoder_conf.num_blocks", "llm_conf.use_lora",
                    "detach_ctc_decoder", "ctc_conf.ctc_type", "frontend_conf.cmvn_file", "train_conf.resume",
                    "train_conf.effective_save_name_excludes", "enable_tf32", "init_param", "output_dir"):
        assert omitted not in telephone and omitted not in stage1, omitted
    # OMITTED for one stage only
    assert "train_conf.validate_interval" not in telephone and stage1["train_conf.validate_interval"] == 1000
    assert "llm_conf.llm_dtype" not in stage1 and telephone["llm_conf.llm_dtype"] == "bf16"
    assert "optim_conf.betas" not in stage1 and telephone["optim_conf.betas"] == [0.9, 0.999]
    assert "dataset_conf.prompt_classes" not in telephone and stage1["dataset_conf.prompt_classes"] == "MultiContextPrompt"


def test_later_overrides_win_over_the_stage():
    cfg = composed("+stage=stage1", "optim_conf.lr=3e-4", "dataset_conf.num_workers=2")
    assert cfg["optim_conf"]["lr"] == 3e-4 and cfg["dataset_conf"]["num_workers"] == 2


def test_schema_covers_every_shipped_key():
    keys = set(config.field_effects("train"))
    for stage in ("", *STAGES):
        for dotted in flat(composed(*([f"+stage={stage}"] if stage else []))):
            if not dotted.startswith("llm_conf.lora_conf.") or dotted.count(".") == 2:
                assert dotted in keys, dotted


def test_decode_config_composes_and_validates():
    cfg = OmegaConf.to_container(config.compose("decode"), resolve=True)
    assert config.problems(cfg, app="decode") == []


# --- fidelity to the seed's 393 values ------------------------------------------------------


def test_seed_fidelity_393_of_393(seed_spec):
    tool = SHARED / "tools" / "check_config_fidelity.py"
    proc = subprocess.run([sys.executable, str(tool), str(seed_spec), str(NANO8K)], capture_output=True, text=True,
                          timeout=300)
    assert proc.stdout.strip().splitlines()[-1] == "matched 393/393 seed config values", proc.stdout + proc.stderr
    assert proc.returncode == 0


# --- validation: typos and wrong types --------------------------------------------------------

# (override, the line nano8k must print)
BAD_OVERRIDES = [
    ("optim_conf.lrr=1e-4", "optim_conf.lrr: unknown key; did you mean optim_conf.lr?"),
    ("+optim_conf.lrr=1e-4", "optim_conf.lrr: unknown key; did you mean optim_conf.lr?"),
    ("++optim_conf.lrr=1e-4", "optim_conf.lrr: unknown key; did you mean optim_conf.lr?"),
    ("train_conf.max_epooch=3", "train_conf.max_epooch: unknown key; did you mean train_conf.max_epoch?"),
    ("++train_conf.keep_nbest_model=5", "train_conf.keep_nbest_model: unknown key; did you mean train_conf.keep_nbest_models?"),
    ("+audio_encoder_conf.frezee=false", "audio_encoder_conf.frezee: unknown key; did you mean audio_encoder_conf.freeze?"),
    ("++specaug_conf.num_freq_masks=2", "specaug_conf.num_freq_masks: unknown key; did you mean specaug_conf.num_freq_mask?"),
    ("+dataset_conf.batch_size_sampel_max=3",
     "dataset_conf.batch_size_sampel_max: unknown key; did you mean dataset_conf.batch_size_sample_max?"),
    ("++dataset_conf.prompt_conf.use_hotword=false",
     "dataset_conf.prompt_conf.use_hotword: unknown key; did you mean dataset_conf.prompt_conf.use_hotwords?"),
    ("+ctc_wieght=0.3", "ctc_wieght: unknown key; did you mean ctc_weight?"),
    ("++detach_ctc=false", "detach_ctc: unknown key; did you mean detach_ctc_decoder?"),
    ("++lsm_weight=0.2", "lsm_weight: unknown key; did you mean model_conf.lsm_weight?"),
    ("lr=1e-4", "lr: unknown key; did you mean optim_conf.lr?"),
    ("+init_params=x.pt", "init_params: unknown key; did you mean init_param?"),
    ("++tokenizer_conf.unk_sym=x", "tokenizer_conf.unk_sym: unknown key; did you mean tokenizer_conf.unk_symbol?"),
    ("+train_conf.use_deepseed=false", "train_conf.use_deepseed: unknown key; did you mean train_conf.use_deepspeed?"),
    ("~optim_conf.lrr", "optim_conf.lrr: unknown key; did you mean optim_conf.lr?"),
    ("optim_conf.lr=abc", "optim_conf.lr: expected float, got str 'abc'"),
    ("train_conf.max_epoch=1.5", "train_conf.max_epoch: expected int, got float 1.5"),
    ("audio_encoder_conf.freeze=maybe", "audio_encoder_conf.freeze: expected bool, got str 'maybe'"),
    ("llm_conf.freeze=1", "llm_conf.freeze: expected bool, got int 1"),
    ("frontend_conf.fs=8k", "frontend_conf.fs: expected int, got str '8k'"),
    ("dataset_conf.shuffle=yes", "dataset_conf.shuffle: expected bool, got str 'yes'"),
    ("++specaug_conf.freq_mask_width_range=5", "specaug_conf.freq_mask_width_range: expected list of int, got int 5"),
    ("++specaug_conf.freq_mask_width_range=[0,a]",
     "specaug_conf.freq_mask_width_range: expected list of int, got list [0, 'a']"),
    ("+optim_conf.betas=0.9", "optim_conf.betas: expected list of float, got float 0.9"),
    ("model_dir=[a,b]", "model_dir: expected str, got list ['a', 'b']"),
    ("model_dir=123", "model_dir: expected str, got int 123 (quote it to pass a string: model_dir='123')"),
    ("optim_conf.lr=1e-4,oops", "optim_conf.lr: expected float, got str 'oops'"),
    ("++ctc_conf.blank_id=3", "ctc_conf.blank_id: not accepted: FunASR passes it to CTC() twice, so any value crashes; the blank is ctc_vocab_size - 1"),
    ("+stage=stage9", "stage: unknown stage 'stage9'; available: config_8k_telephone, from_scratch, stage1, stage1_encoder_adapt, stage2_adapter_align, stage3_lora_domain"),
    # ranges: FunASR takes any number, and fails hours later (or never says)
    ("train_conf.max_epoch=0", "train_conf.max_epoch: 0 is out of range: at least 1"),
    ("train_conf.max_epoch=-1", "train_conf.max_epoch: -1 is out of range: at least 1"),
    ("train_conf.accum_grad=0", "train_conf.accum_grad: 0 is out of range: at least 1"),
    ("train_conf.log_interval=0", "train_conf.log_interval: 0 is out of range: at least 1"),
    ("train_conf.validate_interval=-1", "train_conf.validate_interval: -1 is out of range: at least 1"),
    ("train_conf.save_checkpoint_interval=0", "train_conf.save_checkpoint_interval: 0 is out of range: at least 1"),
    ("train_conf.keep_nbest_models=0", "train_conf.keep_nbest_models: 0 is out of range: at least 1"),
    ("train_conf.avg_nbest_model=0", "train_conf.avg_nbest_model: 0 is out of range: at least 1"),
    ("optim_conf.lr=0", "optim_conf.lr: 0 is out of range: must be above 0"),
    ("optim_conf.lr=-1e-4", "optim_conf.lr: -0.0001 is out of range: must be above 0"),
    ("dataset_conf.batch_size=0", "dataset_conf.batch_size: 0 is out of range: at least 1"),
    ("++dataset_conf.batch_size_sample_max=0", "dataset_conf.batch_size_sample_max: 0 is out of range: at least 1"),
    ("dataset_conf.num_workers=-1", "dataset_conf.num_workers: -1 is out of range: at least 0"),
    ("nproc_per_node=0", "nproc_per_node: 0 is out of range: at least 1"),
    ("valid_decode.batch_size=0", "valid_decode.batch_size: 0 is out of range: at least 1"),
    ("valid_decode.strategy=beam", "valid_decode.strategy: 'beam' is not one of greedy, speculative, joint, ctc"),
    ("valid_decode.joint.ctc_weight=2", "valid_decode.joint.ctc_weight: 2 is out of range: at most 1"),
    ("max_nonfinite_steps=-1", "max_nonfinite_steps: -1 is out of range: at least 0"),
    ("optim_conf.lr=1e-4,0", "optim_conf.lr: 0 is out of range: must be above 0"),
]


@pytest.mark.parametrize("override,message", BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_bad_override_is_one_line_naming_the_key(override, message):
    result = invoke("train", "--cfg", "job", override)
    assert result.code != 0
    assert result.stderr.splitlines() == [f"error: {message}"]
    assert "Traceback" not in result.output and result.stdout == ""


def test_at_least_twenty_typos_and_wrong_types():
    assert len(BAD_OVERRIDES) >= 20


def test_warmup_of_no_steps_is_refused_before_anything_is_built(tmp_path):
    result = invoke("train", "+stage=stage1", "scheduler_conf.warmup_steps=0", "dry_run=true", f"hydra.run.dir={tmp_path}")
    assert result.code == 2
    assert result.stderr.splitlines() == ["error: scheduler_conf.warmup_steps: 0 is out of range: at least 1 under "
                                          "scheduler=warmuplr (FunASR's WarmupLR divides by it)"]


@pytest.mark.parametrize("override", ["++optim_conf.lrr=1e-4", "++train_conf.max_epoch=x", "+model_conf.lsm_wieght=0.2"])
def test_validate_catches_what_composition_lets_through(override):
    # Hydra itself adds `+`/`++` keys without a word; the task function's validate() must refuse them.
    with pytest.raises(UserError) as err:
        config.validate(config.compose("train", ["+stage=stage1", override]))
    assert str(err.value).split(":")[0] == override.lstrip("+").split("=")[0]


def test_typo_inside_a_user_stage_file_is_rejected_at_run_time(tmp_path):
    (tmp_path / "stage").mkdir()
    (tmp_path / "stage" / "mine.yaml").write_text("# @package _global_\noptim_conf:\n  lrr: 1.0\n")
    result = invoke("train", "-cd", str(tmp_path), "+stage=mine", "dry_run=true", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.code == 2
    assert "error: optim_conf.lrr: unknown key; did you mean optim_conf.lr?" in result.stderr


@pytest.mark.parametrize("override", ["optim_conf.lr=2e-4", "+optim_conf.eps=1e-8", "++specaug_conf.time_warp_window=5",
                                      "train_conf.effective_save_name_excludes=null", "dataset_conf.batch_size=2000",
                                      "optim_conf.lr=1", "+dataset_conf.preprocessor_noise_conf.snr=5", "frontend_conf.cmvn_file=am.mvn"])
def test_valid_overrides_pass(override):
    result = invoke("train", "--cfg", "job", "+stage=stage1", override)
    assert result.code == 0, result.output


def test_a_sweep_of_quoted_strings_is_checked_by_value():
    # each point's value is the string it quotes (Hydra parses it as a QuotedString)
    config.check_overrides("train", ["-m", "model_dir='models/a b','models/c'", "excludes=['llm.','ctc.'],['llm.']"])
    with pytest.raises(UserError, match=r"^optim_conf.lr: expected float, got str"):
        config.check_overrides("train", ["-m", "optim_conf.lr='1e-4',2e-4"])


def test_missing_training_data_names_the_key(tmp_path):
    result = invoke("train", "+stage=stage1", f"hydra.run.dir={tmp_path}")
    assert result.code == 2
    assert result.stderr.strip() == "error: train_data_set_list: required for training; set train_data_set_list=PATH"


def test_dry_run_writes_the_resolved_config(tmp_path):
    result = invoke("train", "+stage=stage1", "optim_conf.lr=3e-4", "dry_run=true", f"hydra.run.dir={tmp_path}")
    assert result.code == 0, result.output
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert written["optim_conf"]["lr"] == 3e-4 and written["frontend_conf"]["fs"] == 8000
    assert written["dataset_conf"]["audio_adaptor_downsample_rate"] == 1


@pytest.mark.parametrize("stage,trains", [
    ("stage2_adapter_align", {"audio_encoder_conf": False, "audio_adaptor_conf": True, "llm_conf": False}),
    ("stage3_lora_domain", {"audio_encoder_conf": False, "audio_adaptor_conf": False, "llm_conf": False}),
])
def test_stages_2_and_3_compose_validate_and_hold_the_seed_values(stage, trains):
    cfg = composed(f"+stage={stage}")
    assert config.problems(cfg) == []
    for section, trained in trains.items():
        assert cfg[section]["freeze"] is (not trained), section
    values = flat(cfg)
    if stage == "stage2_adapter_align":  # seed-system.md §2.4
        expected = {"optim_conf.lr": 5e-5, "scheduler_conf.warmup_steps": 500, "train_conf.max_epoch": 10,
                    "train_conf.avg_nbest_model": 3, "specaug_conf.time_mask_width_range": [0, 50],
                    "specaug_conf.num_time_mask": 2, "dataset_conf.retry": 20, "dataset_conf.data_split_num": 1,
                    "llm_conf.use_lora": False}
    else:  # §2.5
        expected = {"optim_conf.lr": 1e-5, "scheduler_conf.warmup_steps": 100, "train_conf.max_epoch": 20,
                    "train_conf.accum_grad": 2, "train_conf.avg_nbest_model": 5, "train_conf.validate_interval": 200,
                    "train_conf.save_checkpoint_interval": 200, "dataset_conf.batch_size": 4096,
                    "dataset_conf.sort_size": 512, "llm_conf.use_lora": True, "llm_conf.lora_conf.r": 16,
                    "llm_conf.lora_conf.lora_alpha": 32, "llm_conf.lora_conf.lora_dropout": 0.05,
                    "llm_conf.lora_conf.target_modules": ["q_proj", "v_proj", "k_proj", "o_proj"],
                    "llm_conf.lora_conf.freeze_lora": False, "train_conf.use_lora": True}
    assert {k: values[k] for k in expected} == expected


def test_funasr_defaults_are_where_the_table_says():
    """Each of config.FUNASR_DEFAULTS is FunASR's own: the value appears on the line of FunASR's
    source the table names (a FunASR upgrade that moves or changes one fails here)."""
    import importlib.util

    root = Path(importlib.util.find_spec("funasr").origin).parent
    for key, (value, where) in config.FUNASR_DEFAULTS.items():
        path, line = where.rsplit(":", 1)
        text = (root / path).read_text(encoding="utf-8").splitlines()[int(line) - 1]
        leaf = key.rsplit(".", 1)[-1]
        assert leaf in text and (f'"{value}"' in text if isinstance(value, str) else str(value) in text), (key, text)
    assert config.setting({"train_conf": {"max_epoch": 3}}, "train_conf.max_epoch") == 3
    assert config.setting({"train_conf": {"max_epoch": None}}, "train_conf.max_epoch") == 100
    assert config.setting({}, "optim") == "adam"
