"""Every place where nano8k does what the config says and FunASR 1.4.16 does not.

Each item names what FunASR does and what nano8k does instead. The README's table "What FunASR does
with each key" is the user-facing summary of this module.

1. SPECAUG — FunASR: FunASRNano swallows `specaug`/`specaug_conf` in **kwargs; no augmentation.
   nano8k: builds the configured class (SpecAugLFR) from FunASR's registry and applies it to the LFR
   features inside `encode`, in training mode only.
2. CTC LOSS — FunASR: the CTC decoder and output layer are built but forward() never uses them, so
   they get no gradient; `ctc_weight`, `detach_ctc_decoder` and `ctc_conf` are stored and ignored.
   nano8k: loss = LLM loss + ctc_weight * CTC loss, the CTC targets being the transcript through the
   model's CTC tokenizer. With detach_ctc_decoder the CTC gradient reaches only the CTC decoder and
   output layer; without it, the encoder too. ctc_conf.dropout_rate is honoured; reduce must be true; the CTC loss is normalised as the LLM
   loss (per target token under length_normalized_loss). When
   no trainable parameter can receive the CTC gradient (stage1: CTC frozen and detached), the CTC
   loss is left out of the optimised loss, where it would be a constant, and computed only in
   validation, where it is reported (`loss_ctc`).
3. LABEL SMOOTHING / NORMALISATION — FunASR: HF's plain cross-entropy, averaged over tokens;
   `model_conf.lsm_weight` is never read and `length_normalized_loss` only changes a DDP weight.
   nano8k: cross-entropy with label_smoothing = lsm_weight, divided by the number of target tokens
   when length_normalized_loss is true, else by the number of utterances (ESPnet's convention).
4. CTC OUTPUT LAYER FREEZE — FunASR: `ctc_decoder_conf.freeze` freezes the decoder only; `ctc.ctc_lo`
   stays trainable. nano8k: the output layer follows the decoder's flag (model.freeze_policy).
5. FROZEN MEANS FROZEN — FunASR: modules frozen at build are put back in train mode by the
   trainer's model.train(), so their dropout stays active. nano8k keeps frozen modules in eval mode.
6. WEIGHTS — FunASR: a missing init_param prints a line and trains a random model; shape mismatches
   are skipped silently; a checkpoint saved without `llm.*` loads a random LLM; an incomplete CTC
   branch is deleted. nano8k: the base model.pt is loaded first and the checkpoint over it; a missing
   file, a shape mismatch or a key no source provides is an error; a CTC branch absent from every
   source is trained from scratch when the stage trains it and removed (with a warning) otherwise.
   FunASR's effective_save_name_excludes drops the named tensors from checkpoints even when they
   trained (the base config's `llm.` drops a fine-tuned LLM and its LoRA adapters); nano8k drops
   only frozen tensors still equal to the base model's (trainer._choose_saved_tensors), records
   the modules a run trained, and refuses a checkpoint lacking any (check_trained_tensors()).
   FunASR reads each checkpoint whole and copies it into the built model (load_state_dict), so
   the weights are in memory two to three times while loading; nano8k maps the files and points
   the built model's tensors at them (assign_weights()): about once.
7. CHECKPOINTS — FunASR writes with torch.save directly (a crash leaves a truncated file). nano8k
   writes a temporary file and renames it (atomic on POSIX); a failed write (disk full) is one
   line and leaves the previous file intact (atomic_save()).
8. CPU — FunASR's funasr-train-ds forces CUDA device 0; nano8k picks the device itself (`device`).
10. DATA SPLITS — FunASR slices a *list file* of manifests into data_split_num parts, but with a
   single .jsonl every "slice" is the whole file, so data_split_num: 512 (config_8k_telephone)
   means 512 passes per epoch. nano8k iterates the slices of a list file and reads a single
   manifest once per epoch (data_splits()).
11. SAMPLE RATE OF ARRAYS — FunASR resamples audio files to frontend_conf.fs, but an in-memory array
   is assumed to be 16 kHz unless `audio_fs` is passed, so an 8 kHz array is read at double speed.
   nano8k's waveform()/fbank() take the array's rate explicitly (refusing an array without one) and
   resample to the front end's rate with soxr, as FunASR's loader does for files.
9. IMPORT SIDE EFFECTS — `import funasr` sets HYDRA_FULL_ERROR=1 process-wide, prints a banner,
   and imports every one of its ~1,000 modules (every model it has: 16 s here, for each command).
   nano8k imports it through quiet_funasr_import(), which undoes the first two and imports only the
   modules that register what Fun-ASR-Nano's configs name (4 s); a config naming anything else
   gets FunASR's full import (require_registered()).
12. DITHER AT DECODING — FunASR: WavFrontend's dither (1.0 by default; the released config does
   not set it) adds fresh random noise at inference too, so the same audio can decode differently
   from run to run; decoding with dither 0 instead (the obvious fix) feeds a model trained with
   dither features it never saw wherever the audio has digital silence (TTS, comfort-noise gaps:
   log-mel of exact zeros). nano8k decodes with the front end's own dither off and adds the same
   amount of noise to the samples itself, from a generator seeded per utterance
   (decoding_frontend(), seeded_dither()): training's features, deterministically.
13. BATCHED DECODING — FunASR: inference_prepare raises NotImplementedError for more than one
   utterance, AutoModel forces batch_size 1 on CPU, and _inference_llm_batch (which still encodes
   utterance by utterance) is bypassed whenever the model has a CTC branch. nano8k prepares each
   utterance with FunASR's own data_load_speech (same prompt ids and features), then runs the
   encoder, adaptor, CTC branch and a left-padded llm.generate on the whole batch
   (utterance_inputs(), encode_batch(), ctc_greedy(), prompt_embeds(), generate_batch(); the
   joint strategy's n-best and scoring use the same prompt_embeds()).
14. CTC TIMESTAMPS — FunASR: with a CTC branch, inference always runs torchaudio's forced_align
   (removed from torchaudio in 2.9, and without a build for nano8k's torch), so decoding fails with
   ImportError where torchaudio is absent, and aligns one utterance at a time. nano8k aligns with
   its own batched Viterbi in PyTorch (decoding/ctc_aligner.py): word times and confidence for
   every utterance (the LLM's text and the CTC hypothesis), punctuation at zero width.
15. LLM DTYPE AT DECODING — FunASR's inference casts the LLM to a top-level `llm_dtype` keyword
   (default fp32), not to llm_conf.llm_dtype. nano8k's decode config has `llm_dtype`; unset, it is
   fp32 on CPU and llm_conf.llm_dtype on GPU (fp32 on a GPU without bf16) (llm_dtype()).
17. PROMPT AT DECODING — FunASR: training builds the user turn through dataset_conf.prompt_classes
   (MultiContextPrompt prepends its context header, "请结合下面提供的上下文信息…", even with no
   context), inference through FunASRNano.get_prompt (no header): a fine-tuned model is decoded with
   a prompt it was never trained on. nano8k decodes a run it trained with the run's own prompt
   class, header and hotword field (training_prompt()); a model directory keeps FunASR's prompt.
18. PADDING IN THE ADAPTOR — FunASR: the Transformer adaptor (and the CTC decoder, the same class)
   stacks downsample_rate encoder frames per position before masking, so the encoder's outputs at
   a shorter utterance's padded frames are stacked into its last position: its result depends on
   what else is in the batch. nano8k zeroes encoder frames past each length before the adaptor
   (mask_adaptor_padding()), in training, validation and decoding alike.
19. AUDIO POSITIONS IN TRAINING — FunASR: the training dataset always gives the LLM the low frame
   rate's number of audio positions (about one per 8 encoder frames, `if True:` in datasets.py)
   whatever audio_adaptor_conf.use_low_frame_rate says; inference honours the flag. nano8k refuses
   use_low_frame_rate: false for training (check_training_audio_path()): downsample_rate is the
   switch that changes how much audio one position covers, in training and decoding alike.
16. DEEPSPEED — FunASR: deepspeed_config null (the released value) crashes, the JSON silently
   replaces train_conf's accumulation/clipping/precision, and checkpoints become DeepSpeed
   directories under FunASR's file names. nano8k: presets, "auto" filled from train_conf (conflicts
   logged), FunASR's single-file checkpoints plus a resumable DeepSpeed state (deepspeed_support.py).
20. RESUME INSIDE AN EPOCH — FunASR: only one of its batch samplers honours build_iter's
   start_step; nano8k skips by loading the batches for the others (sampler_skips()).
21. KEYBOARD INTERRUPT — `import funasr` loses a Ctrl-C that arrives during it (the run then
   trains to the end); nano8k records signals itself (interrupts.py) and acts on them between steps.
22. RELATIVE AUDIO PATHS — FunASR's loader opens a manifest's relative `!path` against the
   process's working directory, so one manifest trains or silently swaps in random samples
   depending on where training starts. nano8k's one path rule (data.sources) takes relative paths
   from the manifest's directory in prepare, check, simulate and decode; the index of a training
   run does the same (manifest_relative_paths()). A list file of manifests keeps FunASR's rule.
23. LORA — FunASR (funasr/models/lora, for llm_conf.use_lora) creates the adapters in the LLM's
   dtype: in bf16, AdamW at lr 1e-5 left 88% of lora_A unchanged after 200 steps (the probe of
   anchors-2026-12.md §1.6; tests/test_lora.py checks fp32 moves them all). A layer's own
   `.eval()` merges B@A into the shared base weight in place (the adapters then get no gradient),
   and nano8k's frozen-module eval mode (item 5) switched off their dropout. nano8k: adapters in
   fp32, their path computed in fp32 outside autocast, merging off (fold_lora() folds them for
   export, in fp32), dropout on in training (prepare_lora(), set_train_mode()); adapters missing
   from the weights loaded start fresh (B = 0: the model is unchanged) and are logged; the keys
   FunASR's LoRA ignores are given their meaning or refused (model.check_lora).
24. AUGMENTATION — FunASR's Nano dataset has one waveform hook, `preprocessor_noise` (a class
   from its registry, given the samples only: no key, no epoch), applied to validation too, and
   its token batcher counts the lengths the manifest states, not the perturbed ones. nano8k
   (augment.Augmenter, +augment=...): the hook is set on the training dataset only (each one
   build_iter makes), the sample's key reaches it through the dataset's index (KeyedIndex), the
   epoch is set before each epoch's loader starts its workers, and the lengths the batcher reads
   are scaled by the slowest speed factor (attach_augmentation()).
25. EMPTY TRANSCRIPTS — FunASR's index drops every line whose text_length is below 1
   (fun_asr_datasets/datasets.py:458-464), and scp2jsonl writes 0 for an empty transcript, so a
   model can never be taught that a non-speech segment's answer is no words; its dataset would
   train such a line correctly (the target is `<|im_end|>` alone, and the CTC loss of an empty
   target is the all-blank path). nano8k's manifest writer (data/manifest.py, record()) gives an
   empty transcript text_length 1, the length of that target; `data check` notes such lines
   (`non_speech`) instead of flagging them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import os
import re
import sys
import types
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from nano8k.errors import UserError

log = logging.getLogger(__name__)


# 9: the modules whose @tables.register decorators Fun-ASR-Nano's configs need (model, encoder,
# adaptor and CTC decoder, front end, SpecAug, tokenizers, dataset, prompt, sampler, data loader).
NANO_MODULES = (
    "funasr.models.fun_asr_nano.model", "funasr.models.sense_voice.model", "funasr.models.llm_asr.adaptor",
    "funasr.models.specaug.specaug", "funasr.frontends.wav_frontend", "funasr.tokenizer.hf_tokenizer",
    "funasr.tokenizer.whisper_tokenizer", "funasr.datasets.fun_asr_datasets.datasets",
    "funasr.datasets.fun_asr_datasets.multicontext_prompt", "funasr.datasets.audio_datasets.index_ds",
    "funasr.datasets.audio_datasets.samplers", "funasr.datasets.dataloader_entry",
)
# config key -> the registry table FunASR looks its value up in
REGISTRY_KEYS = {
    "model": "model_classes", "audio_encoder": "encoder_classes", "audio_adaptor": "adaptor_classes",
    "ctc_decoder": "adaptor_classes", "frontend": "frontend_classes", "specaug": "specaug_classes",
    "tokenizer": "tokenizer_classes", "ctc_tokenizer": "tokenizer_classes", "dataset": "dataset_classes",
    "dataset_conf.index_ds": "index_ds_classes", "dataset_conf.batch_sampler": "batch_sampler_classes",
    "dataset_conf.dataloader": "dataloader_classes", "dataset_conf.prompt_classes": "prompt_classes",
    "dataset_conf.ctc_tokenizer": "tokenizer_classes",
}


def quiet_funasr_import() -> None:
    """Import funasr without its side effects on the process (item 9).

    FunASR prints an "ffmpeg is not installed" banner (soundfile reads audio here), sets
    HYDRA_FULL_ERROR=1 for the whole process (funasr/__init__.py), which turns every later
    one-line Hydra error, in this process and its children, into a traceback, and imports all of
    its submodules through pkgutil.walk_packages; nano8k imports the NANO_MODULES instead.
    """
    import importlib
    import pkgutil
    import sys

    if "funasr" in sys.modules:
        return
    before = os.environ.get("HYDRA_FULL_ERROR")
    walk = pkgutil.walk_packages
    pkgutil.walk_packages = lambda *args, **kwargs: iter(())  # funasr/__init__.py's import_submodules
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import funasr  # noqa: F401  (imported for its side effects, undone below)
            for name in NANO_MODULES:
                importlib.import_module(name)
    finally:
        pkgutil.walk_packages = walk
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def require_registered(cfg: dict) -> None:
    """9: every registry name the config uses is registered; for one outside NANO_MODULES, FunASR's
    own full import (every module) runs, as `import funasr` would have."""
    from nano8k import config

    quiet_funasr_import()
    from funasr.register import tables

    names = {key: config.lookup(cfg, key) for key in REGISTRY_KEYS}
    missing = [f"{key}={name}" for key, name in names.items()
               if isinstance(name, str) and name not in (getattr(tables, REGISTRY_KEYS[key], None) or {})]
    if missing:
        import funasr

        log.info("%s: not among the modules nano8k imports for Fun-ASR-Nano; importing all of FunASR",
                 ", ".join(missing))
        with contextlib.redirect_stdout(io.StringIO()):
            funasr.import_submodules("funasr")


@contextlib.contextmanager
def funasr_prints_to_log() -> Iterator[None]:
    """FunASR reports with print() (sample counts, missing keys); send those lines to the log."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    for line in buffer.getvalue().splitlines():
        if line.strip():
            log.debug("funasr: %s", line.strip())


