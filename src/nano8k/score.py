"""Scoring: normalization, corpus CER/WER/MER with jiwer, keyword P/R/F1 (A/B comparison, `nano8k
compare`, is compare.py, on these rules).

Nothing here imports torch or funasr; `nano8k score` and compare.py call it, and so does
`nano8k decode` (metrics.json).

Normalization (`normalize`), applied to references, hypotheses and keywords alike, in this order:

1. Unicode NFKC: full-width letters, digits, punctuation and the ideographic space become
   half-width (`ＡＢＣ１２３，` -> `ABC123,`); half-width katakana become full-width.
2. Curly and modifier apostrophes (’ ‘ ʼ ` ´) become `'`; then lower case.
3. Tags are removed (`tags=True`): Kaldi non-words and special tokens without spaces inside, such as
   `<unk>`, `<|zh|>`, `[noise]`, `[laughter]`.
4. Thousands separators between digits are dropped (`1,000` -> `1000`).
5. Numbers (`numbers=True` only, basic): digits are spelled out.
   - English: cardinals below a billion (`21` -> `twenty one`, no "and"), decimals
     (`3.5` -> `three point five`), ordinals (`1st` -> `first`), `%` -> `percent`. Digit strings with a
     leading zero or over 9 digits (phone numbers) are read digit by digit. Years are read as
     cardinals (`1990` -> `one thousand nine hundred ninety`, not `nineteen ninety`).
   - Chinese (also used for Japanese): Arabic digits -> 汉字. Cardinals below 十亿 (`123` -> `一百二十三`,
     `10` -> `十`, `10001` -> `一万零一`), decimals (`3.5` -> `三点五`), `50%` -> `百分之五十`, four digits
     before 年 digit by digit (`2024年` -> `二零二四年`); a leading zero or over 9 digits (phone
     numbers) digit by digit with 零 (never 幺). 汉字 are never turned into digits.
   - Which reading: `lang` zh/ja -> Chinese, en -> English; auto/mixed -> Chinese when the text holds a
     CJK character, else English.
6. Punctuation and symbols (Unicode categories P* and S*) become spaces, except an apostrophe
   between two letters or digits (`it's`, `o'clock`) and, without `numbers`, a decimal point
   between digits (`3.5`). Format characters (zero-width space, BOM) are deleted, control characters
   become spaces.
7. Whitespace is collapsed to single spaces and stripped.

Units (`tokens`): `char` = every non-space character (so spaces never count; this is the CER of
Chinese and Japanese, and of word-segmented Chinese references such as AISHELL's); `word` =
whitespace-delimited tokens (WER); `mixed` = each CJK character (Han, kana, bopomofo) is a token and
each run of other non-space characters is a token (`我用wifi上网` -> 我 用 wifi 上 网). The mixed unit's
error rate is reported as MER ("mixed error rate", as in code-switching ASR papers and what WeNet's
compute-wer counts; NOT jiwer's "match error rate"). On pure CJK text MER = CER, on space-delimited
text MER = WER, so it is the one number that is right for mixed Chinese-English speech.

Rates are corpus-level: substitutions + deletions + insertions summed over all utterances, divided by
the summed reference length (never a mean of per-utterance rates). Alignments come from jiwer
(`process_characters` for chars, `process_words` for words and mixed units). An empty reference
contributes its insertions and no length. The primary metric is CER for zh/ja, WER for en
(space-delimited text) and MER for mixed; `lang="auto"` picks from the references: CJK characters and
words with letters both present -> mixed, only CJK -> zh (ja when kana occur), otherwise en. The
sentence error rate (SER) is the share of utterances whose primary-unit tokens differ.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Optional, Union

import jiwer
import jiwer.transforms as jiwer_transforms
import numpy as np

from nano8k.data import manifest
from nano8k.data.sources import KEY_FIELDS
from nano8k.data.text import SCORING_LANGUAGES
from nano8k.errors import UserError

UNITS = ("char", "word", "mixed")
RATE_NAMES = {"char": "cer", "word": "wer", "mixed": "mer"}
PRIMARY_UNIT = {"zh": "char", "ja": "char", "en": "word", "mixed": "mixed"}

# JSONL field names tried in order when none is given (the key's: data.sources.KEY_FIELDS). A
# results line holds both texts, so there `text` can only be the hypothesis (RESULTS_REF_FIELDS).
REF_FIELDS = ("ref", "text", "target", "reference")
RESULTS_REF_FIELDS = ("ref", "reference", "target")
HYP_FIELDS = ("hyp", "hypothesis", "text")

# --------------------------------------------------------------------------- normalization

_CJK_RANGES = (
    "\u3005\u3007\u3021-\u3029\u3038-\u303b"  # 々 〇 Hangzhou numerals
    "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff"  # hiragana, katakana (incl. ー), katakana extensions
    "\u3100-\u312f\u31a0-\u31bf"  # bopomofo
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # Han: ext A, unified, compatibility
    "\U00020000-\U0003134f"  # Han: ext B and later
)
_CJK = re.compile(f"[{_CJK_RANGES}]")
_KANA = re.compile("[\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff]")
_MIXED_TOKEN = re.compile(f"[{_CJK_RANGES}]|[^\\s{_CJK_RANGES}]+")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"})
_TAG = re.compile(r"<[^<>\s]*>|\[[^\[\]\s]*\]")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_WORD_APOSTROPHE = re.compile(r"(?<=[^\W_])'(?=[^\W_])")
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_KEEP_APOSTROPHE, _KEEP_POINT = "\ue000", "\ue001"  # private use (category Co): survive step 6
_EN_NUMBER = re.compile(r"(\d+)(?:\.(\d+))?(\s*%|st(?![a-z])|nd(?![a-z])|rd(?![a-z])|th(?![a-z]))?")
_ZH_NUMBER = re.compile(r"(\d+)(?:\.(\d+))?(\s*%|(?=\s*年))?")


class _PunctuationTable(dict):
    """str.translate table, filled lazily: P*/S* and controls -> space, format characters -> deleted."""

    def __missing__(self, codepoint: int) -> str:
        ch = chr(codepoint)
        cat = unicodedata.category(ch)
        value = " " if cat[0] in "PS" or cat == "Cc" else "" if cat == "Cf" else ch
        self[codepoint] = value
        return value


_PUNCTUATION = _PunctuationTable()

_EN_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
            "fifteen sixteen seventeen eighteen nineteen").split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_EN_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_EN_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
               "nine": "ninth", "twelve": "twelfth"}
_ZH_DIGITS = "零一二三四五六七八九"
_ZH_GROUPS = ("", "万", "亿", "万亿")


def en_cardinal(n: int) -> str:
    """0 <= n < 10**15 in English words, without "and" or hyphens: 1205 -> one thousand two hundred five."""
    if n < 20:
        return _EN_ONES[n]
    if n < 100:
        return _EN_TENS[n // 10] + ("" if n % 10 == 0 else " " + _EN_ONES[n % 10])
    if n < 1000:
        return _EN_ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + en_cardinal(n % 100))
    for value, name in _EN_SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return en_cardinal(head) + " " + name + ("" if rest == 0 else " " + en_cardinal(rest))
    raise AssertionError(n)  # unreachable


def _en_ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last in _EN_ORDINAL:
        last = _EN_ORDINAL[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}".strip()


def _zh_group(n: int) -> str:
    out, zero = "", False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        digit = n // value % 10
        if digit == 0:
            zero = zero or bool(out)
            continue
        if zero:
            out, zero = out + "零", False
        out += _ZH_DIGITS[digit] + unit
    return out


def zh_cardinal(n: int) -> str:
    """0 <= n < 10**16 in 汉字: 10 -> 十, 110 -> 一百一十, 10001 -> 一万零一, 100010000 -> 一亿零一万."""
    if n == 0:
        return "零"
    groups = []
    while n:
        n, group = divmod(n, 10000)
        groups.append(group)
    out, gap = "", False
    for i in reversed(range(len(groups))):
        group = groups[i]
        if group == 0:
            gap = gap or bool(out)
            continue
        if out and (gap or group < 1000):
            out += "零"
        out, gap = out + _zh_group(group) + _ZH_GROUPS[i], False
    return out[1:] if out.startswith("一十") else out


def _digits(s: str, names: Sequence[str], sep: str) -> str:
    return sep.join(names[int(d)] for d in s)


def _spell_en(m: re.Match) -> str:
    whole, frac, suffix = m.group(1), m.group(2), (m.group(3) or "").strip()
    cardinal = whole == "0" or (not whole.startswith("0") and len(whole) <= 9)
    words = en_cardinal(int(whole)) if cardinal else _digits(whole, _EN_ONES, " ")
    if frac is not None:
        words += " point " + _digits(frac, _EN_ONES, " ")
    if suffix == "%":
        words += " percent"
    elif suffix and frac is None and cardinal:
        words = _en_ordinal(words)
    elif suffix:
        words += " " + suffix
    return f" {words} "


def _spell_zh(m: re.Match) -> str:
    whole, frac, suffix = m.group(1), m.group(2), m.group(3)
    year = suffix == "" and frac is None and len(whole) == 4  # the lookahead for 年 matched
    cardinal = (whole == "0" or (not whole.startswith("0") and len(whole) <= 9)) and not year
    words = zh_cardinal(int(whole)) if cardinal else _digits(whole, _ZH_DIGITS, "")
    if frac is not None:
        words += "点" + _digits(frac, _ZH_DIGITS, "")
    return "百分之" + words if suffix and suffix.strip() == "%" else words


def normalize(text: str, lang: str = "auto", numbers: bool = False, tags: bool = True) -> str:
    """Scoring normalization (see the module docstring): NFKC, apostrophes, lower case, tags,
    thousands separators, optional numbers, punctuation and symbols, whitespace."""
    if lang not in SCORING_LANGUAGES:
        raise UserError(f"unknown language {lang!r}; use one of {', '.join(SCORING_LANGUAGES)}")
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    if tags:
        text = _TAG.sub(" ", text)
    text = _THOUSANDS.sub("", text)
    if numbers:
        chinese = lang in ("zh", "ja") or (lang in ("auto", "mixed") and _CJK.search(text) is not None)
        text = _ZH_NUMBER.sub(_spell_zh, text) if chinese else _EN_NUMBER.sub(_spell_en, text)
    else:
        text = _DECIMAL_POINT.sub(_KEEP_POINT, text)
    text = _WORD_APOSTROPHE.sub(_KEEP_APOSTROPHE, text)
    text = text.translate(_PUNCTUATION).replace(_KEEP_APOSTROPHE, "'").replace(_KEEP_POINT, ".")
    return " ".join(text.split())


def tokens(text: str, unit: str) -> list[str]:
    """Scoring tokens of (normalized) text: unit `char`, `word` or `mixed` (module docstring)."""
    if unit == "char":
        return [c for c in text if not c.isspace()]
    if unit == "word":
        return text.split()
    if unit == "mixed":
        return _MIXED_TOKEN.findall(text)
    raise ValueError(f"unknown unit {unit!r}; use one of {', '.join(UNITS)}")


def detect_lang(texts: Iterable[str]) -> str:
    """zh, ja, en or mixed, from (normalized) references: see the module docstring."""
    cjk = kana = latin = False
    for text in texts:
        for token in _MIXED_TOKEN.findall(text):
            if _CJK.match(token):
                cjk = True
                kana = kana or _KANA.match(token) is not None
            elif not latin and any(c.isalpha() for c in token):
                latin = True
    if cjk and latin:
        return "mixed"
    if cjk:
        return "ja" if kana else "zh"
    return "en"


# --------------------------------------------------------------------------- scoring


def finite_number(value: Any) -> Optional[float]:
    """A field's value as a finite float, else None (a bool, a string that is no number, inf)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None



