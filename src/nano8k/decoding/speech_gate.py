"""No words from non-speech: the gate that writes an empty transcript for a segment holding no
speech, and the cut for repetition loops.

The gate reads the CTC branch, which hears the whole segment at once, where the LLM, asked to
transcribe, writes something for any audio (the demo's model wrote "six six six" on digital
silence). A segment is non-speech when the CTC branch emits nothing there: the share of its
frames whose most likely symbol is blank is at least `min_blank_share` and its greedy hypothesis
has no letter or digit. Measured on the demo's model (scripts/bench_transcripts.py): a CTC branch
trained with non-speech segments (empty transcripts) answers them with blanks, where one that
never saw silence holds a letter through it, so the gate needs both.

The repetition cut: an n-gram of characters (1 to 12, spaces included) repeated more than
`max_repeats` times in a row is a loop; the repeats past the bound are cut and the record says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from nano8k.data.text import has_words


_SPECIAL_TOKEN = re.compile(r"<\|[^|<>]*\|>")


@dataclass
class GateSettings:
    """decode's `speech_gate` (its defaults: conf/decode.yaml)."""

    enabled: bool
    min_blank_share: float
    max_repeats: int


def spoken_text(ctc_text: str) -> str:
    """The CTC hypothesis as words (strategy=ctc's transcript, joint's CTC candidate): without
    language and event tags (<|en|>, <|SPECIAL_TOKEN_5|>), whitespace collapsed."""
    return " ".join(_SPECIAL_TOKEN.sub(" ", ctc_text).split())


def evidence(labels: Any, blank: int, ctc_text: str) -> dict:
    """What the gate reads of one segment: the share of its frames whose most likely symbol
    (`labels`, the frame-wise argmax) is blank, and whether the CTC hypothesis has a word."""
    frames = len(labels)
    blanks = sum(label == blank for label in labels)
    return {"blank_share": round(blanks / frames, 4) if frames else 1.0, "ctc_words": has_words(spoken_text(ctc_text))}


def is_speech(proof: dict, settings: GateSettings) -> bool:
    return not settings.enabled or proof["ctc_words"] or proof["blank_share"] < settings.min_blank_share


def cut_repetition(text: str, max_repeats: int) -> tuple[str, bool]:
    """`text` with every run of one n-gram (1-12 characters) past `max_repeats` copies cut to
    `max_repeats`; (text, whether anything was cut)."""
    pattern = re.compile(r"(.{1,12}?)\1{%d,}" % max_repeats, re.DOTALL)
    cut = False

    def keep(match: re.Match) -> str:
        nonlocal cut
        cut = True
        return match.group(1) * max_repeats

    out = pattern.sub(keep, text)
    return (re.sub(r"\s+", " ", out).strip() if cut else out), cut
