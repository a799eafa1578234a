"""Reading the text files users hand over: UTF-8 with or without a byte-order mark, UTF-16 (with
its byte-order mark) decoded; other bytes kept as lone surrogates so a line that is not UTF-8 is
reported, never silently changed. Transcript cleaning lives here too."""

from __future__ import annotations

import io
import re
import unicodedata
from pathlib import Path

from nano8k.errors import UserError


# the languages transcripts are scored in (score.py): CER for zh/ja, WER for en, MER for mixed;
# auto: chosen from the text
SCORING_LANGUAGES = ("auto", "zh", "ja", "en", "mixed")


def encoding_of(head: bytes) -> str:
    """The encoding of a text file from its first bytes: UTF-16 by its byte-order mark, or without
    one by its NUL bytes (ASCII-range text in UTF-16 has a NUL in every other byte, which UTF-8 text
    never has); else UTF-8 (a byte-order mark is skipped)."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    pairs = len(head) // 2
    if pairs >= 2 and b"\0" in head:
        odd, even = head[1:2 * pairs:2].count(0), head[0:2 * pairs:2].count(0)
        if odd >= 0.3 * pairs and even < 0.05 * pairs:
            return "utf-16-le"
        if even >= 0.3 * pairs and odd < 0.05 * pairs:
            return "utf-16-be"
    return "utf-8-sig"


def decode_text(content: bytes, where: str | Path) -> str:
    """A text file's bytes as text (encoding_of). UTF-8 bytes that do not decode come back as lone
    surrogates (reported line by line, see undecodable); UTF-16 that does not decode is refused
    in one line naming the file."""
    encoding = encoding_of(content[:4096])
    if encoding.startswith("utf-16"):
        try:
            return content.decode(encoding)
        except UnicodeDecodeError as err:
            raise UserError(f"{where}: UTF-16 text that does not decode ({err.reason} at byte {err.start}); "
                            "convert it to UTF-8 (iconv -f UTF-16 -t UTF-8)") from None
    return content.decode(encoding, errors="surrogateescape")


def read_text(path: Path) -> str:
    """A text file users hand over, UTF-8 (with or without BOM) or UTF-16 (decode_text)."""
    return decode_text(Path(path).read_bytes(), path)


def read_lines(path: Path, encoding: str | None = None) -> list[str]:
    """Lines as FunASR's `for line in open(path, encoding=...)` sees them: universal newlines only
    (str.splitlines would also split on U+2028 and friends, which JSON strings may hold raw).
    `encoding` None: a file users hand over (read_text: UTF-8 or UTF-16); "utf-8": a manifest as
    FunASR reads it. Bytes that are not UTF-8 come back as lone surrogates (surrogateescape):
    see undecodable."""
    if encoding is None:
        text = read_text(path)
        return [line.rstrip("\n") for line in io.StringIO(text, newline=None)]
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


def has_words(text: str) -> bool:
    """Whether a transcript holds a letter or a digit: one of only punctuation, zero-width
    characters or a BOM is empty once normalised (nothing to learn, nothing to score)."""
    return any(unicodedata.category(c)[0] in "LN" for c in text)


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