@dataclass(frozen=True)
class Counts:
    """Alignment counts of one unit: substitutions, deletions, insertions, hits."""

    sub: int = 0
    dele: int = 0
    ins: int = 0
    hits: int = 0

    @property
    def n(self) -> int:
        """Reference length."""
        return self.hits + self.sub + self.dele

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def rate(self) -> float:
        """errors / n; for n == 0: 0.0 without errors, inf with insertions."""
        return _rate(self.errors, self.n)

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.sub + other.sub, self.dele + other.dele, self.ins + other.ins, self.hits + other.hits)

    def to_dict(self) -> dict[str, int]:
        return {"S": self.sub, "D": self.dele, "I": self.ins, "H": self.hits, "N": self.n, "errors": self.errors}


def _rate(errors: float, n: float) -> float:
    return errors / n if n else (0.0 if errors == 0 else math.inf)


def auc(scores: Sequence[float], right: Sequence[bool]) -> float | None:
    """The probability that a right word scores above a wrong one (ties count half; the
    Mann-Whitney statistic): how well confidence tells them apart (0.5: not at all)."""
    from scipy.stats import rankdata

    scores, right = np.asarray(scores, dtype=float), np.asarray(right, dtype=bool)
    n_right, n_wrong = int(right.sum()), int((~right).sum())
    if not n_right or not n_wrong:
        return None
    ranks = rankdata(scores)  # ties get their mean rank
    return float((ranks[right].sum() - n_right * (n_right + 1) / 2) / (n_right * n_wrong))


