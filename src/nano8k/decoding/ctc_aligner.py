"""Word and token times from the CTC branch: a Viterbi forced aligner in PyTorch.

FunASR times Fun-ASR-Nano's words with torchaudio's `forced_align`, which torchaudio removed in
2.9 (and which has no build for nano8k's torch): funasr_gaps 14. This module is the replacement:
the best CTC path of a given token sequence through the posteriors (blank-interleaved targets,
a dynamic programme over T x (2U+1) states, batched, loop over time only; NeMo's
`viterbi_decoding` is the same design), then the spans of the tokens grouped into the words a
user reads. Not to be confused with `config_alignment` (the report of nano8k's configs against
the seed's).

Times are frames of the CTC branch (the encoder's low frame rate: 60 ms with lfr_n 6) times their
length: a word starts at the first frame that emits one of its tokens and ends after the last.
Punctuation has no width: it sits at the end of the word before it (FunASR PR #3703's rule).
A text the posteriors cannot hold (more tokens than frames) gets no aligned times: its words'
times are spread over the frames where the CTC branch heard speech, and flagged `interpolated`.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Sequence

# CJK scripts are written without spaces: each character is a word (as score.py counts them)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


@dataclass
class TokenPath:
    """One utterance's alignment: for every target token, the frames it was emitted at; `score`
    is the path's log-probability."""

    frames: list[list[int]]
    score: float


