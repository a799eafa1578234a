"""Fun-ASR-Nano as nano8k uses it: find the model directory, build FunASRNano through FunASR's own
registry from the composed config, load weights, apply the freeze policy, count parameters.

torch and funasr are imported inside the functions: this module is imported by the CLI.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from nano8k import checkpoints, config, funasr_gaps
from nano8k.errors import UserError
from nano8k.files import read_yaml, write_lines_atomic

log = logging.getLogger(__name__)


# Keys that fix tensor shapes: a checkpoint only loads into a model that agrees on all of them.
ARCHITECTURE_KEYS = (
    "model", "audio_encoder", "audio_adaptor", "ctc_decoder", "ctc_vocab_size",
    "audio_encoder_conf.output_size", "audio_encoder_conf.attention_heads", "audio_encoder_conf.linear_units",
    "audio_encoder_conf.num_blocks", "audio_encoder_conf.tp_blocks", "audio_encoder_conf.kernel_size",
    "audio_adaptor_conf.downsample_rate", "audio_adaptor_conf.ffn_dim", "audio_adaptor_conf.n_layer",
    "ctc_decoder_conf.downsample_rate", "ctc_decoder_conf.ffn_dim", "ctc_decoder_conf.llm_dim",
    "ctc_decoder_conf.n_layer", "frontend_conf.n_mels", "frontend_conf.lfr_m",
)

EXPORT_FILE = "export.json"  # what `nano8k export` writes into a model directory it made

# Parameter groups of the table, in display order; `lora` is carved out of `llm`.
MODULES = ("audio_encoder", "audio_adaptor", "ctc_decoder", "ctc", "llm", "lora")


# --------------------------------------------------------------------------------------------
# The model directory
# --------------------------------------------------------------------------------------------


def resolve_model_dir(spec: str) -> Path:
    """A local directory as is; anything else is a ModelScope id, taken from the cache or downloaded."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.is_absolute() or spec.startswith((".", "~")) or spec.count("/") != 1:
        raise UserError(f"model_dir: directory not found: {spec}")
    from modelscope import snapshot_download

    try:
        return Path(snapshot_download(spec, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: try the hub below
        pass
    log.info("downloading %s from ModelScope", spec)
    try:
        return Path(snapshot_download(spec))
    except Exception as err:  # noqa: BLE001 - any hub failure gets the same advice
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise UserError(
            f"model_dir: cannot download {spec} from ModelScope ({reason}); on a machine with network run "
            f"`modelscope download --model {spec} --local_dir DIR`, copy DIR here and pass model_dir=DIR"
        ) from None


def exported_by_nano8k(model_dir: Path) -> bool:
    """Whether a model directory is `nano8k export` of a run nano8k trained (then it decodes as
    that training prompted and dithered)."""
    import json

    try:
        return bool(json.loads((Path(model_dir) / EXPORT_FILE).read_text(encoding="utf-8")).get("trained_by_nano8k"))
    except (OSError, ValueError, AttributeError):
        return False


def _resolve_path(value: str | None, model_dir: Path, what: str) -> str | None:
    """A relative path in a model's config means relative to the model directory (as on the hub)."""
    if value in (None, ""):
        return value
    path = Path(value).expanduser()
    for candidate in ([path] if path.is_absolute() else [model_dir / path, path]):
        if candidate.exists():
            return str(candidate.resolve())
    raise UserError(f"{what}: {value} not found (looked in {model_dir})")


def runtime_config(settings: dict, model_dir: Path) -> dict:
    """The config FunASR receives: nano8k's own keys removed, relative paths resolved against
    model_dir, the CTC vocabulary defaulting to the model's multilingual.tiktoken."""
    cfg = config.funasr_keys(settings)
    llm_conf = cfg.setdefault("llm_conf", {})
    llm_conf["init_param_path"] = _resolve_path(llm_conf.get("init_param_path"), model_dir, "llm_conf.init_param_path")
    tok = cfg.get("tokenizer_conf") or {}
    if tok.get("init_param_path"):
        tok["init_param_path"] = _resolve_path(tok["init_param_path"], model_dir, "tokenizer_conf.init_param_path")
    if cfg.get("ctc_decoder"):
        for holder in (cfg, cfg.get("dataset_conf") or {}):
            conf = holder.get("ctc_tokenizer_conf")
            if isinstance(conf, dict):
                vocab = conf.get("vocab_path") or "multilingual.tiktoken"
                conf["vocab_path"] = _resolve_path(vocab, model_dir, "ctc_tokenizer_conf.vocab_path")
    return cfg


def tokenizer_dir(model_dir: Path) -> Path:
    """The LLM tokenizer of a model directory (tokenizer_conf.init_param_path, as FunASR reads it)."""
    path = model_dir / "config.yaml"
    released = read_yaml(path, "model config") if path.is_file() else {}
    spec = config.lookup(released, "tokenizer_conf.init_param_path") or config.lookup(released, "llm_conf.init_param_path") or "Qwen3-0.6B"
    if isinstance(spec, str) and spec.startswith("${"):
        spec = config.lookup(released, "llm_conf.init_param_path") or "Qwen3-0.6B"
    return Path(_resolve_path(spec, model_dir, "tokenizer_conf.init_param_path"))


def check_architecture(cfg: dict, model_dir: Path) -> None:
    """Refuse to load a model whose config.yaml disagrees with the composed config on a shape."""
    path = model_dir / "config.yaml"
    if not path.is_file():
        raise UserError(f"model_dir: {path} is missing (every Fun-ASR-Nano model directory has one)")
    released = read_yaml(path, "model config")
    mismatches = [
        f"{key} is {config.lookup(released, key)!r} there but {config.lookup(cfg, key)!r} here"
        for key in ARCHITECTURE_KEYS
        if config.lookup(released, key) is not None and config.lookup(cfg, key) is not None and config.lookup(released, key) != config.lookup(cfg, key)
    ]
    if mismatches:
        hint = " (a tiny model needs +preset=tiny)" if config.lookup(released, "audio_encoder_conf.num_blocks") == 2 else ""
        raise UserError(f"{path}: architecture mismatch: {'; '.join(mismatches)}{hint}")


# --------------------------------------------------------------------------------------------
# Building and loading
# --------------------------------------------------------------------------------------------


@dataclass
class Built:
    model: Any
    tokenizer: Any
    frontend: Any
    funasr_config: dict
    model_dir: Path
    loaded_from: list[str] = field(default_factory=list)
    origin: dict[str, str] = field(default_factory=dict)  # tensor -> the file its weights came from

    @property
    def base_checkpoint(self) -> str:
        return str(self.model_dir / checkpoints.LATEST)


def build(settings: dict, init_param: str | None = None, training: bool = True) -> Built:
    """Build FunASRNano from the composed config and load its weights.

    Weights: `<model_dir>/model.pt` (the pretrained model), then `init_param` over it when given —
    a checkpoint file or a nano8k/FunASR run directory. Keys a checkpoint left out (e.g. `llm.`
    under effective_save_name_excludes) therefore keep the base model's values, never random ones.
    `training`: false for decoding and export (a CTC branch no checkpoint holds is removed).
    """
    model_dir = resolve_model_dir(str(settings.get("model_dir")))
    cfg = runtime_config(settings, model_dir)
    check_architecture(cfg, model_dir)
    base = model_dir / checkpoints.LATEST
    sources = [base] if base.is_file() else []
    if init_param:
        sources.append(checkpoints.choose(Path(init_param)))
    if not sources:
        raise UserError(f"model_dir: {base} is missing and init_param is not set: no weights to start from")

    funasr_gaps.require_registered(cfg)
    from funasr.auto.auto_model import AutoModel

    build_cfg = {**copy.deepcopy(cfg), "init_param": None, "device": "cpu", "disable_update": True,
                 "ncpu": config.lookup(cfg, "ncpu") or funasr_gaps.cpu_threads()}
    model, kwargs = AutoModel.build_model(**build_cfg)
    adapters = funasr_gaps.prepare_lora(model)
    if config.lookup(cfg, "llm_conf.use_lora") and not adapters:
        raise UserError(f"llm_conf.lora_conf.target_modules: {config.lookup(cfg, 'llm_conf.lora_conf.target_modules')} "
                        "match no Linear layer of the LLM: no adapter was built")
    origin = funasr_gaps.load_weights(model, sources, excluded_ok=excluded_prefixes(cfg), training=training)
    funasr_gaps.mask_adaptor_padding(model)
    return Built(model, kwargs["tokenizer"], kwargs["frontend"], cfg, model_dir, [str(s) for s in sources], origin)


def excluded_prefixes(cfg: dict) -> tuple[str, ...]:
    excludes = config.lookup(cfg, "train_conf.effective_save_name_excludes") or ()
    if isinstance(excludes, str):
        excludes = [e for e in excludes.split(",") if e and e != "None"]
    return tuple(excludes)


# --------------------------------------------------------------------------------------------
# Freeze policy and the parameter table
# --------------------------------------------------------------------------------------------


module_of = funasr_gaps.module_of  # the parameter-table row a parameter belongs to


def freeze_policy(cfg: dict) -> dict[str, bool]:
    """Module -> frozen, from the composed config, with FunASR's defaults where a flag is absent.

    The CTC output layer (`ctc`) follows ctc_decoder_conf.freeze: FunASR leaves it trainable even
    when the decoder is frozen (funasr_gaps item 4).
    """
    ctc_frozen = bool(config.lookup(cfg, "ctc_decoder_conf.freeze") or False)
    return {
        "audio_encoder": config.lookup(cfg, "audio_encoder_conf.freeze") is not False,
        "audio_adaptor": bool(config.lookup(cfg, "audio_adaptor_conf.freeze") or False),
        "ctc_decoder": ctc_frozen,
        "ctc": ctc_frozen,
        "llm": config.lookup(cfg, "llm_conf.freeze") is not False,
        # nano8k gives freeze_lora its meaning (funasr_gaps 23); without use_lora there are no adapters
        "lora": (config.lookup(cfg, "llm_conf.use_lora") is True
                 and config.lookup(cfg, "llm_conf.lora_conf.freeze_lora") is True),
    }


def check_lora(cfg: dict) -> None:
    """The LoRA keys FunASR's own LoRA ignores (funasr_gaps 23): refused where they would mislead."""
    use_lora = config.lookup(cfg, "llm_conf.use_lora") is True
    declared = config.lookup(cfg, "train_conf.use_lora")
    if declared is not None and bool(declared) != use_lora:
        raise UserError(f"train_conf.use_lora: {declared} but llm_conf.use_lora is {use_lora}; FunASR reads only "
                        "llm_conf.use_lora: set that one (or leave train_conf.use_lora out)")
    if not use_lora:
        return
    task = config.lookup(cfg, "llm_conf.lora_conf.task_type")
    if task is not None and str(task).upper() != "CAUSAL_LM":
        raise UserError(f"llm_conf.lora_conf.task_type: {task!r}; FunASR's LoRA adapts a causal LM only (CAUSAL_LM)")
    bias = config.lookup(cfg, "llm_conf.lora_conf.bias")
    if bias is not None and str(bias).lower() != "none":
        raise UserError(f"llm_conf.lora_conf.bias: {bias!r} is not read by FunASR's LoRA; train biases with the "
                        "top-level lora_bias (all or lora_only) and lora_only=true")
    if config.lookup(cfg, "llm_conf.lora_conf.init_param_path"):
        raise UserError("llm_conf.lora_conf.init_param_path: FunASR's LoRA loads no separate adapter file; adapters "
                        "travel inside model.pt: start from the run that trained them (init_param=RUN)")


def apply_freeze_policy(model: Any, cfg: dict) -> dict[str, bool]:
    """Set requires_grad on every parameter from the policy (and FunASR's freeze_param / lora_only)."""
    policy = freeze_policy(cfg)
    extra = [p.strip() for p in str(cfg.get("freeze_param") or "").split(",") if p.strip()]
    lora_only = bool(cfg.get("lora_only"))
    for name, param in model.named_parameters():
        row = module_of(name)
        frozen = policy.get(row, False) or any(name.startswith(p) for p in extra) or (lora_only and row != "lora")
        param.requires_grad = not frozen
    return policy


def parameter_table(model: Any) -> list[tuple[str, int, int]]:
    """(module, total, trainable) rows in MODULES order, then any other top-level module."""
    totals: dict[str, list[int]] = {}
    for name, param in model.named_parameters():
        row = totals.setdefault(module_of(name), [0, 0])
        row[0] += param.numel()
        row[1] += param.numel() if param.requires_grad else 0
    order = [m for m in MODULES if m in totals] + sorted(set(totals) - set(MODULES))
    return [(m, totals[m][0], totals[m][1]) for m in order]


def write_parameter_table(rows: list[tuple[str, int, int]], path: Path) -> None:
    lines = ["module\ttotal\ttrainable"] + [f"{m}\t{t}\t{tr}" for m, t, tr in rows]
    total, trainable = sum(r[1] for r in rows), sum(r[2] for r in rows)
    lines.append(f"total\t{total}\t{trainable}")
    write_lines_atomic(path, lines)


def read_parameter_table(path: Path) -> dict[str, tuple[int, int]]:
    """params.tsv (write_parameter_table's): module -> (total, trainable), with the `total` row;
    {} when the run has none (yet)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()[1:]
    except OSError:
        return {}
    rows = (line.split("\t") for line in lines if line.strip())
    return {name: (int(total), int(trainable)) for name, total, trainable in rows}
