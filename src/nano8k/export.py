"""`nano8k export RUN OUT`: a trained run as a self-contained Fun-ASR-Nano model directory.

OUT holds what a released model directory holds, so FunASR (`AutoModel(model=OUT)`) and nano8k
(`nano8k decode model_dir=OUT`, or `init_param`/`model_dir` for further training) load it alone:

* `model.pt`: every tensor of the model (`{"state_dict": ...}`, as FunASR writes it): the base
  model's, the run's checkpoint over them (the one its best-model criterion chose, as decoding
  picks it), and LoRA adapters folded into the LLM's base weights in fp32 (funasr_gaps 23: W' =
  W + alpha/r * B @ A, then cast to W's dtype), so no adapter code is needed to run it;
* `config.yaml`: the run's resolved config with nano8k's own keys removed, LoRA switched off
  (folded), and the paths made relative to OUT;
* the LLM/tokenizer directory and the CTC vocabulary, copied from the run's model directory,
  plus its `configuration.json`;
* `export.json`: where it came from (run, checkpoint, nano8k and FunASR versions, adapters folded)
  and `trained_by_nano8k`, which makes `nano8k decode model_dir=OUT` prompt and dither as the
  run's training did (decoding.resolve_model), so OUT decodes exactly as RUN does.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from nano8k import config, decoding, funasr_gaps
from nano8k import model as nano_model
from nano8k.errors import UserError
from nano8k.files import atomic_path

log = logging.getLogger(__name__)

EXPORT_FILE = nano_model.EXPORT_FILE
CTC_VOCAB = "multilingual.tiktoken"
FORMATS = ("funasr", "hf")
# Why there is no Hugging Face export (checked against transformers 5.24.0, anchors-2026-12.md §2):
# its FunAsrNanoForConditionalGeneration would load the weights, but it would not decode what the
# run decodes, so nano8k refuses rather than write a model that behaves differently.
HF_UNFAITHFUL = ("--format hf: refused: transformers 5.24's FunAsrNanoForConditionalGeneration feeds the LLM every "
                 "adaptor frame where FunASR feeds about 1/8 of them (use_low_frame_rate), lets the adaptor attend "
                 "to padding in batches, has no CTC branch and takes 16 kHz audio only, so it would decode otherwise "
                 "than this run; export with --format funasr (the default)")


def check_format(fmt: str) -> None:
    """One line for a format nano8k does not write (before anything is read or written)."""
    if fmt == "hf":
        raise UserError(HF_UNFAITHFUL)
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: unknown; use {' or '.join(FORMATS)}")


def export(run: Path, out: Path, force: bool = False) -> dict:
    """Write OUT from RUN (a training run directory or one of its checkpoint files); returns
    export.json's content. OUT must be absent or empty unless `force`."""
    run, out = Path(run).expanduser(), Path(out).expanduser()
    if not run.exists():
        raise UserError(f"{run}: no such run directory or checkpoint")
    config_file = (run if run.is_dir() else run.parent) / "config.yaml"
    if not config_file.is_file():
        raise UserError(f"{run}: not a training run (no config.yaml beside the checkpoint); export a run directory")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise UserError(f"{out}: exists and is not empty; choose a new directory or pass --force")
    source = decoding.resolve_model({"checkpoint": str(run)})
    if source.checkpoint is None:
        raise UserError(f"{run}: holds no checkpoint (looked for model.pt.avg*, model.pt.best, model.pt)")
    model_dir = Path(source.model_dir)
    settings = dict(source.settings)
    built = nano_model.build(settings, init_param=source.checkpoint)
    net = built.model
    scalings = funasr_gaps.lora_scalings(net)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    folded = funasr_gaps.fold_lora(state, scalings) if scalings else state

    out.mkdir(parents=True, exist_ok=True)
    llm_dir = _copy_model_files(built.funasr_config, model_dir, out)
    model_config = _model_config(settings, llm_dir)
    funasr_gaps.atomic_save({"state_dict": folded}, out / "model.pt")
    with atomic_path(out / "config.yaml") as tmp:
        Path(tmp).write_text(_yaml(model_config), encoding="utf-8")
    record = {
        "exported_from": str(run.resolve()), "checkpoint": source.checkpoint, "base_model_dir": str(model_dir),
        "trained_by_nano8k": True, "lora_layers_folded": len(scalings), "tensors": len(folded),
        "nano8k": _version("nano8k"), "funasr": _version("funasr"), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with atomic_path(out / EXPORT_FILE) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    log.info("exported %s (%d tensors, %d LoRA layers folded) to %s", source.checkpoint, len(folded), len(scalings), out)
    return record


def _copy_model_files(funasr_cfg: dict, model_dir: Path, out: Path) -> str:
    """The LLM/tokenizer directory, the CTC vocabulary and configuration.json into OUT; returns
    the LLM directory's name there."""
    llm_path = Path(str(config.lookup(funasr_cfg, "llm_conf.init_param_path")))
    if not llm_path.is_dir():
        raise UserError(f"llm_conf.init_param_path: {llm_path} is not a directory to copy into the export")
    shutil.copytree(llm_path, out / llm_path.name, dirs_exist_ok=True)
    for name in (CTC_VOCAB, "configuration.json"):
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out / name)
    return llm_path.name


def _model_config(settings: dict, llm_dir: str) -> dict:
    """The run's config as a model directory's config.yaml: FunASR's keys only, LoRA folded away,
    paths relative to the model directory (as on the hub)."""
    cfg = nano_model.funasr_keys(settings)
    llm_conf = cfg.setdefault("llm_conf", {})
    llm_conf["init_param_path"] = llm_dir
    llm_conf["use_lora"] = False  # the adapters are folded into model.pt's LLM weights
    (cfg.setdefault("train_conf", {})).pop("use_lora", None)
    tokenizer_conf = cfg.get("tokenizer_conf")
    if isinstance(tokenizer_conf, dict) and tokenizer_conf.get("init_param_path"):
        tokenizer_conf["init_param_path"] = llm_dir
    for holder in (cfg, cfg.get("dataset_conf") or {}):
        conf = holder.get("ctc_tokenizer_conf")
        if isinstance(conf, dict):
            conf["vocab_path"] = CTC_VOCAB
    cfg["init_param"] = None
    return cfg


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True)


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
