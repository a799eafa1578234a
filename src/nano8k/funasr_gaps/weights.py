"""FunASR work-arounds 6 and 23: loading weights; LoRA adapters (7, reading and writing checkpoint
files, is nano8k.checkpoints). The numbered index is in funasr_gaps/__init__.py.
"""

from __future__ import annotations

import logging
import sys
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nano8k import checkpoints
from nano8k.errors import UserError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# 23: LoRA
# --------------------------------------------------------------------------------------------


def lora_layers(model: Any) -> list[Any]:
    """FunASR's LoRA layers (funasr.models.lora.layers.Linear) of a model."""
    return [m for _, m in _named_lora_layers(model)]


def _named_lora_layers(model: Any) -> list[tuple[str, Any]]:
    return [(name, m) for name, m in model.named_modules()
            if hasattr(m, "lora_A") and hasattr(m, "lora_B") and hasattr(m, "scaling")]


def prepare_lora(model: Any) -> int:
    """23: adapters in fp32 and computed in fp32, never merged by `.eval()`; returns how many."""
    import torch
    import torch.nn.functional as F

    layers = lora_layers(model)
    for layer in layers:
        if getattr(layer, "_nano8k_lora", False):
            continue
        with torch.no_grad():
            layer.lora_A.data = layer.lora_A.data.float()
            layer.lora_B.data = layer.lora_B.data.float()
        layer.merge_weights, layer.merged = False, False

        def forward(x, _layer=layer):
            result = F.linear(x, _layer.weight.T if _layer.fan_in_fan_out else _layer.weight, bias=_layer.bias)
            with torch.autocast(device_type=x.device.type, enabled=False):
                update = _layer.lora_dropout(x).float() @ _layer.lora_A.float().T @ _layer.lora_B.float().T
            return result + (update * _layer.scaling).to(result.dtype)

        layer.forward = forward
        layer._nano8k_lora = True
    return len(layers)


def lora_scalings(model: Any) -> dict[str, float]:
    """Layer name -> alpha / r for the LoRA layers of a model."""
    return {name: float(m.scaling) for name, m in _named_lora_layers(model)}


def fold_lora(state: dict, scalings: dict[str, float]) -> dict:
    """A state dict with every adapter folded into its base weight, in fp32 (W' = W + s * B @ A,
    then cast to W's dtype), and the lora_A/lora_B tensors dropped: a plain model's weights.
    `scalings`: layer name -> alpha / r (lora_scalings)."""
    out = {k: v for k, v in state.items() if not k.endswith((".lora_A", ".lora_B"))}
    for name, scaling in scalings.items():
        weight = state[f"{name}.weight"]
        delta = state[f"{name}.lora_B"].float() @ state[f"{name}.lora_A"].float()
        out[f"{name}.weight"] = (weight.float() + scaling * delta).to(weight.dtype)
    return out


# --------------------------------------------------------------------------------------------
# 6: weights
# --------------------------------------------------------------------------------------------


def module_of(name: str) -> str:
    """The parameter-table row (module) a tensor belongs to; LoRA adapters are carved out of llm."""
    return "lora" if "lora_" in name else name.split(".", 1)[0]


def check_trained_tensors(source: Path, checkpoint: Any, state: dict) -> None:
    """6: a nano8k checkpoint lists the modules its run trained (`trained_modules`); one that
    lacks any of their tensors would silently decode with base (or random) weights."""
    trained = checkpoint.get("trained_modules") if isinstance(checkpoint, dict) else None
    present = {module_of(k) for k in state}
    missing = [m for m in trained or () if m not in present]
    if missing:
        raise UserError(f"{source}: holds no {', '.join(m + '.*' for m in missing)} tensors although its run trained "
                        f"{'them' if len(missing) > 1 else 'it'}: the checkpoint is incomplete (written with "
                        "effective_save_name_excludes by an older nano8k or another tool); retrain or use a complete one")


