"""Joint CTC/LLM decoding (`strategy=joint`): the LLM's n-best, and the CTC branch's own
hypothesis (with `joint.lexicon`, also its n-best in the lexicon's words: lexicon.py), rescored
by both heads.

Fun-ASR-Nano has two heads on one encoder. Greedy decoding lets the LLM alone decide, although on
the demo's model its CTC branch is the more accurate of the two (README, "Decoding strategies"),
and the two err on different utterances. Here the candidates of an utterance are the LLM's beam
search n-best (`beam_size`) and the CTC greedy hypothesis; each is scored by

    (1 - ctc_weight) * log P_llm(text + end | audio, prompt)      teacher-forced, one forward pass
    + ctc_weight * log P_ctc(text | audio)                         all CTC paths (torch's ctc_loss)
    + length_bonus * LLM tokens                                    against both heads' bias to short texts

and the best is the transcript: n-best rescoring, which costs one beam search and one scoring pass
(a beam search scored by CTC prefixes at every step would cost a CTC prefix computation per
token and beam). ESPnet and WeNet rescore their own attention decoders with CTC the same way. A candidate the CTC branch cannot emit at all (more tokens than
frames) scores -inf there; an utterance none of whose candidates it can emit is decided by the LLM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from nano8k import funasr_gaps
from nano8k.decoding.confidence import frame_confidence
from nano8k.decoding.lexicon import Lexicon, candidates as lexicon_candidates

# the lexicon search keeps twice beam_size hypotheses (four times, in a one-off measurement on the
# demo's 300 training utterances: 0.3 points of CER better, the decode 1.1x as long)
LEXICON_BEAM = 2


@dataclass
class JointSettings:
    """The `joint` keys of decode and valid_decode (their defaults, in conf/decode.yaml and
    conf/train.yaml, were chosen on 300 training utterances of the demo's corpus, never on its dev set)."""

    ctc_weight: float  # 0: the LLM's n-best alone; 1: the CTC branch decides among them
    beam_size: int  # LLM candidates (beam search); 1: its greedy text
    length_bonus: float  # added per LLM token (the end token included)
    accept_ctc: float | None = None  # the CTC text taken without the LLM where every frame is this sure; None: never
    lexicon: str | None = None  # a word list: the CTC branch's n-best spelled in its words joins the candidates


@dataclass
class Candidate:
    text: str
    llm_ids: list[int]  # the LLM's tokens of the text (without the end token)
    source: str  # "llm" (n-best), "ctc" (its greedy text) or "lexicon" (its n-best in the lexicon's words)
    llm: float = 0.0  # log-probability of llm_ids and the end token under the LLM, teacher-forced
    ctc: float = 0.0  # log-likelihood of the text under the CTC branch
    score: float = 0.0
    token_log_probs: list[float] | None = None  # of llm_ids and the end token, teacher-forced

    def report(self) -> dict:
        return {"text": self.text, "source": self.source, "llm": round(self.llm, 3),
                "ctc": None if math.isinf(self.ctc) else round(self.ctc, 3),
                "tokens": len(self.token_log_probs or ()), "score": round(self.score, 3)}


def ctc_certainty(log_probs: Any, frame_lens: Sequence[int]) -> list[float]:
    """Each utterance's least sure CTC frame (of its first frame_lens[b] in `log_probs` [B, T, V]):
    confidence.frame_confidence, 1 - the frame's normalised Tsallis entropy. The first step of
    self-speculative decoding with CTC drafts (Saon et al., arXiv 2603.11243): where every frame is
    sure, the CTC text is taken as it is and the LLM is not run."""
    import torch

    sure = frame_confidence(log_probs)  # [B, T]
    past = torch.arange(sure.size(1), device=sure.device)[None, :] >= torch.as_tensor(list(frame_lens),
                                                                                      device=sure.device)[:, None]
    return sure.masked_fill(past, 1.0).amin(dim=1).tolist()


def nbest(model: Any, inputs: Sequence[Any], adaptor_out: Any, adaptor_lens: Any, tokenizer: Any, beam_size: int,
          limits: Sequence[int], dtype: Any = None) -> list[list[list[int]]]:
    """The LLM's beam search n-best of each utterance: token ids (end token excluded), each cut at
    its utterance's own token limit, duplicates dropped, best first."""
    llm = model.llm
    embeds, mask = funasr_gaps.prompt_embeds(model, inputs, adaptor_out, adaptor_lens, dtype)
    stop = funasr_gaps.eos_ids(llm, tokenizer)
    pad = funasr_gaps.pad_id(llm, stop)
    generated = llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=int(max(limits)),
                             do_sample=False, num_beams=beam_size, num_return_sequences=beam_size,
                             eos_token_id=stop or None, pad_token_id=pad).tolist()
    out: list[list[list[int]]] = []
    for i in range(len(inputs)):
        seen, mine = set(), []
        for row in generated[i * beam_size:(i + 1) * beam_size]:
            row = row[:limits[i]]
            row = row[:next((j for j, t in enumerate(row) if t in stop), len(row))]
            if tuple(row) not in seen:
                seen.add(tuple(row))
                mine.append(row)
        out.append(mine)
    return out


