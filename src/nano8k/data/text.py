"""Reading the text files users hand over: UTF-8 with or without a byte-order mark, UTF-16 (with
its byte-order mark) decoded; other bytes kept as lone surrogates so a line that is not UTF-8 is
reported, never silently changed. Transcript cleaning lives here too."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path


def read_lines(path: Path, encoding: str = "utf-8-sig") -> list[str]:
    """Lines as FunASR's `for line in open(path, encoding=...)` sees them: universal newlines only
    (str.splitlines would also split on U+2028 and friends, which JSON strings may hold raw).
    Bytes that are not UTF-8 come back as lone surrogates (surrogateescape): see undecodable."""
    with open(path, encoding=encoding, errors="surrogateescape") as f:
        return [line.rstrip("\n") for line in f]


def undecodable(text: str) -> bool:
    """True when `text` holds bytes that were not UTF-8 (read with surrogateescape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def shown(text: str) -> str:
    """`text` with its undecodable bytes as \\xNN escapes: printable, and valid in a JSON file."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_CONTROL_WHITESPACE = re.compile(r"[\t\n\r\x0b\x0c]+")


def bad_characters(text: str) -> str:
    """'U+FFFD, U+0007' for the replacement and control characters in `text` ('' when none): the
    marks of text decoded with the wrong encoding (or of binary junk)."""
    bad = sorted({c for c in text if c == "\ufffd" or unicodedata.category(c) == "Cc"})
    return ", ".join(f"U+{ord(c):04X}" for c in bad)


def clean_transcript(text: str) -> tuple[str, str]:
    """(transcript, problem): tabs and line breaks inside become spaces, the ends are stripped;
    the problem names any replacement or other control character left ('' when none)."""
    text = _CONTROL_WHITESPACE.sub(" ", text).strip()
    bad = bad_characters(text)
    return text, (f"{bad} in the transcript (decoded with the wrong encoding?)" if bad else "")


def replaced(text: str) -> str:
    """`text` with its undecodable bytes as U+FFFD (what a lenient reader makes of them)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def bad_bytes(text: str) -> str:
    raw = text.encode("utf-8", "surrogateescape")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"not UTF-8: {err.reason} at byte {err.start} ({raw[err.start:err.start + 1]!r})"
    return "not UTF-8"