def data_splits(train_list: str, dataset_conf: dict) -> int:
    """How many slices one epoch goes through: data_split_num for a list file, 1 for a manifest."""
    if str(train_list).endswith((".jsonl", ".json")):
        return 1
    return max(1, int(dataset_conf.get("data_split_num", 1) or 1))


# 22: relative audio paths


class KeyedIndex:
    """FunASR's index of a training dataset, telling the augmenter which sample is being read
    (its `key`), and stretching the lengths the token batcher reads by the slowest speed (item 24)."""

    def __init__(self, inner: Any, augmenter: Any):
        self.inner, self.augmenter, self.stretch = inner, augmenter, augmenter.slowest

    def __getitem__(self, index: int) -> Any:
        item = self.inner[index]
        self.augmenter.key = item.get("key", index) if isinstance(item, dict) else index
        return item

    def __len__(self) -> int:
        return len(self.inner)

    def get_source_len(self, data_dict: Any) -> Any:
        length = self.inner.get_source_len(data_dict)
        return math.ceil(length * self.stretch) if self.stretch != 1.0 else length

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "augmenter", "stretch"):  # during unpickling, before __dict__ is filled
            raise AttributeError(name)
        return getattr(self.inner, name)


def attach_augmentation(dataloader: Any, augmenter: Any) -> None:
    """Augment the training samples of a FunASR dataloader (DataloaderMapStyle): its training
    dataset now and each one build_iter builds for a slice of the list; validation stays as it is."""
    def attach(dataset: Any) -> Any:
        if not isinstance(dataset.index_ds, KeyedIndex):
            dataset.index_ds = KeyedIndex(dataset.index_ds, augmenter)
        dataset.preprocessor_noise = augmenter
        return dataset

    attach(dataloader.dataset_tr)
    original = dataloader.dataset_class

    def training_dataset(*args: Any, **kwargs: Any) -> Any:
        dataset = original(*args, **kwargs)
        return attach(dataset) if kwargs.get("is_training", True) else dataset

    dataloader.dataset_class = training_dataset