def llm_log_probs(model: Any, inputs: Sequence[Any], adaptor_out: Any, adaptor_lens: Any,
                  rows: Sequence[tuple[int, list[int]]], dtype: Any = None) -> list[list[float]]:
    """Teacher-forced log-probabilities of each (utterance index, token ids) row's tokens after its
    utterance's prompt and audio: one forward pass per len(inputs) rows (the logits of a chunk
    are [rows, tokens, vocabulary])."""
    import torch

    llm = model.llm
    embeds, mask = funasr_gaps.prompt_embeds(model, inputs, adaptor_out, adaptor_lens, dtype)
    table = llm.get_input_embeddings()
    out: list[list[float]] = []
    chunk = max(1, len(inputs))
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        longest = max(len(ids) for _, ids in part)
        owner = torch.tensor([i for i, _ in part], device=mask.device)
        ids = torch.zeros(len(part), longest, dtype=torch.long, device=mask.device)
        tail = torch.zeros(len(part), longest, dtype=mask.dtype, device=mask.device)
        for r, (_, tokens) in enumerate(part):
            ids[r, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            tail[r, :len(tokens)] = 1
        batch_mask = torch.cat([mask[owner], tail], dim=1)
        batch_embeds = torch.cat([embeds[owner], table(ids).to(embeds.dtype) * tail[..., None].to(embeds.dtype)], dim=1)
        positions = (batch_mask.cumsum(-1) - 1).clamp(min=0)  # as generate's: padding takes no position
        logits = llm(inputs_embeds=batch_embeds, attention_mask=batch_mask, position_ids=positions,
                     logits_to_keep=longest + 1).logits[:, :-1]  # position k predicts token k of the text
        chosen = logits.float().log_softmax(-1).gather(2, ids[..., None])[..., 0]
        out += [chosen[r, :len(tokens)].tolist() for r, (_, tokens) in enumerate(part)]
    return out


def ctc_log_likelihoods(log_probs: Any, frame_lens: Sequence[int], rows: Sequence[tuple[int, list[int]]],
                        blank: int) -> list[float]:
    """log P_ctc(target | audio) of each (utterance index, CTC token ids) row, summed over every CTC
    path (torch's ctc_loss); -inf where no path exists."""
    import torch

    if not rows:
        return []
    owner = torch.tensor([i for i, _ in rows], device=log_probs.device)
    lens = torch.tensor([frame_lens[i] for i, _ in rows], dtype=torch.long)
    targets = torch.tensor([t for _, ids in rows for t in ids], dtype=torch.long)
    target_lens = torch.tensor([len(ids) for _, ids in rows], dtype=torch.long)
    loss = torch.nn.functional.ctc_loss(log_probs[owner].float().transpose(0, 1), targets.to(log_probs.device),
                                        lens, target_lens, blank=blank, reduction="none", zero_infinity=False)
    return [-float(x) for x in loss.cpu()]


def decode(model: Any, tokenizer: Any, inputs: Sequence[Any], adaptor_out: Any, adaptor_lens: Any,
           ctc_texts: Sequence[str], ctc_log_probs: Any, frame_lens: Sequence[int], settings: JointSettings,
           limits: Sequence[int], dtype: Any = None, lexicon: Lexicon | None = None
           ) -> list[tuple[Candidate, list[Candidate]]]:
    """Each utterance's chosen candidate and all its candidates (scored). With a `lexicon`, the
    CTC branch's `beam_size` best word sequences in its words are candidates too."""
    stop = funasr_gaps.eos_ids(model.llm, tokenizer)
    end = [stop[0]] if stop else []
    in_words = (lexicon_candidates(lexicon, ctc_log_probs, frame_lens, model.blank_id, LEXICON_BEAM * settings.beam_size)
                if lexicon is not None else [[] for _ in inputs])
    candidates: list[list[Candidate]] = []
    for i, ids_list in enumerate(nbest(model, inputs, adaptor_out, adaptor_lens, tokenizer, settings.beam_size,
                                       limits, dtype)):
        mine: dict[str, Candidate] = {}
        for ids in ids_list:
            text = funasr_gaps.hypothesis_text(tokenizer, ids).strip()
            mine.setdefault(text, Candidate(text, ids, "llm"))
        for text, source in [(ctc_texts[i].strip(), "ctc"), *((t, "lexicon") for t in in_words[i][:settings.beam_size])]:
            mine.setdefault(text, Candidate(text, tokenizer.encode(text, add_special_tokens=False), source))
        candidates.append(list(mine.values()))
    rows = [(i, c) for i, cands in enumerate(candidates) for c in cands]
    token_lp = llm_log_probs(model, inputs, adaptor_out, adaptor_lens, [(i, c.llm_ids + end) for i, c in rows],
                             dtype)
    ctc = ctc_log_likelihoods(ctc_log_probs, frame_lens, [(i, model.ctc_tokenizer.encode(c.text)) for i, c in rows],
                              model.blank_id)
    for (_, c), lp, ctc_lp in zip(rows, token_lp, ctc):
        c.token_log_probs, c.llm, c.ctc = lp, sum(lp), ctc_lp
    out = []
    for cands in candidates:
        heard = any(not math.isinf(c.ctc) for c in cands)  # else the LLM decides
        weight = settings.ctc_weight if heard else 0.0
        for c in cands:
            c.score = ((1 - weight) * c.llm + (weight * c.ctc if weight else 0.0)
                       + settings.length_bonus * len(c.token_log_probs))
        out.append((max(cands, key=lambda c: c.score), cands))
    return out


def char_probs(tokenizer: Any, chosen: Candidate) -> list[float] | None:
    """The chosen text's per-character LLM probabilities (word confidence's LLM measure): those the
    LLM gave the tokens that wrote it, teacher-forced; None where they cannot be matched."""
    if chosen.token_log_probs is None:
        return None
    probs = [math.exp(x) for x in chosen.token_log_probs[:len(chosen.llm_ids)]]
    text, per_char = funasr_gaps.text_with_char_probs(tokenizer, chosen.llm_ids, probs)
    lead = len(text) - len(text.lstrip())
    return per_char[lead:lead + len(chosen.text)] if text.strip() == chosen.text else None