def load_weights(model: Any, sources: Sequence[Path], excluded_ok: Iterable[str] = (), partial: bool = False,
                 training: bool = True) -> dict[str, str]:
    """Load checkpoints in order (later ones win) strictly; returns key -> source it came from.
    A CTC branch no source holds is trained from scratch where `training` trains it, else removed.

    With partial, keys no source holds keep their current values (resuming over a built model:
    the values are copied into the tensors the optimizer holds). Otherwise the model was just
    built and its tensors take the checkpoints' memory-mapped storage (`assign_weights`), so the
    weights are never in memory twice."""
    import torch

    target = model.state_dict(keep_vars=True)
    origin: dict[str, str] = {}
    for source in sources:
        checkpoint = checkpoints.read(source, mmap=not partial)
        state = checkpoints.weights_in(checkpoint)
        check_trained_tensors(source, checkpoint, state)
        if isinstance(checkpoint, dict) and checkpoint.get("averaged"):
            log.info("%s: the mean of %s (best by validation %s)", source, ", ".join(checkpoint["averaged"]),
                     checkpoint.get("best_criterion", "acc"))
        unexpected = [k for k in state if k not in target]
        if state and len(unexpected) == len(state):
            raise UserError(f"{source}: holds none of this model's tensors ({len(state)} others, e.g. {unexpected[0]}): "
                            "not a checkpoint of this model")
        for key, value in state.items():
            if key not in target:
                continue
            if tuple(value.shape) != tuple(target[key].shape):
                raise UserError(f"{source}: {key} has shape {tuple(value.shape)}, the model {tuple(target[key].shape)}"
                                " (architecture differs from the config)")
            origin[key] = str(source)
        known = {k: v for k, v in state.items() if k in target}
        if partial:
            with torch.no_grad():
                model.load_state_dict(known, strict=False)
        else:
            assign_weights(target, known, mapped=zipfile.is_zipfile(source))  # the legacy format is read whole
        del checkpoint, state, known  # a mapping no tensor uses any more is unmapped here
        if unexpected:
            log.warning("%s: %d tensors not in this model (e.g. %s) were ignored", source, len(unexpected), unexpected[0])
    missing = [] if partial else [k for k in target if k not in origin]
    fresh = [k for k in missing if k.endswith((".lora_A", ".lora_B"))]
    if fresh:  # 23: new adapters start as a no-op (B = 0)
        log.info("LoRA: %d adapter tensors are in none of the weights loaded (e.g. %s): they start fresh (lora_B = 0, "
                 "the model unchanged)", len(fresh), fresh[0])
        missing = [k for k in missing if k not in fresh]
    ctc_missing = [k for k in missing if k.startswith(("ctc_decoder.", "ctc."))]
    other = [k for k in missing if k not in ctc_missing]
    if other:
        why = " (the checkpoint excluded them and model_dir has no model.pt)" if all(
            k.startswith(tuple(excluded_ok)) for k in other) and excluded_ok else ""
        raise UserError(f"no weights for {len(other)} tensors, e.g. {other[0]}{why}")
    if ctc_missing:
        _handle_missing_ctc(model, ctc_missing, training)
    if not partial:
        return_freed_memory()  # the built model's random weights
    return origin


def assign_weights(target: dict, state: dict, mapped: bool) -> None:
    """Load `state` into `target` (a state_dict(keep_vars=True): the module's own parameters and
    buffers) without a second copy of the weights in memory. load_state_dict copies: the built
    model's random weights and the whole checkpoint would be held at once (2-3 times the weights
    at the released size). Here a tensor of the checkpoint's dtype is not copied: the module's
    tensor takes its (memory-mapped) storage, read from disk as it is used; a write (training)
    copies the page it touches (a private mapping: the file never changes). A tensor the module
    holds in another dtype (an fp32 LLM from bf16 weights) is cast into the module's own memory,
    and the file pages read for it are let go at once (`mapped`: the checkpoint is a mapping, so
    they can be read again). Parameters stay the same objects: an optimizer, a tied embedding and
    requires_grad are kept."""
    import torch

    with torch.no_grad():
        for key, value in state.items():
            tensor = target[key]
            if value.dtype == tensor.dtype:
                tensor.data = value
            else:
                tensor.copy_(value)
                if mapped:
                    _drop_mapped_pages(value)


def _drop_mapped_pages(tensor: Any) -> None:
    """madvise(MADV_DONTNEED) on the whole pages inside a tensor of a private file mapping: they
    leave the process's memory and are read from the file again if touched. Linux only."""
    import ctypes
    import mmap

    libc = _libc()
    if libc is None or not tensor.is_contiguous():
        return
    start = tensor.data_ptr()
    first, last = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE, (start + tensor.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first:
        libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), 4)  # MADV_DONTNEED


def return_freed_memory() -> None:
    """glibc keeps freed blocks below its mmap threshold (up to 32 MB: most weight matrices) for
    reuse instead of giving them back; after loading, the random weights a build made would stay
    in the process's memory. malloc_trim gives them back. A no-op elsewhere."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _libc() -> Any:
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _handle_missing_ctc(model: Any, missing: list[str], training: bool) -> None:
    trainable = any(p.requires_grad for n, p in model.named_parameters() if n.startswith(("ctc_decoder.", "ctc.")))
    decoder_frozen = model.ctc_decoder is not None and not any(p.requires_grad for p in model.ctc_decoder.parameters())
    if not training:  # decoding: random weights would give random CTC text, times and gate decisions
        log.info("the checkpoints hold no CTC branch (%d tensors): it is removed", len(missing))
        model.ctc_decoder = model.ctc = None
    elif decoder_frozen or not trainable:
        log.warning("the checkpoints hold no CTC branch (%d tensors) and this stage does not train it: "
                    "the CTC branch is removed, as FunASR does", len(missing))
        model.ctc_decoder = model.ctc = None
    else:
        log.warning("the checkpoints hold no CTC branch (%d tensors): it starts from random weights and is trained",
                    len(missing))