def manifest_relative_paths() -> None:
    """Make FunASR's `FunASR` index take a manifest's relative audio paths from the manifest's
    directory (once per process; FunASR's own behaviour for a list file of manifests)."""
    from funasr.register import tables

    from nano8k.data import SPEECH_BEGIN, SPEECH_END, resolve_path
    from nano8k.data.audio import is_url

    index_class = tables.index_ds_classes.get("FunASR")
    if index_class is None or getattr(index_class, "_nano8k_relative_paths", False):
        return
    original = index_class.__init__
    tag = re.compile(re.escape(SPEECH_BEGIN) + r"!(.*?)" + re.escape(SPEECH_END), re.S)

    def __init__(self, path: str, **kwargs):
        original(self, path, **kwargs)
        if not str(path).endswith((".jsonl", ".json")):
            return
        root = os.path.dirname(os.path.abspath(path))

        def absolute(match: re.Match) -> str:
            location = match[1]
            if os.path.isabs(location) or is_url(location):
                return match[0]
            return f"{SPEECH_BEGIN}!{resolve_path(location, root)}{SPEECH_END}"

        for content in getattr(self, "contents", []):
            users = content.get("user")
            if isinstance(users, list):
                content["user"] = [tag.sub(absolute, u) if isinstance(u, str) else u for u in users]

    index_class.__init__ = __init__
    index_class._nano8k_relative_paths = True