def forced_paths(log_probs: Any, frame_lens: Sequence[int], targets: Sequence[Sequence[int]],
                 blank: int) -> list[TokenPath | None]:
    """The best CTC path of each utterance's `targets` through its `log_probs` [B, T, V] (the
    first frame_lens[b] frames count); None where no path exists (more tokens, with the blanks
    that repeated tokens need between them, than frames). An empty target is the all-blank path."""
    import numpy as np
    import torch

    batch, frames, _ = log_probs.shape
    longest = max((len(t) for t in targets), default=0)
    states = 2 * longest + 1
    extended = np.full((batch, states), blank, dtype=np.int64)
    for b, target in enumerate(targets):
        if len(target):
            extended[b, 1:2 * len(target):2] = list(target)
    # The vocabulary pass (the gather of each state's token) runs where the posteriors are; the
    # recursion over frames works on [B, states] rows, where a device's per-operation cost (a
    # kernel launch, torch's dispatch) outweighs the arithmetic: on the host, in NumPy.
    index = torch.as_tensor(extended, device=log_probs.device)
    emit = log_probs.float().gather(2, index[:, None, :].expand(batch, frames, states)).transpose(0, 1).cpu().numpy()
    # a token state may be entered from two states back (skipping the blank) unless it repeats that token
    skip = np.zeros((batch, states), dtype=bool)
    skip[:, 2:] = (extended[:, 2:] != blank) & (extended[:, 2:] != extended[:, :-2])
    skip_cost = np.where(skip, 0.0, -np.inf).astype(np.float32)
    # what each state may come from: itself (0), the state before (1), two states back (2);
    # alpha lives in columns 2.. of a buffer whose first two columns stay -inf (no state before 0)
    lens = np.asarray(list(frame_lens), dtype=np.int64)
    buffer = np.full((batch, states + 2), -np.inf, dtype=np.float32)
    alpha, before, two_before = buffer[:, 2:], buffer[:, 1:states + 1], buffer[:, :states]
    alpha[:, 0] = emit[0, :, 0]
    if states > 1:
        alpha[:, 1] = emit[0, :, 1]
    # each utterance's scores are read at its own last frame (later frames are padding): the
    # recursion runs on for the whole batch, the backtrace starts at each one's end
    final = alpha.copy()
    ending: dict[int, list[int]] = {}
    for b, n in enumerate(lens.tolist()):
        ending.setdefault(n - 1, []).append(b)
    back = np.zeros((frames, batch, states), dtype=np.intp)
    candidates = np.empty((3, batch, states), dtype=np.float32)
    with np.errstate(invalid="ignore"):  # -inf + -inf
        for t in range(1, frames):
            candidates[0] = alpha
            candidates[1] = before
            np.add(two_before, skip_cost, out=candidates[2])
            candidates.argmax(axis=0, out=back[t])
            np.add(candidates.max(axis=0), emit[t], out=alpha)
            if t in ending:
                final[ending[t]] = alpha[ending[t]]
    back[np.arange(frames)[:, None] >= lens[None, :]] = 0  # past an utterance's end: stay
    # the path ends in the last token's state or the blank after it
    ends = np.array([2 * len(t) for t in targets], dtype=np.int64)
    rows = np.arange(batch)
    last = final[rows, ends]
    before_last = final[rows, np.maximum(ends - 1, 0)]
    take_before = (ends > 0) & (before_last > last)
    state = np.where(take_before, ends - 1, ends)
    score = np.where(take_before, before_last, last)
    path = np.zeros((frames, batch), dtype=np.int64)
    for t in range(frames - 1, -1, -1):  # the backtrace
        path[t] = state
        state = state - back[t, rows, state]
    path, score, lens = path.T.tolist(), score.tolist(), list(frame_lens)
    out: list[TokenPath | None] = []
    for b, target in enumerate(targets):
        if score[b] == float("-inf") or lens[b] < 1:
            out.append(None)
            continue
        frames_of: list[list[int]] = [[] for _ in target]
        for t, s in enumerate(path[b][: lens[b]]):
            if s % 2:
                frames_of[s // 2].append(t)
        out.append(TokenPath(frames_of, float(score[b])))
    return out


def greedy_path(ids: Sequence[int], blank: int) -> tuple[list[int], TokenPath]:
    """The CTC hypothesis's own alignment: the greedy path (frame-wise argmax ids) is its path;
    returns (the hypothesis's token ids, their spans)."""
    tokens: list[int] = []
    frames_of: list[list[int]] = []
    previous = blank
    for t, token in enumerate(ids):
        if token != blank:
            if token != previous:
                tokens.append(token)
                frames_of.append([])
            frames_of[-1].append(t)
        previous = token
    return tokens, TokenPath(frames_of, 0.0)


@dataclass
class Word:
    """A word as the user reads it (whitespace-separated; a CJK character alone), with the indices
    of the CTC tokens that spell its letters and digits (none: punctuation only)."""

    text: str
    tokens: list[int]
    start: int = 0  # its characters in the text: [start, end)
    end: int = 0


def words_of(text: str, token_bytes: Sequence[bytes]) -> list[Word] | None:
    """`text` cut into words, each with the tokens (indices into `token_bytes`, the CTC
    tokenizer's encoding of `text`) overlapping its letters and digits; None when the tokens do
    not spell the text byte for byte (then nothing can be placed)."""
    encoded = text.encode("utf-8")
    if b"".join(token_bytes) != encoded:
        return None
    byte_owner = [i for i, piece in enumerate(token_bytes) for _ in piece]  # the token holding each byte
    char_starts = (range(len(text) + 1) if len(encoded) == len(text)  # each character's first byte
                   else [0, *accumulate(len(char.encode("utf-8")) for char in text)])
    words = []
    for match in re.finditer(r"\S+", text):
        spans = _split_cjk(match.start(), match.end(), text) if _CJK.search(match.group()) else [match.span()]
        for start, end in spans:
            tokens = sorted({byte_owner[b] for c in range(start, end) if _spoken(text[c])
                             for b in range(char_starts[c], char_starts[c + 1])})
            words.append(Word(text[start:end], tokens, start, end))
    return words


def _split_cjk(start: int, end: int, text: str) -> list[tuple[int, int]]:
    """A whitespace-separated run holding CJK characters: each CJK character a word, other runs
    (Latin, digits) whole; punctuation stays with the word before it."""
    spans: list[tuple[int, int]] = []
    c = start
    while c < end:
        if _CJK.match(text[c]):
            spans.append((c, c + 1))
            c += 1
            continue
        d = c
        while d < end and not _CJK.match(text[d]):
            d += 1
        if spans and not any(_spoken(ch) for ch in text[c:d]):
            spans[-1] = (spans[-1][0], d)  # trailing punctuation joins the character before
        else:
            spans.append((c, d))
        c = d
    return spans


@functools.lru_cache(maxsize=4096)  # asked of every character of every word: a transcript has few distinct ones
def _spoken(char: str) -> bool:
    """A letter, digit or mark (what is said); punctuation and symbols are not."""
    return unicodedata.category(char)[0] in "LNM"


def place_words(words: list[Word], path: TokenPath | None, seconds_per_frame: float,
                speech_frames: tuple[int, int] | None) -> list[dict]:
    """Start and end (seconds from the first frame) of each word from its tokens' frames; punctuation-only
    words have no width at the end of the word before. Without a path, times are spread evenly
    over `speech_frames` (first, last frame where the CTC branch heard speech; else nothing
    is placed) and the words are flagged `interpolated`."""
    placed: list[dict] = []
    spoken = [w for w in words if w.tokens]
    even = None
    if path is None and speech_frames is not None and spoken:
        first, last = speech_frames
        even = (last + 1 - first) / len(spoken)
    n_spoken = 0
    previous_end = 0.0
    for word in words:
        entry: dict[str, Any] = {"word": word.text}
        if not word.tokens:
            start = end = previous_end
        elif path is not None:
            start = min(path.frames[t][0] for t in word.tokens) * seconds_per_frame
            end = (max(path.frames[t][-1] for t in word.tokens) + 1) * seconds_per_frame
        elif even is not None:
            start = (speech_frames[0] + n_spoken * even) * seconds_per_frame
            end = start + even * seconds_per_frame
            entry["interpolated"] = True
        else:
            start = end = None
            entry["interpolated"] = True
        n_spoken += bool(word.tokens)
        entry["start"] = None if start is None else round(start, 3)
        entry["end"] = None if end is None else round(end, 3)
        if end is not None:
            previous_end = end
        placed.append(entry)
    return placed