def calibration_error(scores: Sequence[float], right: Sequence[bool], bins: int = 10) -> float | None:
    """Expected calibration error: the gap between confidence and the share of words right,
    averaged over ten equal-width bins weighted by their words."""
    scores, right = np.asarray(scores, dtype=float), np.asarray(right, dtype=float)
    if not len(scores):
        return None
    which = np.minimum((scores * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.sum() * abs(scores[inside].mean() - right[inside].mean())
    return float(total / len(scores))


@dataclass
class Utterance:
    key: str
    ref: str  # normalized
    hyp: str  # normalized
    counts: dict[str, Counts]
    fields: dict[str, Any] = field(default_factory=dict)  # other fields of a results line (duration, codec...)

    def errors(self, unit: str) -> int:
        return self.counts[unit].errors

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "ref": self.ref, "hyp": self.hyp,
                **{unit: c.to_dict() for unit, c in self.counts.items()}}


@dataclass
class Scores:
    """Per-utterance counts and corpus totals for the three units."""

    utterances: list[Utterance]
    lang: str  # resolved: zh, ja, en or mixed
    numbers: bool = False
    tags: bool = True
    missing: list[str] = field(default_factory=list)  # reference keys without a hypothesis
    unmatched: list[str] = field(default_factory=list)  # hypothesis keys without a reference
    failed: list[str] = field(default_factory=list)  # decode's failed rows: no hypothesis, not scored

    @cached_property
    def totals(self) -> dict[str, Counts]:
        return {unit: sum((u.counts[unit] for u in self.utterances), Counts()) for unit in UNITS}

    @property
    def cer(self) -> float:
        return self.totals["char"].rate

    @property
    def wer(self) -> float:
        return self.totals["word"].rate

    @property
    def mer(self) -> float:
        return self.totals["mixed"].rate

    @property
    def primary(self) -> str:
        """The unit of the primary metric (char for zh/ja, word for en, mixed for mixed)."""
        return PRIMARY_UNIT[self.lang]

    @property
    def ser(self) -> float:
        if not self.utterances:
            return 0.0
        return sum(u.errors(self.primary) > 0 for u in self.utterances) / len(self.utterances)

    def metrics(self) -> dict[str, Any]:
        """Corpus metrics (what metrics.json holds); audio hours and RTF when the utterances carry
        `duration` (seconds) and `decode_time` (seconds)."""
        totals = self.totals
        out: dict[str, Any] = {
            "utterances": len(self.utterances),
            "lang": self.lang,
            "numbers": self.numbers,
            "primary": RATE_NAMES[self.primary],
            **{RATE_NAMES[unit]: totals[unit].rate for unit in UNITS},
            "ser": self.ser,
            "empty_refs": sum(u.counts["char"].n == 0 for u in self.utterances),
            "missing_hyps": len(self.missing),
            "unmatched_hyps": len(self.unmatched),
            "failed": len(self.failed),
            "counts": {RATE_NAMES[unit]: totals[unit].to_dict() for unit in UNITS},
        }
        durations = [finite_number(u.fields.get("duration")) for u in self.utterances]
        if durations and all(d is not None for d in durations):
            audio = sum(durations)  # type: ignore[arg-type]
            out["audio_hours"] = audio / 3600
            times = [finite_number(u.fields.get("decode_time")) for u in self.utterances]
            if all(t is not None for t in times) and audio > 0:
                out["rtf"] = sum(times) / audio  # type: ignore[arg-type]
        for name, value in (("non_speech", self.non_speech()), ("confidence", self.confidence_quality())):
            if value is not None:
                out[name] = value
        return out

    def word_outcomes(self) -> list[tuple[dict, bool]]:
        """(word, right) for every hypothesis word that has a confidence (results.jsonl `words`):
        a word is right when all its scoring tokens are hits in the alignment of the utterance's
        hypothesis with its reference (words that normalise to nothing are left out)."""
        unit = "char" if self.lang in ("zh", "ja") else "word"
        out: list[tuple[dict, bool]] = []
        for u in self.utterances:
            words = [w for w in u.fields.get("words") or [] if isinstance(w, dict) and w.get("confidence") is not None]
            if not words:
                continue
            pieces = [tokens(normalize(str(w["word"]), self.lang, self.numbers, self.tags), unit) for w in words]
            hyp_tokens = [t for piece in pieces for t in piece]
            ref_tokens = tokens(u.ref, unit)
            hit = [False] * len(hyp_tokens)
            if ref_tokens and hyp_tokens:
                for chunk in jiwer.process_words(" ".join(ref_tokens), " ".join(hyp_tokens)).alignments[0]:
                    if chunk.type == "equal":
                        hit[chunk.hyp_start_idx:chunk.hyp_end_idx] = [True] * (chunk.hyp_end_idx - chunk.hyp_start_idx)
            at = 0
            for word, piece in zip(words, pieces):
                if piece:
                    out.append((word, all(hit[at:at + len(piece)])))
                at += len(piece)
        return out

    def confidence_quality(self) -> dict[str, Any] | None:
        """How well word confidence tells right words from wrong ones: AUC (0.5: not at all) and
        expected calibration error (0: a confidence of p means p of such words are right)."""
        outcomes = self.word_outcomes()
        if not outcomes:
            return None
        scores, right = [float(w["confidence"]) for w, _ in outcomes], [r for _, r in outcomes]
        return {"words": len(scores), "wrong": len(right) - sum(right), "auc": auc(scores, right),
                "ece": calibration_error(scores, right), "mean_confidence": sum(scores) / len(scores),
                "right_share": sum(right) / len(right)}

    def non_speech(self) -> dict[str, Any] | None:
        """Insertions in utterances whose reference is empty (non-speech segments), apart from
        the rates: characters a minute of non-speech, and how many got any words."""
        silent = [u for u in self.utterances if u.counts["char"].n == 0]
        if not silent:
            return None
        durations = [finite_number(u.fields.get("duration")) for u in silent]
        seconds = sum(durations) if all(d is not None for d in durations) else None  # type: ignore[arg-type]
        inserted = sum(u.counts["char"].ins for u in silent)
        return {"utterances": len(silent), "with_words": sum(u.counts["char"].ins > 0 for u in silent),
                "inserted_chars": inserted, "seconds": seconds,
                "chars_per_minute": inserted / (seconds / 60) if seconds else None}

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics(), "missing": self.missing, "unmatched": self.unmatched, "failed": self.failed,
                "utterances": [u.to_dict() for u in self.utterances]}