def cpu_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


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

    ctc_weight = float(cfg.get("ctc_weight", 0.3) if cfg.get("ctc_weight") is not None else 0.3)
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
# 11: audio at the front end's rate
# --------------------------------------------------------------------------------------------


def waveform(audio: Any, frontend_fs: int, sample_rate: int | None = None) -> Any:
    """Mono float32 samples at `frontend_fs` from a file path or an array of a stated rate."""
    import numpy as np

    from nano8k import channel
    from nano8k.data import audio as audio_files

    if isinstance(audio, (str, Path)):
        try:
            samples, sample_rate = audio_files.load(str(audio))
        except audio_files.AudioProblem as err:
            raise UserError(err.detail) from None
        samples = samples.mean(axis=1)
    else:
        if sample_rate is None:
            raise UserError("an in-memory audio array needs its sample rate (FunASR would assume 16000 Hz)")
        samples = np.asarray(audio, dtype=np.float32)
        samples = samples.mean(axis=1) if samples.ndim == 2 else samples  # [samples, channels]
    if int(sample_rate) != int(frontend_fs):
        samples = channel.resample(samples, int(sample_rate), int(frontend_fs)).astype(np.float32)
    return samples


def fbank(audio: Any, frontend: Any, sample_rate: int | None = None) -> tuple[Any, Any]:
    """FunASR's features (fbank + LFR, as its dataset computes them) of a file or a rated array."""
    import torch
    from funasr.utils.load_utils import extract_fbank

    samples = torch.from_numpy(waveform(audio, frontend.fs, sample_rate))
    return extract_fbank(samples, data_type="sound", frontend=frontend, is_final=True)


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


