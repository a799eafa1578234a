"""DeepSpeed under nano8k's loop (`train_conf.use_deepspeed: true`): the engine's config, its
start-up, and the state it needs to resume.

What FunASR 1.4.16 does (train_utils/trainer_ds.py) and why nano8k differs — item 16 of funasr_gaps:
- `deepspeed_config` must be a JSON file: null (the released config's value) crashes in open(None).
  nano8k takes a file or a packaged preset name (zero1, zero2); null means zero1, FunASR's own
  example recipe (examples/deepspeed_conf/ds_stage1.json).
- The JSON's accumulation, clipping and precision silently replace train_conf's. nano8k fills the
  JSON's "auto" values from the config (the presets are all "auto") and logs a warning when the JSON
  sets a value that contradicts train_conf, so the number a user set is never dropped unseen.
- Checkpoints become DeepSpeed directories named model.pt, model.pt.ep3, ... that FunASR's own
  decoding and averaging cannot read as files. nano8k writes FunASR's single-file checkpoints as
  without DeepSpeed (weights from rank 0), so decode, averaging and init_param work unchanged; the
  optimizer and scheduler state, partitioned across ranks, goes to run_dir/deepspeed/<checkpoint>/
  (only the latest is kept) and model.pt names it, for resume.
- ZeRO-3 partitions the weights themselves. nano8k validates, checkpoints and averages whole
  weights, so it runs stages 0-2 and refuses 3 (Fun-ASR-Nano's ~0.8B parameters fit a GPU under ZeRO-2).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

from nano8k import config
from nano8k.errors import UserError

log = logging.getLogger(__name__)

PRESETS = ("zero1", "zero2")
DEFAULT_PRESET = "zero1"
STATE_DIR = "deepspeed"  # inside the run directory


def require(device: str) -> Any:
    """The deepspeed module, or a one-line error naming the extra to install."""
    # DeepSpeed picks its accelerator once, at import, from what it finds: on a GPU machine told to
    # train on CPU it would pick CUDA. Name the device nano8k chose.
    os.environ["DS_ACCELERATOR"] = "cuda" if device.startswith("cuda") else "cpu"
    try:
        import deepspeed
    except ImportError:
        raise UserError("train_conf.use_deepspeed: true needs DeepSpeed: pip install 'nano8k[deepspeed]'") from None
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)  # its INFO lines repeat what nano8k logs
    return deepspeed


def _load(source: str | None) -> tuple[dict, str]:
    name = source or DEFAULT_PRESET
    path = Path(name) if Path(name).suffix or "/" in name else None
    if path is None:
        if name not in PRESETS:
            raise UserError(f"deepspeed_config: {name!r} is neither a JSON file nor a nano8k preset ({', '.join(PRESETS)})")
        text, where = files("nano8k").joinpath("deepspeed_presets", f"{name}.json").read_text(encoding="utf-8"), f"preset {name}"
    else:
        if not path.is_file():
            raise UserError(f"deepspeed_config: {path} not found (a JSON file, or a preset: {', '.join(PRESETS)})")
        text, where = path.read_text(encoding="utf-8"), str(path)
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"deepspeed_config: {where} line {err.lineno} column {err.colno}: {err.msg}") from None
    if not isinstance(loaded, dict):
        raise UserError(f"deepspeed_config: {where} must hold a JSON object")
    return loaded, where


def enabled(settings: dict) -> bool:
    """FunASR reads use_deepspeed at top level or in train_conf, top level winning (train_ds.py:43-72)."""
    return bool(settings.get("use_deepspeed", (settings.get("train_conf") or {}).get("use_deepspeed")))


def engine_config(settings: dict, on_cuda: bool, bf16_supported: bool, announce: bool = True) -> dict:
    """The DeepSpeed config for this job: the JSON (or preset) with its "auto" values filled from
    train_conf and optim_conf. Raises UserError naming the key for what nano8k cannot run.
    `announce` logs the result and the warnings (off for the check before the job starts)."""
    train_conf = settings.get("train_conf") or {}
    source = settings.get("deepspeed_config", train_conf.get("deepspeed_config"))
    ds, where = _load(source)
    bf16 = bool(train_conf.get("use_bf16")) and on_cuda and bf16_supported
    derived = {  # DeepSpeed key -> (nano8k's value, the config key it comes from)
        ("train_micro_batch_size_per_gpu",): (1, None),  # batches are FunASR's token batches; DeepSpeed only counts them
        ("gradient_accumulation_steps",): (int(config.setting(settings, "train_conf.accum_grad")), "train_conf.accum_grad"),
        ("gradient_clipping",): (float(config.setting(settings, "train_conf.grad_clip")), "train_conf.grad_clip"),
        ("bf16", "enabled"): (bf16, "train_conf.use_bf16"),
        ("fp16", "enabled"): (bool(train_conf.get("use_fp16")) and on_cuda and not bf16, "train_conf.use_fp16"),
    }
    if isinstance(ds.get("optimizer"), dict):
        optim_conf = settings.get("optim_conf") or {}
        for name in (ds["optimizer"].get("params") or {}):
            if name in optim_conf:
                derived[("optimizer", "params", name)] = (optim_conf[name], f"optim_conf.{name}")
        if announce:
            log.warning("deepspeed_config %s has an optimizer section: DeepSpeed builds the optimizer; optim=%s is not "
                        "used", where, config.setting(settings, "optim"))
    if ds.get("train_batch_size") == "auto":
        del ds["train_batch_size"]  # DeepSpeed derives it: micro batch x accumulation x ranks
    for path, (value, origin) in derived.items():
        node = ds
        for part in path[:-1]:
            node = node.setdefault(part, {}) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        current = node.get(path[-1], "auto")
        if current == "auto":
            node[path[-1]] = value
        elif announce and origin and config.lookup(settings, origin) is not None and current != value:
            log.warning("deepspeed_config %s sets %s=%s; %s=%s is not used", where, ".".join(path), current, origin, value)
    if float(config.setting(settings, "train_conf.grad_clip_type")) != 2.0:
        raise UserError(f"train_conf.grad_clip_type={train_conf['grad_clip_type']}: DeepSpeed clips by the L2 norm "
                        "only; remove it or set 2")
    leftover = [key for key, value in config.flatten(ds).items() if value == "auto"]
    if leftover:
        raise UserError(f"deepspeed_config: {where}: nano8k cannot fill 'auto' for {', '.join(leftover)}; set a value")
    stage = int((ds.get("zero_optimization") or {}).get("stage", 0))
    if stage not in (0, 1, 2):
        raise UserError(f"deepspeed_config: {where}: zero_optimization.stage={stage}: nano8k runs ZeRO stages 0-2 "
                        "(stage 3 partitions the weights, which validation, checkpoints and averaging read whole)")
    if announce:
        log.info("DeepSpeed: %s, ZeRO stage %d, accumulation %s, clipping %s, %s", where, stage,
                 ds["gradient_accumulation_steps"], ds["gradient_clipping"],
                 "bf16" if ds["bf16"]["enabled"] else "fp16" if ds["fp16"]["enabled"] else "fp32")
    return ds


def autocast_dtype(ds: dict) -> Any:
    """DeepSpeed casts the model to bf16/fp16; inputs (fbank features) stay fp32, hence autocast."""
    import torch

    return torch.bfloat16 if ds["bf16"]["enabled"] else torch.float16 if ds["fp16"]["enabled"] else None


def initialize(net: Any, trainable: list, ds: dict, make_optimizer: Callable[[list], Any],
               make_scheduler: Callable[[Any], Any]) -> tuple[Any, Any, Any]:
    """The DeepSpeed engine over `net` with FunASR's optimizer and scheduler, unless the JSON has
    its own optimizer/scheduler sections (then DeepSpeed builds those, as in FunASR)."""
    import deepspeed

    optimizer = None if "optimizer" in ds else make_optimizer(trainable)
    if "scheduler" in ds:
        scheduler = None
    elif optimizer is None:
        scheduler = make_scheduler  # DeepSpeed calls it with the optimizer it builds
    else:
        scheduler = make_scheduler(optimizer)
    engine, engine_optimizer, _, engine_scheduler = deepspeed.initialize(
        model=net, optimizer=optimizer, model_parameters=trainable, lr_scheduler=scheduler, config=ds)
    return engine, engine_optimizer, engine_scheduler


def save_state(engine: Any, run_dir: Path, tag: str) -> str:
    """Every rank writes its optimizer partition under run_dir/deepspeed/<tag> (collective). Frozen
    weights are left out; the trainable ones are in FunASR's checkpoint files too."""
    engine.save_checkpoint(str(run_dir / STATE_DIR), tag=tag, exclude_frozen_parameters=True)
    return f"{STATE_DIR}/{tag}"


def keep_only(run_dir: Path, state: str) -> None:
    """Remove every DeepSpeed state but `state` (rank 0, after model.pt names it): only the latest
    resumes, and each one holds the optimizer's moments for every trainable parameter."""
    for old in (run_dir / STATE_DIR).iterdir():
        if old.is_dir() and old.name != Path(state).name:
            shutil.rmtree(old, ignore_errors=True)


def load_state(engine: Any, run_dir: Path, state: str) -> None:
    where = run_dir / state
    if not where.is_dir():
        raise UserError(f"{run_dir / 'model.pt'}: its DeepSpeed state {where} is missing; "
                        "resume is impossible (set train_conf.resume=false or use a new run directory)")
    loaded, _ = engine.load_checkpoint(str(where.parent), tag=where.name, load_module_strict=False,
                                       load_optimizer_states=True, load_lr_scheduler_states=True)
    if loaded is None:
        raise UserError(f"{where}: DeepSpeed could not load this state (was it written with another number of ranks?)")