class _Tokenize(jiwer_transforms.AbstractTransform):
    """A jiwer transform: each sentence -> our tokens of one unit (jiwer wants list of lists)."""

    def __init__(self, unit: str):
        self.unit = unit

    def process_string(self, s: str) -> list[str]:
        return tokens(s, self.unit)


def _align(refs: list[str], hyps: list[str], unit: str) -> list[Counts]:
    """Per-utterance counts from jiwer's alignments of normalized texts."""
    transform = _Tokenize(unit)
    process = jiwer.process_characters if unit == "char" else jiwer.process_words
    out = process(refs, hyps, reference_transform=transform, hypothesis_transform=transform)
    result = []
    for chunks in out.alignments:
        c = {"equal": 0, "substitute": 0, "delete": 0, "insert": 0}
        for chunk in chunks:
            kind = "substitute" if chunk.type == "replace" else chunk.type  # jiwer renames rapidfuzz's "replace"
            c[kind] += (chunk.hyp_end_idx - chunk.hyp_start_idx) if kind == "insert" else (chunk.ref_end_idx - chunk.ref_start_idx)
        result.append(Counts(sub=c["substitute"], dele=c["delete"], ins=c["insert"], hits=c["equal"]))
    # the per-utterance counts must add up to jiwer's own corpus totals
    total = sum(result, Counts())
    assert (total.sub, total.dele, total.ins, total.hits) == (out.substitutions, out.deletions, out.insertions, out.hits)
    return result


