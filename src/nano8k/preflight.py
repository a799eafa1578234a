"""Before training starts: errors in what the run asks for, and warnings about runs that cannot learn.

Errors (UserError, before the model is built): a best-model criterion nano8k cannot compute; a
warmup of no steps (ranges of single keys are the schema's: config.py).
Warnings (one line each, also under dry_run): a learning-rate warmup longer than the run, so the
peak rate is never reached; nothing trainable; only modules trainable whose output a frozen,
randomly initialised module must turn into text (a tiny model's random LLM); SpecAug time masks
that cover most of a typical utterance of the training data.

Everything here reads the composed config, small files of the model directory and run
directories (config.yaml, nano8k_tiny.json) and the training manifest's length fields: no torch,
no funasr, no audio.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any


from nano8k import config
from nano8k.data import manifest
from nano8k.errors import UserError
from nano8k.files import read_yaml

MASKED_TOO_MUCH = 0.5  # expected share of a typical utterance's frames under SpecAug's time masks


def check(settings: dict) -> None:
    """Errors the run can be refused for before anything is built."""
    from nano8k import funasr_gaps
    from nano8k import model as nano_model

    funasr_gaps.check_training_audio_path(settings)
    nano_model.check_lora(settings)
    if settings.get("augment"):
        from nano8k import augment

        augment.check(settings["augment"])
    criterion = config.setting(settings, "train_conf.avg_keep_nbest_models_type")
    if criterion not in config.CRITERIA:
        raise UserError(f"train_conf.avg_keep_nbest_models_type: {criterion!r} is not a criterion; use "
                        f"{', '.join(config.CRITERIA)}")
    decoded = config.lookup(settings, "valid_decode.max_utterances")
    if criterion in config.DECODED_CRITERIA and decoded is not None and int(decoded) <= 0:
        raise UserError(f"train_conf.avg_keep_nbest_models_type: {criterion} needs validation decoding, which "
                        "valid_decode.max_utterances=0 turns off; set it above 0 or choose acc or loss")
    warmup = config.lookup(settings, "scheduler_conf.warmup_steps")
    if config.setting(settings, "scheduler") == "warmuplr" and warmup is not None and warmup < 1:
        raise UserError(f"scheduler_conf.warmup_steps: {warmup} is out of range: at least 1 under scheduler=warmuplr "
                        "(FunASR's WarmupLR divides by it)")
    total = config.lookup(settings, "scheduler_conf.total_steps")
    if config.setting(settings, "scheduler") == "custom_lambdalr" and total is not None and total <= (warmup or 0):
        raise UserError(f"scheduler_conf.total_steps: {total} is out of range: above warmup_steps ({warmup or 0}) under "
                        "scheduler=custom_lambdalr (the learning rate decays from warmup_steps to 0 at total_steps)")


def manifest_lengths(path: Any) -> list[int]:
    """speech_length + text_length of each line of a Nano JSONL or of the manifests a list file
    names (what token batching counts), or [] when a file is absent or not a manifest (the
    trainer's data check reports that)."""
    lengths = []
    try:
        for line in manifest.lines(str(path)):
            try:
                obj = json.loads(line)
                lengths.append(int(obj.get("speech_length") or 0) + int(obj.get("text_length") or 0))
            except (ValueError, TypeError, AttributeError):
                continue
    except (OSError, UnicodeDecodeError):
        return []
    return [n for n in lengths if n > 0]


def learns_llm(run_or_model: Any, seen: set | None = None) -> bool:
    """Does the LLM these weights give come from training (not from a random init)? A tiny model
    directory's weights are random (nano8k_tiny.json); a run directory's LLM learned if that run
    trained it, or started from weights whose LLM had."""
    seen = seen if seen is not None else set()
    path = Path(str(run_or_model)).expanduser()
    if path.is_file():
        path = path.parent
    if path in seen:
        return True
    seen.add(path)
    sizes = path / "nano8k_tiny.json"
    if sizes.is_file():
        try:
            return json.loads(sizes.read_text(encoding="utf-8")).get("weights") != "random"
        except (OSError, ValueError):
            return True
    cfg_path = path / "config.yaml"
    if not cfg_path.is_file():
        return True  # a model we know nothing about: assume pretrained
    try:
        cfg = read_yaml(cfg_path, "model config")
    except UserError:
        return True
    if "model_dir" not in cfg:  # a released model's config, not a nano8k run
        return True
    if config.lookup(cfg, "llm_conf.freeze") is False:
        return True
    return learns_llm(cfg["init_param"], seen) if cfg.get("init_param") else learns_llm(cfg["model_dir"], seen)


def warnings(settings: dict) -> list[str]:
    """One line per reason this run cannot learn (empty when none is found)."""
    out: list[str] = []
    from nano8k import model as nano_model

    frozen = nano_model.freeze_policy(settings)  # what the trainer will apply
    if not settings.get("ctc_decoder"):  # no CTC branch: nothing there can learn
        frozen.update(ctc_decoder=True, ctc=True)
    lora = bool(config.lookup(settings, "llm_conf.use_lora")) and not frozen["lora"]  # adapters that train
    if all(v for module, v in frozen.items() if module != "lora") and not lora:
        out.append("audio_encoder_conf.freeze, audio_adaptor_conf.freeze, ctc_decoder_conf.freeze, llm_conf.freeze"
                   + (", llm_conf.lora_conf.freeze_lora" if config.lookup(settings, "llm_conf.use_lora") else "")
                   + ": every module is frozen, nothing can learn")
    elif frozen["llm"] and not lora and not (frozen["audio_encoder"] and frozen["audio_adaptor"]):
        start = settings.get("init_param") or settings.get("model_dir")  # init_param's weights win
        if start and not learns_llm(start):
            out.append(f"llm_conf.freeze: the LLM is frozen and randomly initialised ({start} holds no trained LLM), so "
                       "what the encoder and adaptor learn cannot be turned into text; train the LLM first "
                       "(e.g. +stage=from_scratch) and start this stage from that run (init_param=RUN)")
    lengths = manifest_lengths(settings.get("train_data_set_list")) if settings.get("train_data_set_list") else []
    if lengths:
        out += _schedule_warnings(settings, lengths)
        out += _specaug_warnings(settings, lengths)
    return out


def _schedule_warnings(settings: dict, lengths: list[int]) -> list[str]:
    """warmuplr and custom_lambdalr: lr = peak x step / warmup_steps until warmup_steps, so a run
    shorter than its warmup never reaches optim_conf.lr; custom_lambdalr's lr is 0 from total_steps
    on, so a run longer than that learns nothing in its last steps."""
    scheduler = config.setting(settings, "scheduler")
    if scheduler not in ("warmuplr", "custom_lambdalr"):
        return []
    warmup = int(config.lookup(settings, "scheduler_conf.warmup_steps") or 0)
    batch_type = config.lookup(settings, "dataset_conf.batch_type") or "example"
    batch = int(config.lookup(settings, "dataset_conf.batch_size") or 1)
    cap = int(config.lookup(settings, "dataset_conf.batch_size_sample_max") or 10**9)
    if batch_type in ("token", "length"):
        # FunASR's sampler pads each batch to its longest sample (sorted in sort_size buckets):
        # about batch_size / typical length samples a batch, at most batch_size_sample_max - 1
        per_batch = max(1, min(cap - 1, batch // max(1, int(statistics.median(lengths)))))
    else:
        per_batch = max(1, batch)
    steps_per_epoch = math.ceil(len(lengths) / per_batch)
    accum = max(1, int(config.setting(settings, "train_conf.accum_grad")))
    epochs = max(1, int(config.setting(settings, "train_conf.max_epoch")))
    total = max(1, steps_per_epoch * epochs // accum)
    run = (f"the whole run (about {total} optimiser steps: train_conf.max_epoch {epochs} x ~{steps_per_epoch} batches "
           f"of {Path(str(settings['train_data_set_list'])).name})")
    if warmup > total:
        return [f"scheduler_conf.warmup_steps: {warmup} is longer than {run}, so the learning rate peaks at "
                f"{100 * total / warmup:.0f}% of optim_conf.lr; lower warmup_steps"]
    decayed = config.lookup(settings, "scheduler_conf.total_steps")
    if scheduler == "custom_lambdalr" and decayed is not None and int(decayed) < 0.9 * total:
        return [f"scheduler_conf.total_steps: the learning rate reaches 0 at step {decayed}, well before the end of "
                f"{run}: the rest learns nothing; raise total_steps to about {total}"]
    return []


def _specaug_warnings(settings: dict, lengths: list[int]) -> list[str]:
    """SpecAugLFR's time masks: num_time_mask masks of a width drawn in [lo, hi) LFR frames
    (lfr_n x 10 ms each), as FunASR reads time_mask_width_range."""
    if not settings.get("specaug"):
        return []
    conf = settings.get("specaug_conf") or {}
    if conf.get("apply_time_mask") is False or not conf.get("time_mask_width_range"):
        return []
    lo, hi = (list(conf["time_mask_width_range"]) + [0, 0])[:2]
    masks = int(config.setting(settings, "specaug_conf.num_time_mask"))
    lfr_n = int(config.setting(settings, "frontend_conf.lfr_n"))
    typical = statistics.median(lengths) / lfr_n  # LFR frames (speech_length counts 10 ms frames; text is small)
    share = min(1.0, masks * (lo + max(lo, hi - 1)) / 2 / max(typical, 1))
    if share <= MASKED_TOO_MUCH:
        return []
    return [f"specaug_conf.time_mask_width_range: {masks} time masks of up to {hi - 1} LFR frames "
            f"({(hi - 1) * lfr_n * 10} ms) cover about {100 * share:.0f}% of a typical utterance of this data "
            f"({typical * lfr_n / 100:.1f} s); narrow the range or lower num_time_mask"]
