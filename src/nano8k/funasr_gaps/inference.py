"""FunASR work-arounds 12-15 and 17: decoding as training fed the model, batched. The numbered
index is in funasr_gaps/__init__.py.
"""

from __future__ import annotations

import dataclasses
import re
import weakref
from collections.abc import Sequence
from typing import Any

from nano8k.errors import UserError
from nano8k.funasr_gaps.runtime import funasr_prints_to_log, quiet_funasr_import


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


def prompt_prefix_ids(model: Any, prompt: str, tokenizer: Any, frontend: Any, funasr_cfg: dict) -> Any:
    """26: the token ids before the audio for `prompt` (the chat template's system and user text up
    to <|startofspeech|>), from FunASR's own preparation (utterance_inputs) of half a second of
    silence: what utterance_inputs would put before any utterance's audio placeholders."""
    import numpy as np

    silence = utterance_inputs(model, np.zeros(frontend.fs // 2, dtype=np.float32), prompt, tokenizer, frontend,
                               funasr_cfg)
    return silence.source_ids[:silence.fbank_beg]


def reprompted(inputs: UtteranceInputs, prefix_ids: Any) -> UtteranceInputs:
    """26: an utterance prepared for another prompt: the ids before its audio replaced by
    `prefix_ids` (prompt_prefix_ids()); its features, audio placeholders and what follows them
    unchanged (FunASR's data_load_speech tokenises the text around the audio piece by piece)."""
    import torch

    ids = torch.cat([prefix_ids.to(inputs.source_ids.device, inputs.source_ids.dtype),
                     inputs.source_ids[inputs.fbank_beg:]])
    return UtteranceInputs(inputs.speech, ids, len(prefix_ids), inputs.fake_token_len)


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


def pad_id(llm: Any, stop: Sequence[int]) -> int:
    """The id generate pads finished rows with: the LLM config's, else its first end token."""
    return llm.config.pad_token_id if llm.config.pad_token_id is not None else (stop[0] if stop else 0)


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
    pad = pad_id(llm, stop)
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
    return _funasr_text(tokenizer.decode(list(ids), skip_special_tokens=True))


def _funasr_text(decoded: str) -> str:
    return re.sub(r"\s+", " ", decoded.replace("/sil", " "))


_TOKEN_TEXTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> {token: its text}


def _token_text(tokenizer: Any, token: int) -> str:
    """One token decoded alone (special tokens: ""), once per tokenizer and token: a transcript's
    tokens are decoded one by one for every utterance, and HF's decode costs far more than a lookup."""
    texts = _TOKEN_TEXTS.setdefault(tokenizer, {})
    if token not in texts:
        texts[token] = tokenizer.decode([token], skip_special_tokens=True)
    return texts[token]


def text_with_char_probs(tokenizer: Any, row: list[int], probs: list[float]) -> tuple[str, list[float]]:
    """FunASR's text of the generated ids (special tokens skipped, `/sil` -> space, whitespace
    collapsed) and, for each of its characters, the probability of the token that wrote it."""
    text = tokenizer.decode(row, skip_special_tokens=True)
    final = _funasr_text(text)
    owner: list[float] = []  # for each character of `text`
    pieces = [_token_text(tokenizer, token) for token in row]
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