def resolve_lang(lang: str, refs: Iterable[str]) -> str:
    if lang not in SCORING_LANGUAGES:
        raise UserError(f"unknown language {lang!r}; use one of {', '.join(SCORING_LANGUAGES)}")
    return detect_lang(normalize(r) for r in refs) if lang == "auto" else lang  # normalize: no numbers needed


Pair = Union[tuple[str, str, str], tuple[str, str, str, Mapping[str, Any]]]


def score(pairs: Iterable[Pair], lang: str = "auto", numbers: bool = False, tags: bool = True) -> Scores:
    """Score (key, ref, hyp[, fields]) tuples: normalize both sides, align with jiwer in each unit,
    keep per-utterance counts; rates are corpus-level (Scores.cer/wer/mer/ser, Scores.metrics())."""
    rows = [tuple(p) for p in pairs]
    if not rows:
        raise UserError("nothing to score: no utterances")
    keys = [str(row[0]) for row in rows]
    if numbers:  # the reading of digits depends on the language: resolve it first
        resolved = resolve_lang(lang, (r[1] or "" for r in rows))
        refs = [normalize(r[1] or "", resolved, numbers, tags) for r in rows]
    else:  # without numbers, normalization does not depend on the language
        refs = [normalize(r[1] or "", "auto", False, tags) for r in rows]
        resolved = detect_lang(refs) if lang == "auto" else resolve_lang(lang, ())
    hyps = [normalize(r[2] or "", resolved, numbers, tags) for r in rows]
    per_unit = {unit: _align(refs, hyps, unit) for unit in UNITS}
    utterances = [
        Utterance(key, ref, hyp, {unit: per_unit[unit][i] for unit in UNITS}, dict(row[3]) if len(row) > 3 else {})
        for i, (key, ref, hyp, row) in enumerate(zip(keys, refs, hyps, rows))
    ]
    return Scores(utterances, resolved, numbers, tags)


def _record_pairs(records: Iterable[Mapping[str, Any]]) -> Iterable[Pair]:
    for r in records:
        yield r["key"], r["ref"], r["hyp"], {k: v for k, v in r.items() if k not in ("key", "ref", "hyp")}


def score_records(records: Iterable[Mapping[str, Any]], lang: str = "auto", numbers: bool = False,
                  tags: bool = True) -> Scores:
    """Score results.jsonl records ({"key", "ref", "hyp", ...}); the other fields are kept."""
    return score(_record_pairs(records), lang=lang, numbers=numbers, tags=tags)


def score_texts(refs: Mapping[str, str], hyps: Mapping[str, str], lang: str = "auto", numbers: bool = False,
                missing: str = "empty") -> Scores:
    """Score key -> text maps. A reference without a hypothesis is scored against an empty one
    (all deletions; missing="empty") or left out (missing="skip"); extra hypotheses are ignored.
    Both are listed in Scores.missing / Scores.unmatched. No common key at all is an error."""
    if missing not in ("empty", "skip"):
        raise ValueError(f"missing must be 'empty' or 'skip', not {missing!r}")
    absent = [k for k in refs if k not in hyps]
    unmatched = [k for k in hyps if k not in refs]
    if len(absent) == len(refs):
        raise UserError(f"no key is in both the references ({len(refs)}) and the hypotheses ({len(hyps)})"
                        + (f"; e.g. reference {next(iter(refs))!r}, hypothesis {next(iter(hyps))!r}" if refs and hyps else ""))
    pairs = [(k, refs[k], hyps.get(k, "")) for k in refs if missing == "empty" or k in hyps]
    scores = score(pairs, lang=lang, numbers=numbers)
    scores.missing, scores.unmatched = absent, unmatched
    return scores


