"""A word list for the CTC branch (`joint.lexicon=FILE`): its n-best restricted to those words.

The CTC branch hears the sounds but spells them freely ("thiveeight" for "three eight"); the LLM
writes words but, where it hears worse, the wrong ones. Call-centre and IVR traffic often has a
known vocabulary (digits, menu commands, product names). With a lexicon, a CTC prefix beam search
whose hypotheses can only spell its words, one after another (a trie of each word's CTC tokens:
the first word as the tokenizer spells it alone, later ones after a space, as a BPE vocabulary
spells a word inside a text), gives the CTC branch's best word sequences; joint decoding scores
them with both heads beside the LLM's n-best and the free CTC hypothesis. Only a candidate: where
the audio holds a word the lexicon lacks, the LLM's and the free CTC text still compete.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from nano8k.errors import UserError

MAX_WORDS = 200_000  # a lexicon larger than this is refused (its tries are built at start)
PRUNE = -10.0  # a frame's symbols below this log-probability are not tried (e^-10: 0.005%)
_NEG = -1e30
_WORD = None  # the trie key that marks a node where a word ends (holding the word)


@dataclass
class Lexicon:
    words: list[str]
    tries: tuple[dict, dict]  # CTC token tries: the first word of a text, a later word (after a space)

    @classmethod
    def load(cls, path: Path, ctc_tokenizer: Any) -> Lexicon:
        """The words of a UTF-8 text file (one or more a line, whitespace-separated; `#` starts a
        comment), each in the CTC branch's tokens."""
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise UserError(f"joint.lexicon: {path}: cannot be read ({err.strerror or err})") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"joint.lexicon: {path}: not UTF-8 text (byte {err.start}): a word list, one word a line") from None
        if "\0" in text:
            raise UserError(f"joint.lexicon: {path}: binary data (a NUL byte), not a word list")
        words = sorted({w for line in text.splitlines() for w in line.split("#", 1)[0].split()})
        if not words:
            raise UserError(f"joint.lexicon: {path}: holds no word")
        if len(words) > MAX_WORDS:
            raise UserError(f"joint.lexicon: {path}: {len(words):,} words, more than {MAX_WORDS:,}")
        tries = []
        for lead in ("", " "):
            root: dict = {}
            for word in words:
                node = root
                for token in ctc_tokenizer.encode(lead + word):
                    node = node.setdefault(token, {})
                node[_WORD] = word
            tries.append(root)
        return cls(words, (tries[0], tries[1]))

    def nbest(self, log_probs: Any, blank: int, beam: int) -> list[tuple[str, float]]:
        """The best word sequences of one utterance's CTC log-probabilities ([T, V], numpy), with
        their log-probabilities: a CTC prefix beam search of `beam` hypotheses over token
        sequences the tries allow, ending at a word's end; best first."""
        first, later = self.tries
        # hypothesis (its tokens) -> [log p ending in blank, log p ending in its last token, words, trie node]
        hyps: dict[tuple[int, ...], list] = {(): [0.0, _NEG, (), None]}
        for row in log_probs:
            heard = {int(c) for c in (row > PRUNE).nonzero()[0]}
            grown: dict[tuple[int, ...], list] = {}

            def add(key: tuple[int, ...], blank_lp: float, token_lp: float, words: tuple, node: Any) -> None:
                entry = grown.get(key)
                if entry is None:
                    grown[key] = [blank_lp, token_lp, words, node]
                else:
                    entry[0], entry[1] = _logaddexp(entry[0], blank_lp), _logaddexp(entry[1], token_lp)

            for key, (blank_lp, token_lp, words, node) in hyps.items():
                total = _logaddexp(blank_lp, token_lp)
                add(key, total + float(row[blank]), _NEG, words, node)
                last = key[-1] if key else None
                if last is not None:  # the last token held over another frame
                    add(key, _NEG, token_lp + float(row[last]), words, node)
                if node is None:  # at the start
                    options = [(c, child, words) for c, child in first.items() if c in heard]
                else:
                    options = [(c, child, words) for c, child in node.items() if c is not _WORD and c in heard]
                    if _WORD in node:  # the word may end here and the next begin
                        options += [(c, child, words + (node[_WORD],)) for c, child in later.items()
                                    if c is not _WORD and c in heard]
                for c, child, before in options:
                    # a repeated token needs a blank between (else it is the same emission held)
                    add(key + (c,), _NEG, (blank_lp if c == last else total) + float(row[c]), before, child)
            hyps = dict(sorted(grown.items(), key=lambda kv: -_logaddexp(kv[1][0], kv[1][1]))[:beam])
        out: dict[str, float] = {}
        for blank_lp, token_lp, words, node in hyps.values():
            if node is not None and _WORD in node:
                text = " ".join(words + (node[_WORD],))
                out[text] = _logaddexp(out.get(text, _NEG), _logaddexp(blank_lp, token_lp))
        return sorted(out.items(), key=lambda kv: -kv[1])


def _logaddexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    return a if b <= _NEG else a + math.log1p(math.exp(b - a))


def candidates(lexicon: Lexicon, log_probs: Any, frame_lens: Sequence[int], blank: int, beam: int) -> list[list[str]]:
    """Each utterance's lexicon n-best texts (`beam` hypotheses searched, best first)."""
    rows = log_probs.float().cpu().numpy()
    return [[text for text, _ in lexicon.nbest(rows[i, :n], blank, beam)] for i, n in enumerate(frame_lens)]