def checkpoint_in(path: Path) -> Path:
    """A checkpoint file as is; a run directory -> its averaged, else best, else latest checkpoint."""
    if path.is_file():
        return path
    if path.is_dir():
        averaged = sorted(path.glob("model.pt.avg*"), key=lambda p: int(re.sub(r"\D", "", p.name[len("model.pt.avg"):]) or 0))
        for candidate in [*reversed(averaged), path / "model.pt.best", path / "model.pt"]:
            if candidate.is_file():
                return candidate
        raise UserError(f"init_param: no checkpoint in {path} (looked for model.pt.avg*, model.pt.best, model.pt)")
    raise UserError(f"init_param: {path} does not exist")


def read_checkpoint(path: Path, mmap: bool = False) -> Any:
    """The object a checkpoint file holds, unpickled with weights_only=True: tensors and plain
    values only, so a crafted file cannot run code (nano8k's own checkpoints, random states
    included, need nothing more). One-line error when unreadable or refused. mmap: tensors stay
    on disk until read (looking at a multi-GB checkpoint's fields costs next to nothing)."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError as err:
        if mmap and "_use_new_zipfile_serialization" in str(err):  # torch's legacy format cannot be mapped
            return read_checkpoint(path)
        reason = str(err).strip().split(". ")[0].splitlines()[0][:120] if str(err).strip() else "empty"
        raise UserError(f"{path}: not a readable checkpoint ({type(err).__name__}: {reason})") from None
    except pickle.UnpicklingError as err:
        what = str(err).split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0][:120]
        raise UserError(f"{path}: refused: it holds Python objects beyond tensors and plain values, and loading it "
                        f"could run code ({what}); nano8k loads checkpoints with weights_only=True") from None
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint gets the same one-liner
        reason = str(err).strip().split(". ")[0].splitlines()[0][:120] if str(err).strip() else "empty"
        raise UserError(f"{path}: not a readable checkpoint ({type(err).__name__}: {reason})") from None


def weights_in(checkpoint: Any) -> dict:
    """The state dict of a checkpoint object (FunASR's, nano8k's or a bare one), `module.` stripped."""
    state = checkpoint
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


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
        checkpoint = read_checkpoint(source, mmap=not partial)
        state = weights_in(checkpoint)
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


# --------------------------------------------------------------------------------------------
# 7: atomic checkpoint files
# --------------------------------------------------------------------------------------------


# 20. RESUME INSIDE AN EPOCH — FunASR: build_iter(start_step=k) makes only the buffered token
# sampler (CustomDistributedBufferDynamicBatchSampler: batch_type token with sort_size > 0, as in
# every nano8k stage) leave out an epoch's first k batches; the other samplers take the argument
# and ignore it, and the buffered one's len() is 1 until it is iterated. nano8k asks, and skips by
# loading the batches where the sampler does not.


def sampler_skips(loader: Any, skip: int) -> bool:
    """20: does this training loader's batch sampler itself leave out the first `skip` batches?"""
    return skip == 0 or getattr(getattr(loader, "batch_sampler", None), "start_step", 0) == skip