def score_files(ref: Path, hyp: Optional[Path] = None, lang: str = "auto", numbers: bool = False,
                ref_field: Optional[str] = None, hyp_field: Optional[str] = None, key_field: Optional[str] = None,
                missing: str = "empty") -> Scores:
    """`nano8k score REF [HYP]`: two Kaldi text / JSONL files matched by key, or one results JSONL
    holding both reference and hypothesis."""
    if hyp is None:
        records = read_results(ref, ref_field=ref_field, hyp_field=hyp_field, key_field=key_field)
        # decode's one definition of what counts: a failed row has no hypothesis; it is counted
        # (Scores.failed), never scored as an empty one (decode's own metrics.json does the same)
        failed = [r["key"] for r in records if r.get("status") == "failed"]
        kept = [r for r in records if r.get("status") != "failed"]
        if not kept:
            raise UserError(f"{ref}: every row failed in decoding ({len(failed)}): nothing to score")
        scores = score_records(kept, lang=lang, numbers=numbers)
        scores.failed = failed
        return scores
    refs = read_texts(ref, role="ref", field=ref_field, key_field=key_field)
    hyps = read_texts(hyp, role="hyp", field=hyp_field, key_field=key_field)
    return score_texts(refs, hyps, lang=lang, numbers=numbers, missing=missing)


# --------------------------------------------------------------------------- readers


def _lines(path: Path) -> list[str]:
    """The lines of a text or JSONL file, UTF-8 (with or without BOM) or UTF-16 (data.read_lines)."""
    from nano8k import data

    try:
        lines = data.read_lines(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a text or JSONL file") from None
    bad = next((n for n, line in enumerate(lines, 1) if data.undecodable(line)), None)
    if bad is not None:
        raise UserError(f"{path}:{bad}: neither UTF-8 nor UTF-16 text")
    return [line.rstrip("\r") for line in lines]


def _is_jsonl(path: Path, lines: list[str]) -> bool:
    if path.suffix.lower() in (".jsonl", ".json"):
        return True
    first = next((line for line in lines if line.strip()), "")
    return first.lstrip().startswith("{")


def _jsonl_objects(path: Path, lines: list[str]) -> Iterable[tuple[int, dict]]:
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{lineno}: not JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{lineno}: not a JSON object")
        yield lineno, obj


def _pick(obj: dict, wanted: Optional[str], candidates: Sequence[str], what: str, where: str) -> Any:
    if wanted is not None:
        if wanted not in obj:
            raise UserError(f"{where}: no {what} field {wanted!r} (fields: {', '.join(obj) or 'none'})")
        return obj[wanted]
    for name in candidates:
        if name in obj:
            return obj[name]
    if what == "reference" and isinstance(obj.get("messages"), list):  # a Nano manifest: the assistant turn
        text = manifest.parse(obj).text
        if text is not None:
            return text
    raise UserError(f"{where}: no {what} field (tried {', '.join(candidates)}; name one with the field option)")


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, list) and len(value) == 1:  # FunASR sometimes wraps one text in a list
        value = value[0]
    if not isinstance(value, str):
        raise UserError(f"{where}: the text is {type(value).__name__}, not a string")
    return value


def _key(value: Any, where: str) -> str:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, (str, int)) or value == "":
        raise UserError(f"{where}: bad key {value!r}")
    return str(value)


def read_texts(path: Path, role: str = "ref", field: Optional[str] = None, key_field: Optional[str] = None) -> dict[str, str]:
    """key -> text from Kaldi text (`key text...`; a key alone is an empty text) or JSONL.

    JSONL: the key is `key_field` or the first of key/id/utt_id/utt; the text is `field` or the first of
    ref/text/target/reference (role="ref", also a Nano manifest's assistant turn) or hyp/hypothesis/text
    (role="hyp"). Duplicate keys are an error."""
    path = Path(path)
    lines = _lines(path)
    out: dict[str, str] = {}
    what = "reference" if role == "ref" else "hypothesis"
    if _is_jsonl(path, lines):
        candidates = REF_FIELDS if role == "ref" else HYP_FIELDS
        for lineno, obj in _jsonl_objects(path, lines):
            where = f"{path}:{lineno}"
            key = _key(_pick(obj, key_field, KEY_FIELDS, "key", where), where)
            text = _text(_pick(obj, field, candidates, what, where), where)
            if key in out:
                raise UserError(f"{where}: duplicate key {key!r}")
            out[key] = text
    else:
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            key = parts[0]
            if key in out:
                raise UserError(f"{path}:{lineno}: duplicate key {key!r}")
            out[key] = parts[1] if len(parts) > 1 else ""
    if not out:
        raise UserError(f"{path}: no utterances")
    return out


