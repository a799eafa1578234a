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
import os
import shutil
import time
from pathlib import Path
from typing import Any

from nano8k import checkpoints, config, decoding, funasr_gaps, interrupts, rundir
from nano8k import model as nano_model
from nano8k.errors import UserError
from nano8k.files import read_yaml

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
    export.json's content. All or nothing: OUT is written as a temporary directory beside it and
    renamed into place at the end; a signal or an error leaves nothing of it (and the previous OUT,
    with --force, as it was). OUT must be new or empty; --force replaces a previous export only,
    never a training run or a model directory, and never one of RUN's inputs."""
    run, out = Path(run).expanduser(), Path(out).expanduser()
    if not run.exists():
        raise UserError(f"{run}: no such run directory or checkpoint")
    run_dir = run if run.is_dir() else run.parent
    config_file = run_dir / "config.yaml"
    if rundir.kind_of(run_dir) != "training run" or not config_file.is_file() or \
            "model_dir" not in read_yaml(config_file, "run config"):
        raise UserError(f"{run}: not a nano8k training run (no train.log, checkpoints and config.yaml naming its "
                        "model_dir); export a run directory that `nano8k train` wrote")
    source = decoding.resolve_model({"checkpoint": str(run)})
    if source.checkpoint is None:
        raise UserError(f"{run}: holds no checkpoint (looked for {checkpoints.AVERAGED_PREFIX}*, {checkpoints.BEST}, "
                        f"{checkpoints.LATEST})")
    model_dir = Path(source.model_dir)
    inputs = {"the training run": run_dir, "its model directory": model_dir}
    check_target(out, force, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = rundir.RunLock(out.parent, target=out).acquire()  # one export into OUT at a time
    try:
        check_target(out, force, inputs)  # again: another export may have finished OUT meanwhile
        return _export(run, out, source, model_dir, force)
    finally:
        lock.release()


def _export(run: Path, out: Path, source: Any, model_dir: Path, force: bool) -> dict:
    settings = dict(source.settings)
    partial = out.parent / f".{out.name}.export-{os.getpid()}"

    def discard(signum: int | None = None) -> None:
        shutil.rmtree(partial, ignore_errors=True)

    interrupts.at_once(discard)  # a signal (the CLI installs interrupts) ends the process without a partial OUT
    try:
        built = nano_model.build(settings, init_param=source.checkpoint, training=False)
        net = built.model
        scalings = funasr_gaps.lora_scalings(net)
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        folded = funasr_gaps.fold_lora(state, scalings) if scalings else state
        partial.mkdir(parents=True)
        llm_dir = _copy_model_files(built.funasr_config, model_dir, partial)
        model_config = _model_config(settings, llm_dir)
        checkpoints.save({"state_dict": folded}, partial / checkpoints.LATEST)
        (partial / "config.yaml").write_text(_yaml(model_config), encoding="utf-8")
        record = {
            "exported_from": str(run.resolve()), "checkpoint": source.checkpoint, "base_model_dir": str(model_dir),
            "trained_by_nano8k": True, "lora_layers_folded": len(scalings), "tensors": len(folded),
            "nano8k": _version("nano8k"), "funasr": _version("funasr"), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        (partial / EXPORT_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        with interrupts.held():  # the swap is not cut in two by a signal, and one after it ends nothing
            _replace(partial, out, force)
            interrupts.defer()
    except BaseException:
        discard()
        raise
    finally:
        interrupts.forget(discard)
    log.info("exported %s (%d tensors, %d LoRA layers folded) to %s", source.checkpoint, len(folded), len(scalings), out)
    return record


def check_target(out: Path, force: bool, inputs: dict[str, Path]) -> None:
    """OUT is new, empty, or (with force) a previous export; never one of the inputs, inside one,
    or holding one (one line naming both paths)."""
    target = out.resolve()
    for what, path in inputs.items():
        path = Path(path).resolve()
        if target == path or path in target.parents or target in path.parents:
            relation = "is" if target == path else "is inside" if path in target.parents else "holds"
            raise UserError(f"{out}: {relation} {what} {path}; export into a directory of its own")
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if not any(out.iterdir()):
        return
    kind = rundir.kind_of(out)
    previous_export = (out / EXPORT_FILE).is_file()
    if kind == "training run" or (kind == "model directory" and not previous_export):
        raise UserError(f"{out}: is a {kind}, not a previous export; --force replaces only an export: choose a new "
                        "directory")
    if not force:
        raise UserError(f"{out}: exists and is not empty; choose a new directory or pass --force to replace a previous "
                        "export")
    if not previous_export:
        raise UserError(f"{out}: holds files that are not an export (no {EXPORT_FILE}); --force replaces only a previous "
                        "export: choose a new directory")


def _replace(partial: Path, out: Path, force: bool) -> None:
    """Rename the finished export into place; a previous OUT (force) is moved aside first, then
    removed. OUT filled meanwhile by someone else (another export) is left alone: one line."""
    old = out.parent / f".{out.name}.replaced-{os.getpid()}"
    if out.exists() and (force or not any(out.iterdir())):
        os.rename(out, old)
    try:
        os.rename(partial, out)
    except OSError:
        if old.exists() and not out.exists():
            os.rename(old, out)
        raise UserError(f"{out}: was written by another command while this export ran; it is left as it is "
                        "(export again into a new directory)") from None
    shutil.rmtree(old, ignore_errors=True)


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
    cfg = config.funasr_keys(settings)
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