def batches_in(loader: Any) -> int | None:
    """20: batches an epoch's loader yields, once its iterator exists; None when unknown."""
    sampler = getattr(loader, "batch_sampler", None)
    if type(sampler).__name__ == "CustomDistributedDynamicBatchSampler":
        return None  # its len() is always 1
    try:
        return len(loader)
    except TypeError:
        return None


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through a temporary file and a rename (FunASR writes in place, so a kill or a
    full disk mid-write leaves a torn checkpoint): the file is whole or not there, and the one it
    replaces stays intact when the write fails (a one-line error saying how much space is left)."""
    import shutil

    import torch

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch's zip writer reports ENOSPC as a RuntimeError
        log.debug("writing %s failed: %s", path, err)
        reason = (err.strerror if isinstance(err, OSError) else None) or "the write failed"
        try:
            free = f"{shutil.disk_usage(path.parent).free / 1e9:.2f} GB free on that file system"
        except OSError:
            free = "free space unknown"
        raise UserError(f"{path}: cannot write the checkpoint ({reason}; {free}: disk full, or a quota?); the "
                        "checkpoints written before it are intact") from None
    finally:
        if tmp.exists():
            tmp.unlink()


# --------------------------------------------------------------------------------------------
# 12-15: decoding (`nano8k decode`). FunASR decodes Fun-ASR-Nano one utterance at a time; these
# helpers run FunASR's own per-utterance preparation, then the networks on a whole batch.
# --------------------------------------------------------------------------------------------


def decoding_frontend(frontend: Any) -> Any:
    """12: a copy of the front end with its own (unseeded) dither off; the training front end it
    is copied from, shared with the data loader, keeps its dither."""
    import copy

    quiet = copy.copy(frontend)
    quiet.dither = 0.0
    return quiet


def frontend_dither(frontend: Any) -> tuple[float, float]:
    """12: (dither, sample scale) of a front end: WavFrontend adds dither x N(0, 1) to samples it
    first scales by 2**15 (upsacle_samples, FunASR's spelling); FunASR's default dither is 1.0."""
    dither = float(getattr(frontend, "dither", 1.0) or 0.0)
    return dither, float(1 << 15) if getattr(frontend, "upsacle_samples", True) else 1.0


def seeded_dither(samples: Any, dither: float, scale: float, seed: int = 0) -> Any:
    """12: samples plus the noise the training front end would add (dither in its units, so
    dither / scale in the samples'), drawn from a generator seeded per utterance: deterministic,
    and independent of the batch the utterance is decoded in."""
    import numpy as np

    if not dither:
        return samples
    noise = np.random.default_rng(seed).standard_normal(len(samples)).astype(np.float32)
    return (np.asarray(samples, dtype=np.float32) + (dither / scale) * noise).astype(np.float32)


def training_prompt(cfg: dict, base_prompt: str, hotwords: Sequence[str] = ()) -> str:
    """17: the user prompt (before the audio) as a run's training built it: the dataset's
    prompt class (dataset_conf.prompt_classes, e.g. MultiContextPrompt) with its prompt_conf puts
    its context header, and the hotwords in its own field, before the task prompt. The class
    shuffles hotwords with Python's random: seeded here, so decoding stays deterministic."""
    import random

    dataset_conf = cfg.get("dataset_conf") or {}
    name = dataset_conf.get("prompt_classes")
    if not name:
        return base_prompt
    quiet_funasr_import()
    from funasr.register import tables

    prompt_class = tables.prompt_classes.get(name)
    if prompt_class is None:
        raise UserError(f"dataset_conf.prompt_classes: unknown class {name!r}; FunASR has "
                        f"{', '.join(sorted(tables.prompt_classes))}")
    with funasr_prints_to_log():
        prompter = prompt_class(**(dataset_conf.get("prompt_conf") or {}))
    language = prompter.detect_language(base_prompt)
    state = random.getstate()
    random.seed(0)
    try:
        context = prompter.get_prompt({"hotwords": list(hotwords)} if hotwords else {}, language)
    finally:
        random.setstate(state)
    return context + base_prompt


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


def check_training_audio_path(cfg: dict) -> None:
    """19: refuse what FunASR's training dataset would silently not do."""
    if (cfg.get("audio_adaptor_conf") or {}).get("use_low_frame_rate") is False:
        raise UserError("audio_adaptor_conf.use_low_frame_rate: false is applied by FunASR's inference only; its "
                        "training dataset always gives the LLM the low frame rate's positions (about one per 8 "
                        "encoder frames), so decoding would feed the model what it never learned; keep it true "
                        "(audio_adaptor_conf.downsample_rate sets how many frames one position covers)")


@dataclasses.dataclass
class UtteranceInputs:
    """One utterance as FunASR's inference prepares it: LFR features [T, D], the prompt's token ids
    with `fake_token_len` placeholder ids at `fbank_beg` (where the adaptor output goes)."""

    speech: Any
    source_ids: Any
    fbank_beg: int
    fake_token_len: int


def utterance_inputs(model: Any, samples: Any, prompt: str, tokenizer: Any, frontend: Any,
                     funasr_cfg: dict) -> UtteranceInputs:
    """FunASR's own preparation of one utterance (FunASRNano.generate_chatml -> data_template ->
    data_load_speech, what inference_prepare runs), on samples already at frontend.fs: the same
    ChatML, the same token ids (dataset_conf.do_think / sys_prompt honoured), the same features."""
    import numpy as np
    import torch

    audio = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    contents = model.data_template(model.generate_chatml(prompt, audio))
    passed = ("tokenizer", "frontend", "device", "audio_fs", "prev_text")
    kwargs = {k: v for k, v in funasr_cfg.items() if k not in passed}
    with torch.no_grad():
        out = model.data_load_speech(contents, tokenizer, frontend, meta_data={}, audio_fs=frontend.fs, **kwargs)
    if not len(out["speech"]):
        raise RuntimeError("FunASR built no speech features for the prompt (no <|startofspeech|> tag?)")
    return UtteranceInputs(out["speech"][0], out["source_ids"][0], int(out["fbank_beg"][0, 0]),
                           int(out["fake_token_len"][0, 0]))


def encode_batch(model: Any, speeches: Sequence[Any], device: Any) -> tuple[Any, Any, Any, Any]:
    """13: encoder and adaptor on a padded batch: (encoder_out, encoder_lens, adaptor_out, adaptor_lens)."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    lengths = torch.tensor([s.shape[0] for s in speeches], dtype=torch.int32, device=device)
    speech = pad_sequence([s.to(device) for s in speeches], batch_first=True, padding_value=0.0)
    encoder_out, encoder_lens = model.encode(speech, lengths)
    adaptor_out, adaptor_lens = model.audio_adaptor(encoder_out, encoder_lens)
    return encoder_out, encoder_lens, adaptor_out, adaptor_lens


def ctc_greedy(model: Any, encoder_out: Any, encoder_lens: Any) -> tuple[list[str], Any, list[list[int]]]:
    """CTC greedy hypotheses of a batch, as FunASRNano.inference_llm computes its ctc_text: argmax,
    repeats collapsed, blanks dropped, the CTC tokenizer's text without <|nospeech|>. Also returns
    the batch's log-probabilities [B, T, V] (padded; for word times and confidence) and each
    utterance's frame-wise argmax ids (as long as its frames: the speech gate's evidence)."""
    hidden, lens = model.ctc_decoder(encoder_out, encoder_lens)
    log_probs = model.ctc.log_softmax(hidden)
    best = log_probs.argmax(dim=-1).tolist()
    texts, labels = [], []
    for i, row in enumerate(best):
        frames = row[: int(lens[i])]
        ids = [t for j, t in enumerate(frames) if t != model.blank_id and (j == 0 or t != frames[j - 1])]
        texts.append(model.ctc_tokenizer.decode(ids).replace("<|nospeech|>", ""))
        labels.append(frames)
    return texts, log_probs, labels


def eos_ids(llm: Any, tokenizer: Any) -> list[int]:
    """Token ids that end a hypothesis: the LLM config's eos_token_id(s), else the tokenizer's <|im_end|>."""
    eos = getattr(llm.config, "eos_token_id", None)
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if not ids:
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        ids = [im_end] if isinstance(im_end, int) and im_end >= 0 else []
    return ids


class _ChosenProbability:
    """A logits processor that keeps, at each step, the probability of the token greedy search
    picks (the largest), per row: one float a step, where output_scores would keep the vocabulary."""

    def __init__(self) -> None:
        self.steps: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        x = scores.float()  # the largest probability is exp(max - logsumexp): no softmax of the vocabulary made
        self.steps.append(torch.exp(x.amax(dim=-1) - torch.logsumexp(x, dim=-1)))  # on the device: no sync a step
        return scores


def generate_batch(model: Any, inputs: Sequence[UtteranceInputs], adaptor_out: Any, adaptor_lens: Any, tokenizer: Any,
                   max_new_tokens: int, dtype: Any = None, limits: Sequence[int] | None = None, scored: bool = False
                   ) -> list[tuple[str, list[float] | None]]:
    """13: greedy LLM decoding of a batch, left padded (prompt_embeds()); position ids follow the
    mask (transformers computes them from it), so a row decodes as it would alone. The text is
    FunASR's `text` (hypothesis_text()). `limits`: each row's own max_new_tokens.
    `scored`: each text comes with, for each of its characters, the probability greedy search gave
    the token that wrote it (word confidence's LLM measure); else None."""
    import torch

    llm = model.llm
    embeds, mask = prompt_embeds(model, inputs, adaptor_out, adaptor_lens, dtype)
    stop = eos_ids(llm, tokenizer)
    pad = llm.config.pad_token_id if llm.config.pad_token_id is not None else (stop[0] if stop else 0)
    from transformers import LogitsProcessorList

    chosen = _ChosenProbability()
    generated = llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=int(max_new_tokens),
                             do_sample=False, num_beams=1, eos_token_id=stop or None, pad_token_id=pad,
                             logits_processor=LogitsProcessorList([chosen] if scored else []))
    probs = torch.stack(chosen.steps, dim=1).tolist() if chosen.steps else [[] for _ in inputs]  # [batch][step]
    out = []
    for i, row in enumerate(generated.tolist()):
        if limits is not None:  # each row's own bound (the batch ran to the largest)
            row = row[:limits[i]]
        for j, token in enumerate(row):
            if token in stop:
                row = row[:j]
                break
        if scored:
            out.append(text_with_char_probs(tokenizer, row, probs[i][:len(row)]))
        else:
            out.append((hypothesis_text(tokenizer, row), None))
    return out


def prompt_embeds(model: Any, inputs: Sequence[UtteranceInputs], adaptor_out: Any, adaptor_lens: Any,
                  dtype: Any = None) -> tuple[Any, Any]:
    """13: the LLM's input for a batch, left padded: (inputs_embeds [B, W, H], attention_mask [B, W]).
    Each row is FunASR's inputs_embeds for its utterance (prompt embeddings with the adaptor output
    spliced in at fbank_beg, inference_prepare), placed at the right end; the padding is zeros
    with mask 0."""
    import torch

    llm = model.llm
    device = adaptor_out.device
    dtype = dtype or next(llm.parameters()).dtype
    width = max(len(x.source_ids) for x in inputs)
    ids = torch.zeros(len(inputs), width, dtype=torch.long, device=device)
    mask = torch.zeros(len(inputs), width, dtype=torch.long, device=device)
    for i, x in enumerate(inputs):
        ids[i, width - len(x.source_ids):] = x.source_ids.clamp(min=0).to(device)
        mask[i, width - len(x.source_ids):] = 1
    embeds = llm.get_input_embeddings()(ids).to(dtype)
    for i, x in enumerate(inputs):
        n = min(x.fake_token_len, int(adaptor_lens[i]))  # FunASR's fallback when they differ
        begin = width - len(x.source_ids) + x.fbank_beg
        embeds[i, begin:begin + n] = adaptor_out[i, :n].to(dtype)
    return embeds * mask[..., None].to(dtype), mask


def hypothesis_text(tokenizer: Any, ids: Sequence[int]) -> str:
    """FunASR's `text` of generated ids: special tokens skipped, `/sil` -> space, whitespace collapsed."""
    return re.sub(r"\s+", " ", tokenizer.decode(list(ids), skip_special_tokens=True).replace("/sil", " "))


def text_with_char_probs(tokenizer: Any, row: list[int], probs: list[float]) -> tuple[str, list[float]]:
    """FunASR's text of the generated ids (special tokens skipped, `/sil` -> space, whitespace
    collapsed) and, for each of its characters, the probability of the token that wrote it."""
    text = tokenizer.decode(row, skip_special_tokens=True)
    final = hypothesis_text(tokenizer, row)
    owner: list[float] = []  # for each character of `text`
    pieces = tokenizer.batch_decode([[token] for token in row], skip_special_tokens=True)
    if "".join(pieces) == text:  # each token decodes alone to its own characters (the common case)
        owner = [p for piece, p in zip(pieces, probs) for _ in piece]
    else:  # a character split over tokens: what decoding one more token adds is that token's
        written = ""
        for j, now in enumerate(tokenizer.batch_decode([row[:j + 1] for j in range(len(row))],
                                                       skip_special_tokens=True)):
            if not now.startswith(written):
                break
            owner += [probs[j]] * (len(now) - len(written))
            written = now
    chars: list[tuple[str, float]] = []  # `final`, character by character, with the same edits
    i = 0
    while len(owner) == len(text) and i < len(text):
        char, step = (" ", 4) if text.startswith("/sil", i) else (text[i], 1)
        if not (char.isspace() and chars and chars[-1][0] == " "):
            chars.append((" " if char.isspace() else char, owner[i]))
        i += step
    if "".join(c for c, _ in chars) != final:  # prefixes that do not decode to prefixes: never guess
        return final, [min(probs, default=1.0)] * len(final)
    return final, [p for _, p in chars]


def llm_dtype(requested: str | None, model_conf_dtype: str | None, device: str, bf16_ok: bool = True) -> str:
    """15: the LLM's dtype for decoding: `requested`; else fp32 on CPU (FunASR's inference default,
    and CPUs without native bf16 run bf16 far slower) and llm_conf.llm_dtype on GPU (fp32 where the
    GPU has no bf16)."""
    if requested:
        if requested not in ("fp32", "bf16", "fp16"):
            raise UserError(f"llm_dtype={requested}: use fp32, bf16 or fp16")
        return requested
    if not device.startswith("cuda"):
        return "fp32"
    chosen = model_conf_dtype if model_conf_dtype in ("fp32", "bf16", "fp16") else "fp32"
    return "fp32" if chosen == "bf16" and not bf16_ok else chosen