def read_results(path: Path, ref_field: Optional[str] = None, hyp_field: Optional[str] = None,
                 key_field: Optional[str] = None) -> list[dict[str, Any]]:
    """A results JSONL (nano8k decode's, or the seed's {id, reference, hypothesis}) -> records with
    "key", "ref", "hyp" and every other field kept (duration, decode_time, codec, snr...)."""
    path = Path(path)
    lines = _lines(path)
    if not _is_jsonl(path, lines):
        raise UserError(f"{path}: not a results JSONL (one JSON object a line with key, ref and hyp)")
    records, seen = [], set()
    for lineno, obj in _jsonl_objects(path, lines):
        where = f"{path}:{lineno}"
        key = _key(_pick(obj, key_field, KEY_FIELDS, "key", where), where)
        if key in seen:
            raise UserError(f"{where}: duplicate key {key!r}")
        seen.add(key)
        ref = _text(_pick(obj, ref_field, RESULTS_REF_FIELDS, "reference", where), where)
        hyp = _text(_pick(obj, hyp_field, HYP_FIELDS, "hypothesis", where), where)
        records.append({**obj, "key": key, "ref": ref, "hyp": hyp})
    if not records:
        raise UserError(f"{path}: no utterances")
    return records


def read_keywords(path: Path) -> list[str]:
    """One keyword a line; blank lines and lines starting with `#` are skipped; duplicates kept once."""
    out: list[str] = []
    for line in _lines(Path(path)):
        word = line.strip()
        if word and not word.startswith("#") and word not in out:
            out.append(word)
    if not out:
        raise UserError(f"{path}: no keywords (blank lines and # comments are skipped)")
    return out


# --------------------------------------------------------------------------- keywords


@dataclass
class KeywordStat:
    keyword: str  # as written in the list
    normalized: str
    tp: int = 0
    fp: int = 0  # false alarms: more occurrences in the hypothesis than in the reference
    fn: int = 0  # misses

    @property
    def ref_count(self) -> int:
        return self.tp + self.fn

    @property
    def hyp_count(self) -> int:
        return self.tp + self.fp

    @property
    def precision(self) -> Optional[float]:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> Optional[float]:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> Optional[float]:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def to_dict(self) -> dict[str, Any]:
        return {"keyword": self.keyword, "normalized": self.normalized, "tp": self.tp, "fp": self.fp, "fn": self.fn,
                "ref_count": self.ref_count, "hyp_count": self.hyp_count,
                "precision": self.precision, "recall": self.recall, "f1": self.f1}


def _ratio(num: float, den: float) -> Optional[float]:
    return num / den if den else None


def _mean(values: Iterable[Optional[float]]) -> Optional[float]:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


@dataclass
class KeywordReport:
    keywords: list[KeywordStat]
    utterances: int

    @property
    def micro(self) -> KeywordStat:
        """TP/FP/FN summed over keywords; its precision/recall/f1 are the micro averages."""
        return KeywordStat("(all)", "", sum(k.tp for k in self.keywords), sum(k.fp for k in self.keywords),
                           sum(k.fn for k in self.keywords))

    @property
    def macro(self) -> dict[str, Optional[float]]:
        """Means over keywords where each is defined: precision over keywords hypothesized at least once,
        recall over keywords in the references, F1 over keywords in either."""
        return {"precision": _mean(k.precision for k in self.keywords), "recall": _mean(k.recall for k in self.keywords),
                "f1": _mean(k.f1 for k in self.keywords)}

    def to_dict(self) -> dict[str, Any]:
        micro = self.micro
        return {"utterances": self.utterances, "keywords": [k.to_dict() for k in self.keywords],
                "micro": {"tp": micro.tp, "fp": micro.fp, "fn": micro.fn, "precision": micro.precision,
                          "recall": micro.recall, "f1": micro.f1},
                "macro": self.macro}


def count_occurrences(text_tokens: Sequence[str], keyword_tokens: Sequence[str]) -> int:
    """Non-overlapping, left-to-right occurrences of a token sequence (mixed units): a CJK keyword is a
    substring match (spaces between CJK characters ignored), a Latin keyword a whole-word match."""
    k = len(keyword_tokens)
    if k == 0:
        return 0
    count, i, last = 0, 0, len(text_tokens) - k
    first = keyword_tokens[0]
    while i <= last:
        if text_tokens[i] == first and list(text_tokens[i:i + k]) == list(keyword_tokens):
            count += 1
            i += k
        else:
            i += 1
    return count


