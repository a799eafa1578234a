"""FunASR work-arounds 1-5, 18, 19 and 27: what training optimises (SpecAug, the CTC and LLM losses,
freezing, the adaptor's padding, the learning-rate schedule). The numbered index is in funasr_gaps/__init__.py.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

from nano8k import config
from nano8k.errors import UserError
from nano8k.funasr_gaps.weights import lora_layers


# --------------------------------------------------------------------------------------------
# 1-3: the training objective
# --------------------------------------------------------------------------------------------


def attach_objective(model: Any, cfg: dict) -> None:
    """Install SpecAug, the CTC loss and the smoothed LLM loss on a built FunASRNano instance.

    Works by wrapping three bound methods of this one instance (`encode`, `llm.forward`,
    `forward`), so the model's parameters, state_dict keys and FunASR's own forward stay untouched.
    """
    import torch

    model._nano8k_specaug = _build_specaug(cfg)
    model._nano8k_encoder_out = None
    original_encode = model.encode

    def encode(speech, speech_lengths):
        if model.training and model._nano8k_specaug is not None:
            speech, speech_lengths = model._nano8k_specaug(speech, speech_lengths)
        out = original_encode(speech, speech_lengths)
        model._nano8k_encoder_out = out
        return out

    model.encode = encode

    lsm_weight = float((cfg.get("model_conf") or {}).get("lsm_weight") or 0.0)
    by_tokens = bool((cfg.get("model_conf") or {}).get("length_normalized_loss", False))
    original_llm_forward = model.llm.forward

    def llm_forward(*args, labels=None, **kwargs):
        out = original_llm_forward(*args, **kwargs)  # no labels: HF computes no loss of its own
        if labels is not None:
            out.loss = llm_loss(out.logits, labels, lsm_weight, by_tokens)
        return out

    model.llm.forward = llm_forward

    ctc_weight = float(config.setting(cfg, "ctc_weight"))
    detach = bool(cfg.get("detach_ctc_decoder", True))
    ctc_conf = cfg.get("ctc_conf") or {}
    if ctc_conf.get("reduce") is False:
        raise UserError("ctc_conf.reduce: false gives one CTC loss per utterance, which cannot be trained on; "
                        "nano8k sums them and divides by the batch size (reduce: true)")
    funasr_forward = type(model).forward

    def forward(self, **batch):
        fbank_beg = batch.get("fbank_beg")
        turns = None if fbank_beg is None else (fbank_beg > 0).tolist()
        loss, stats, weight = funasr_forward(self, **batch)
        learns = self.ctc_decoder is not None and ctc_learns(self, detach)
        # A CTC loss nothing can learn from (stage1) is a validation metric only: computing it on
        # every training step would cost ~12% of the step for a number no optimiser uses.
        if (self.ctc_decoder is not None and ctc_weight > 0 and self._nano8k_encoder_out is not None
                and (learns or not self.training)):
            texts = [turn_text for item, used in zip(batch.get("item") or [], turns or [])
                     for turn_text, has_speech in zip(item["assistant"], used) if has_speech]
            encoder_out, encoder_lens = self._nano8k_encoder_out
            with torch.set_grad_enabled(learns and torch.is_grad_enabled()):
                ctc = ctc_loss(self, encoder_out, encoder_lens, texts, detach, ctc_conf, by_tokens)
            stats["loss_llm"] = stats["loss"]
            stats["loss_ctc"] = ctc.detach()
            if learns:
                loss = loss + ctc_weight * ctc
                stats["loss"] = loss.detach()
        self._nano8k_encoder_out = None
        return loss, stats, weight

    model.forward = types.MethodType(forward, model)
    model._nano8k_objective = {"lsm_weight": lsm_weight, "length_normalized": by_tokens,
                               "ctc_weight": ctc_weight, "detach_ctc_decoder": detach,
                               "specaug": model._nano8k_specaug is not None}


def ctc_learns(model: Any, detach: bool) -> bool:
    """Can the CTC loss move any parameter? (the CTC branch trains, or the encoder does undetached)"""
    branch = [*model.ctc_decoder.parameters(), *model.ctc.parameters()]
    return any(p.requires_grad for p in branch) or (not detach and any(p.requires_grad for p in model.audio_encoder.parameters()))


def _build_specaug(cfg: dict) -> Any:
    name = cfg.get("specaug")
    if not name:
        return None
    from funasr.register import tables

    specaug_class = tables.specaug_classes.get(name)
    if specaug_class is None:
        raise UserError(f"specaug: unknown class {name!r}; FunASR has {', '.join(sorted(tables.specaug_classes))}")
    try:
        return specaug_class(**(cfg.get("specaug_conf") or {}))
    except (TypeError, ValueError, AssertionError) as err:
        raise UserError(f"specaug_conf: {name} rejects it: {err}") from None


def scheduler_class(name: str) -> Any:
    """27: FunASR's scheduler class of that name; custom_lambdalr (warmup, then a linear decay to 0
    at total_steps) with its constructor fixed: FunASR's passes `verbose` to torch's LRScheduler,
    which no longer takes it (TypeError at the first step of any run that names it)."""
    import torch
    from funasr.schedulers import scheduler_classes
    from funasr.schedulers.lambdalr_cus import CustomLambdaLR

    if name not in scheduler_classes:
        raise UserError(f"scheduler: unknown scheduler {name!r}; FunASR has {', '.join(sorted(scheduler_classes))}")
    if scheduler_classes[name] is not CustomLambdaLR:
        return scheduler_classes[name]

    class WarmupLinearDecay(CustomLambdaLR):  # FunASR's get_lr(); torch's constructor as it is now
        def __init__(self, optimizer: Any, warmup_steps: int = 25000, total_steps: int = 500000, last_epoch: int = -1):
            self.warmup_steps, self.total_steps = warmup_steps, total_steps
            torch.optim.lr_scheduler.LRScheduler.__init__(self, optimizer, last_epoch)

    return WarmupLinearDecay


def llm_loss(logits: Any, labels: Any, lsm_weight: float, by_tokens: bool) -> Any:
    """Next-token cross-entropy with label smoothing over labelled positions (label -100 ignored)."""
    import torch.nn.functional as F

    shift_labels = labels[:, 1:].to(logits.device)
    labelled = shift_labels != -100
    # Only the transcript's positions are scored: select them before the fp32 copy and the softmax
    # (the audio and prompt positions, most of the sequence, would be computed and then ignored).
    scored = logits[:, :-1, :][labelled].float()
    total = F.cross_entropy(scored, shift_labels[labelled], label_smoothing=lsm_weight, reduction="sum")
    denominator = labelled.sum().clamp(min=1) if by_tokens else labels.size(0)
    return total / denominator


def ctc_targets(model: Any, texts: Sequence[str]) -> list[list[int]]:
    tokenizer = model.ctc_tokenizer
    return [list(tokenizer.encode(text)) for text in texts]


def ctc_loss(model: Any, encoder_out: Any, encoder_lens: Any, texts: Sequence[str], detach: bool,
             ctc_conf: dict, by_tokens: bool = False) -> Any:
    """CTC loss of the side branch: encoder -> ctc_decoder -> ctc.ctc_lo, against the transcripts;
    normalised as the LLM loss is (length_normalized_loss: per target token, else per utterance),
    so that neither dominates the sum, validation loss and early stopping (a per-utterance CTC sum
    beside a per-token LLM loss was ~95% of the total)."""
    import torch
    import torch.nn.functional as F

    if len(texts) != encoder_out.size(0):
        raise RuntimeError(f"CTC: {len(texts)} transcripts for {encoder_out.size(0)} utterances")
    hidden = encoder_out.detach() if detach else encoder_out
    hidden, hidden_lens = model.ctc_decoder(hidden, encoder_lens)
    hidden = F.dropout(hidden, p=float(ctc_conf.get("dropout_rate") or 0.0), training=model.ctc.training)
    log_probs = model.ctc.log_softmax(hidden).float()
    targets = ctc_targets(model, texts)
    flat = torch.tensor([t for seq in targets for t in seq], dtype=torch.long, device=log_probs.device)
    target_lens = torch.tensor([len(seq) for seq in targets], dtype=torch.long, device=log_probs.device)
    losses = F.ctc_loss(log_probs.transpose(0, 1), flat, hidden_lens.long(), target_lens,
                        blank=model.ctc.blank_id, reduction="none", zero_infinity=True)
    return losses.sum() / (target_lens.sum().clamp(min=1) if by_tokens else losses.numel())


# --------------------------------------------------------------------------------------------
# 5: frozen modules stay in eval mode
# --------------------------------------------------------------------------------------------


def set_train_mode(model: Any, policy: dict[str, bool], training: bool) -> None:
    model.train(training)
    if training:
        for name, frozen in policy.items():
            module = getattr(model, name, None)
            if frozen and module is not None:
                module.eval()
        if not policy.get("lora", False):  # 23: trained adapters inside a frozen LLM keep their dropout
            for layer in lora_layers(model):
                layer.lora_dropout.train(True)


def mask_adaptor_padding(model: Any) -> None:
    """18: zero the encoder frames past each utterance's length before the adaptor and the CTC
    decoder (both FunASR's Transformer adaptor), which stack downsample_rate frames per position."""
    import torch

    for name in ("audio_adaptor", "ctc_decoder"):
        module = getattr(model, name, None)
        if module is None or getattr(module, "_nano8k_masks_padding", False):
            continue
        original = module.forward

        def forward(x, ilens=None, _original=original):
            if ilens is not None and x.size(0) > 1:
                keep = torch.arange(x.size(1), device=x.device)[None, :] < ilens.to(x.device).reshape(-1, 1)
                x = x * keep.unsqueeze(-1).to(x.dtype)
            return _original(x, ilens)

        module.forward = forward
        module._nano8k_masks_padding = True
