"""Which hotwords go into each utterance's prompt: the ones the CTC branch's posteriors support.

FunASR puts the whole hotword list into the prompt of every utterance. A long list then costs
prompt length (time and memory a token) and, as its authors found (arXiv 2411.06437, CTC-assisted
contextual ASR for LLM-based recognisers), accuracy: the LLM writes listed words the audio does not
hold. Their remedy, built here: the CTC branch says which entries can be in the audio, and only
those go into the utterance's prompt.

Each hotword (spelled in the CTC branch's vocabulary) is spotted anywhere in the utterance: the
best CTC path of its tokens through some window of frames (starting and ending on one of its
tokens, blanks between them), each frame scored relative to its most likely symbol (log p(symbol)
- max log p). A hotword the CTC branch itself wrote scores 0; each frame it must be forced onto
costs what the branch prefers instead. Its score is that cost per token (<= 0); the kept ones
score at least `threshold`, the best `max_kept` of them, best first. One dynamic programme over
frames for every hotword and utterance of a batch at once ([batch, hotwords, states] a frame).
Cost: linear in the frames, the hotwords and their tokens (2,000 hotwords: about 0.14 s more a
batch of 8 short utterances on 2 CPU cores; scripts/bench_hotwords.py measures it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass
class HotwordFilterSettings:
    """decode's `hotword_filter` keys (conf/decode.yaml)."""

    enabled: bool  # with hotwords and a CTC branch: each utterance's prompt holds only the ones spotted
    threshold: float  # the least score (log-probability a token, <= 0) a kept hotword has
    max_kept: int  # at most this many in one prompt, the best first


def spellings(hotwords: Sequence[str], ctc_tokenizer: Any) -> list[list[list[int]]]:
    """Each hotword in the CTC branch's tokens, the ways it can be written: lower-cased as the
    transcripts it learned from are written (nano8k's manifests keep the data's case; the demo's
    is lower case), alone and after a space (a byte-pair vocabulary spells a word inside a text
    with its leading space: other tokens)."""
    return [[ctc_tokenizer.encode(word.lower()), ctc_tokenizer.encode(" " + word.lower())] for word in hotwords]


def scores(log_probs: Any, frame_lens: Sequence[int], spelled: Sequence[Sequence[Sequence[int]]], blank: int) -> Any:
    """[B, H] numpy: each hotword's best spelling's best local alignment in each utterance of
    `log_probs` [B, T, V] (the first frame_lens[b] frames count), per token, relative to each
    frame's best symbol; -inf where none fits (more tokens than frames)."""
    import numpy as np

    flat = [tokens for ways in spelled for tokens in ways]
    ways = [len(w) for w in spelled]
    each = spelling_scores(log_probs, frame_lens, flat, blank)
    if not len(spelled):
        return each
    starts = np.cumsum([0, *ways[:-1]], dtype=np.int64)
    return np.maximum.reduceat(each, starts, axis=1)


def spelling_scores(log_probs: Any, frame_lens: Sequence[int], spelled: Sequence[Sequence[int]], blank: int) -> Any:
    """[B, S] numpy: each token sequence's best local alignment in each utterance (`scores`)."""
    import numpy as np
    import torch

    batch, frames, _ = log_probs.shape
    count = len(spelled)
    longest = max((len(s) for s in spelled), default=0)
    if not count or not longest or not frames:
        return np.full((batch, count), -np.inf, dtype=np.float32)
    # states: token 1, blank, token 2, blank, ..., token L (2L - 1 of them); padding states are
    # never reached (their emission is -inf)
    states = 2 * longest - 1
    symbol = np.full((count, states), blank, dtype=np.int64)
    valid = np.zeros((count, states), dtype=bool)
    last = np.zeros(count, dtype=np.int64)
    for h, tokens in enumerate(spelled):
        if tokens:
            symbol[h, 0:2 * len(tokens) - 1:2] = tokens
            valid[h, :2 * len(tokens) - 1] = True
            last[h] = 2 * len(tokens) - 2
    is_token = np.zeros(states, dtype=bool)
    is_token[0::2] = True
    # a token state may be entered from two states back (over the blank) unless it repeats that token
    skip = np.zeros((count, states), dtype=bool)
    skip[:, 2:] = is_token[2:] & (symbol[:, 2:] != symbol[:, :-2])
    skip_cost = np.where(skip, 0.0, -np.inf).astype(np.float32)
    invalid_cost = np.where(valid, 0.0, -np.inf).astype(np.float32)
    # each frame relative to its best symbol, for the symbols the spellings use (gathered where the
    # posteriors are: [T, B, symbols] leaves the device, not the vocabulary); spread to the states
    # a frame at a time ([B, S, states]: all frames at once would hold T times that)
    used, where = np.unique(symbol, return_inverse=True)
    where = where.reshape(count, states)
    relative = log_probs.float() - log_probs.float().max(dim=-1, keepdim=True).values
    emit = relative.index_select(2, torch.as_tensor(used, device=log_probs.device)).transpose(0, 1).cpu().numpy()
    lens = np.asarray(list(frame_lens), dtype=np.int64)
    buffer = np.full((batch, count, states + 2), -np.inf, dtype=np.float32)
    alpha, before, two_before = buffer[:, :, 2:], buffer[:, :, 1:states + 1], buffer[:, :, :states]
    best = np.full((batch, count), -np.inf, dtype=np.float32)
    rows = np.arange(count)
    with np.errstate(invalid="ignore"):  # -inf + -inf
        for t in range(frames):
            stay_or_advance = np.maximum(alpha, before)
            np.maximum(stay_or_advance, two_before + skip_cost, out=stay_or_advance)
            stay_or_advance[:, :, 0] = np.maximum(stay_or_advance[:, :, 0], 0.0)  # a spelling may start at any frame
            np.add(stay_or_advance, emit[t][:, where] + invalid_cost, out=alpha)
            ended = alpha[:, rows, last]  # it may end at any frame, on its last token
            np.maximum(best, np.where((t < lens)[:, None], ended, -np.inf), out=best)
    return best / np.array([max(len(s), 1) for s in spelled], dtype=np.float32)  # an empty spelling stays -inf


def kept(hotwords: Sequence[str], row: Any, settings: HotwordFilterSettings) -> list[tuple[str, float]]:
    """The hotwords of one utterance's scores `row` [H] that go into its prompt: (hotword, score)
    at least `threshold`, the best `max_kept`, best first (ties in list order)."""
    chosen = [(float(row[h]), h) for h in range(len(hotwords)) if row[h] >= settings.threshold]
    chosen.sort(key=lambda x: (-x[0], x[1]))
    return [(hotwords[h], round(score, 3)) for score, h in chosen[:settings.max_kept]]