def keyword_metrics(pairs: Union[Scores, Iterable[Pair]], keywords: Iterable[str], lang: str = "auto",
                    numbers: bool = False) -> KeywordReport:
    """Per keyword TP/FP/FN, precision, recall and F1 from occurrence counts in each utterance's
    normalized reference and hypothesis: TP = min(r, h), FN = max(r - h, 0), FP = max(h - r, 0)
    (occurrence counting per utterance, not alignment: a keyword said in the wrong place of the right
    utterance still counts). Given Scores, its normalized texts and settings are used."""
    tags = True
    if isinstance(pairs, Scores):
        lang, numbers, tags = pairs.lang, pairs.numbers, pairs.tags
        texts = [(u.ref, u.hyp) for u in pairs.utterances]
    else:
        rows = [tuple(p) for p in pairs]
        lang = resolve_lang(lang, (r[1] or "" for r in rows))
        texts = [(normalize(r[1] or "", lang, numbers), normalize(r[2] or "", lang, numbers)) for r in rows]
    stats: list[KeywordStat] = []
    seen: set[str] = set()
    for word in keywords:
        norm = normalize(word, lang, numbers, tags)
        if not norm:
            raise UserError(f"keyword {word!r} is empty after normalization")
        if norm not in seen:
            seen.add(norm)
            stats.append(KeywordStat(word, norm))
    wanted = [tokens(s.normalized, "mixed") for s in stats]
    for ref, hyp in texts:
        ref_tokens, hyp_tokens = tokens(ref, "mixed"), tokens(hyp, "mixed")
        for stat, kw in zip(stats, wanted):
            r, h = count_occurrences(ref_tokens, kw), count_occurrences(hyp_tokens, kw)
            stat.tp += min(r, h)
            stat.fn += max(r - h, 0)
            stat.fp += max(h - r, 0)
    return KeywordReport(stats, len(texts))


# --------------------------------------------------------------------------- rendering (rich)


def pct(x: Optional[float]) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "inf"
    return f"{100 * x:.2f}%"



def plain_row(table: Any, *cells: Any) -> None:
    """Add a row of plain text: keys, texts and "[low, high]" must not be read as rich markup."""
    from rich.text import Text

    table.add_row(*(Text(str(c)) for c in cells))


def note(text: str) -> Any:
    from rich.text import Text

    return Text(text)


def score_tables(scores: Scores, keywords: Optional[KeywordReport] = None) -> list[Any]:
    """Rich tables for `nano8k score`: corpus rates with S/D/I/N, then notes, then keywords if given."""
    from rich.table import Table

    m = scores.metrics()
    title = (f"{m['utterances']} utterances, lang {scores.lang}{', numbers spelled out' if scores.numbers else ''}"
             f", SER {pct(m['ser'])}")
    table = Table(title=title, title_justify="left")
    for col in ("metric", "rate", "S", "D", "I", "N"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    totals = scores.totals
    for unit in UNITS:
        c = totals[unit]
        name = RATE_NAMES[unit].upper() + (" (primary)" if unit == scores.primary else "")
        plain_row(table, name, pct(c.rate), str(c.sub), str(c.dele), str(c.ins), str(c.n))
    out: list[Any] = [table]
    notes = []
    if scores.missing:
        scored = {u.key for u in scores.utterances}
        how = "scored as empty hypotheses" if scores.missing[0] in scored else "left out"
        notes.append(f"references without a hypothesis: {len(scores.missing)} ({how}; e.g. {scores.missing[0]})")
    if scores.unmatched:
        notes.append(f"hypotheses without a reference: {len(scores.unmatched)} (ignored; e.g. {scores.unmatched[0]})")
    if scores.failed:
        notes.append(f"failed in decoding: {len(scores.failed)} (not scored, as in decode's metrics.json; e.g. "
                     f"{scores.failed[0]})")
    if "rtf" in m:
        notes.append(f"RTF {m['rtf']:.3f} over {m['audio_hours']:.2f} h of audio")
    silent = m.get("non_speech")
    if silent:
        rate = "n/a" if silent["chars_per_minute"] is None else f"{silent['chars_per_minute']:.1f} characters a minute"
        notes.append(f"non-speech (empty references): {silent['utterances']} utterances, {silent['with_words']} given "
                     f"words, {silent['inserted_chars']} characters inserted ({rate})")
    quality = m.get("confidence")
    if quality:
        auc_text = "n/a" if quality["auc"] is None else f"{quality['auc']:.3f}"
        notes.append(f"word confidence: AUC {auc_text} at telling the {quality['wrong']} wrong words from the right "
                     f"ones, calibration error {quality['ece']:.3f} over {quality['words']} words")
    if notes:
        out.append(note("\n".join(notes)))
    if keywords is not None:
        out.append(keyword_table(keywords))
    return out


def keyword_table(report: KeywordReport) -> Any:
    from rich.table import Table

    table = Table(title=f"keywords ({len(report.keywords)}) over {report.utterances} utterances", title_justify="left")
    for col in ("keyword", "ref", "hyp", "TP", "FP", "FN", "precision", "recall", "F1"):
        table.add_column(col, justify="left" if col == "keyword" else "right")
    for k in sorted(report.keywords, key=lambda k: (k.f1 if k.f1 is not None else 2.0, k.keyword)):
        plain_row(table, k.keyword, str(k.ref_count), str(k.hyp_count), str(k.tp), str(k.fp), str(k.fn),
                      pct(k.precision), pct(k.recall), pct(k.f1))
    micro, macro = report.micro, report.macro
    table.add_section()
    plain_row(table, "micro", str(micro.ref_count), str(micro.hyp_count), str(micro.tp), str(micro.fp), str(micro.fn),
                  pct(micro.precision), pct(micro.recall), pct(micro.f1))
    plain_row(table, "macro", "", "", "", "", "", pct(macro["precision"]), pct(macro["recall"]), pct(macro["f1"]))
    return table
