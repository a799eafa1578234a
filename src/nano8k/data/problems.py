"""What prepare, check and simulate report: one Problem per input line that has one (file, line,
key, reason, effect, the input line cut to a bound), the reports, and where their records go."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nano8k.data.manifest import DEFAULT_FRONTEND_FS
from nano8k.files import write_jsonl_atomic

EFFECTS = ("fatal", "index", "sampler", "load", "data", "batch", "note")
REMOVING = frozenset({"fatal", "index", "sampler", "load"})
# A reject record keeps the input line up to this many characters (the file and line number find
# the rest): a 10 MB line must not become a 10 MB record, or one per note.
INPUT_LIMIT = 4096


def bounded(text: str | None, limit: int = INPUT_LIMIT) -> str | None:
    """`text` cut to `limit` characters, saying how long it was."""
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}… [cut: {len(text)} characters]"


@dataclass(frozen=True)
class Problem:
    """One input line that has a problem: where it is, which key, why, and what it does."""

    file: str
    line: int  # 1-based; 0 for a problem that belongs to no line
    key: str | None
    reason: str
    detail: str = ""
    effect: str = "reject"  # prepare: "reject"; check: one of EFFECTS
    input: str | None = None  # the input line itself, cut to INPUT_LIMIT (file and line find the rest)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input", bounded(self.input))
        object.__setattr__(self, "detail", bounded(self.detail, 1000) or "")

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "key": self.key, "reason": self.reason,
                "effect": self.effect, "detail": self.detail, "input": self.input}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Problem:
        return cls(file=obj["file"], line=int(obj["line"]), key=obj.get("key"), reason=obj["reason"],
                   detail=obj.get("detail", ""), effect=obj.get("effect", "reject"), input=obj.get("input"))

    def __str__(self) -> str:
        key = f" [{self.key}]" if self.key is not None else ""
        return f"{self.where}{key}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


# prepare()'s reasons for not writing an input line (all have effect "reject"); its summary
# prints each one's meaning.
PREPARE_REASONS: dict[str, str] = {
    "malformed_line": "the line cannot be parsed (bad JSON, not an object, a field of the wrong type, no path, "
                      "a segments line that is not `utt rec start end` with 0 <= start < end)",
    "undecodable_text": "the line is not UTF-8, or its transcript holds U+FFFD or control characters (tabs and "
                        "line breaks inside a transcript become spaces)",
    "duplicate_key": "the key was already used by an earlier line (the first one is kept)",
    "no_audio": "a transcript without audio (no wav.scp/segments entry, no source field, no audio file)",
    "no_text": "audio without a transcript (no text entry / no target field / no .txt file)",
    "unused_text": "channel=split: a transcript for the whole recording beside per-channel ones (<key>-A/-B)",
    "no_recording": "a segment of a recording that wav.scp does not have",
    "segment_out_of_range": "a segment starting at or ending (beyond segment_tolerance) after the recording's end",
    "missing_audio": "the audio file does not exist",
    "unreadable_audio": "soundfile cannot read the audio",
    "corrupt_audio": "soundfile reads the header but not the samples",
    "nonfinite_audio": "NaN or infinite samples (a float file): FunASR's front end cannot compute features from them",
    "no_such_channel": "the channel asked for (A/B) is not in the file",
    "split_needs_channel_text": "channel=split on a multi-channel file with one transcript: give <key>-A/<key>-B",
    "text_too_long": "the transcript has more tokens than max_target_length (FunASR's index would drop it)",
    "audio_too_short": "the audio is shorter than one 25 ms fbank window (speech_length would be 0)",
    "pipe_failed": "the wav.scp command failed or did not write readable audio",
    "write_failed": "the cut audio could not be written under <output stem>.audio/",
}


class RejectCounts:
    """What prepare's and simulate's reports share: lines written, lines rejected (`rejects`)."""

    written: int
    rejects: list[Problem]

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    @property
    def total(self) -> int:
        return self.written + self.rejected

    @property
    def problems(self) -> list[Problem]:
        return self.rejects

    @property
    def counts(self) -> Counter:
        return Counter(p.reason for p in self.rejects)

    def rejects_summary(self, meanings: dict[str, str], rejects_file: Path) -> list[str]:
        """The summary's lines on the rejects: how many, where, and each reason with its count and
        what it means (`meanings`: the command's reason table)."""
        if not self.rejects:
            return []
        return [f"{self.rejected} rejected, listed in {rejects_file}:",
                *(f"  {reason} {n}: {meanings.get(reason, '')}".rstrip(": ") for reason, n in self.counts.most_common())]


@dataclass
class PrepareReport(RejectCounts):
    source: Path
    output: Path
    rejects_file: Path
    format: str  # "kaldi", "jsonl", "table" (CSV/TSV) or "folder"
    written: int = 0
    rejects: list[Problem] = field(default_factory=list)
    total_duration: float = 0.0  # seconds of audio written
    sample_rates: dict[int, int] = field(default_factory=dict)  # rate -> lines written
    multichannel: int = 0  # lines written whose audio has more than one channel (FunASR averages)
    frontend_fs: int | None = DEFAULT_FRONTEND_FS
    materialized: int = 0  # lines whose audio was written under audio_dir (cuts, channels, pipes)
    audio_dir: Path | None = None
    hint: str = ""  # every audio file missing: where relative paths were taken from
    no_words: list[str] = field(default_factory=list)  # keys written whose transcript has no letter or digit
    non_speech: list[str] = field(default_factory=list)  # keys written with an empty transcript

    def summary(self) -> str:
        rates = ", ".join(f"{sr} Hz: {n}" for sr, n in sorted(self.sample_rates.items())) or "none"
        lines = [f"{self.output}: {self.written} of {self.total} lines written, {self.total_duration / 3600:.2f} h "
                 f"(sample rates {rates})"]
        lines += self.rejects_summary(PREPARE_REASONS, self.rejects_file)
        if self.multichannel:
            lines.append(f"{self.multichannel} multi-channel files: FunASR averages their channels")
        if self.materialized:
            lines.append(f"{self.materialized} audio files written under {self.audio_dir}")
        if self.no_words:
            lines.append(f"note: {len(self.no_words)} transcripts have no letter or digit (only punctuation, zero-width "
                         f"characters or a BOM; empty once normalised), kept: e.g. {self.no_words[0]}")
        if self.non_speech:
            lines.append(f"note: {len(self.non_speech)} transcripts are empty (non-speech segments: the model learns "
                         f"to answer them with no words), kept: e.g. {self.non_speech[0]}")
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)


@dataclass
class CheckReport:
    manifest: Path
    lines: int = 0  # non-blank lines
    problems: list[Problem] = field(default_factory=list)
    index_kept: int = 0  # what len(FunASR index_ds) will be
    sampler_kept: int = 0  # of those, samples the batch sampler puts in batches
    survivors: int = 0  # of those, samples the dataset can load: what is trained on
    settings: dict[str, Any] = field(default_factory=dict)  # effective thresholds, sampler kind
    config_problems: list[str] = field(default_factory=list)  # the run crashes or trains nothing
    config_notes: list[str] = field(default_factory=list)
    sample_rates: dict[int, int] = field(default_factory=dict)  # rate -> readable audio files
    hint: str = ""  # every audio file missing: where relative paths were taken from
    no_words: list[str] = field(default_factory=list)  # keys written whose transcript has no letter or digit
    cached: bool = False  # check_cached(): this report came from the cache

    @property
    def counts(self) -> Counter:
        """Lines per reason (notes included)."""
        return Counter(p.reason for p in self.problems)

    @property
    def by_effect(self) -> Counter:
        return Counter(p.effect for p in self.problems)

    @property
    def dropped(self) -> Counter:
        """Lines per reason, for the reasons that keep a line from training (fatal/index/sampler/load)."""
        return Counter(p.reason for p in self.problems if p.effect in REMOVING)

    @property
    def flagged(self) -> Counter:
        """Lines per reason, for the reasons of effect `data`: trained on, but the content is wrong."""
        return Counter(p.reason for p in self.problems if p.effect == "data")

    @property
    def fatal(self) -> bool:
        return bool(self.config_problems) or any(p.effect == "fatal" for p in self.problems)

    @property
    def ok(self) -> bool:
        """No crash predicted, every line is trained on, and no line's content is wrong."""
        return not self.fatal and self.survivors == self.lines and not self.flagged

    def failed(self, allow_drops: bool = False) -> bool:
        """What `nano8k data check` and `nano8k train` refuse: a predicted crash, no sample at all,
        or (unless allow_drops) any line dropped or trained on with wrong content."""
        if self.fatal or self.survivors == 0:
            return True
        return not allow_drops and not self.ok

    def to_json(self) -> dict:
        return {"manifest": str(self.manifest), "lines": self.lines,
                "problems": [p.to_json() for p in self.problems], "index_kept": self.index_kept,
                "sampler_kept": self.sampler_kept, "survivors": self.survivors, "settings": self.settings,
                "config_problems": self.config_problems, "config_notes": self.config_notes,
                "sample_rates": {str(k): v for k, v in self.sample_rates.items()}, "hint": self.hint}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> CheckReport:
        return cls(manifest=Path(obj["manifest"]), lines=int(obj["lines"]),
                   problems=[Problem.from_json(p) for p in obj["problems"]], index_kept=int(obj["index_kept"]),
                   sampler_kept=int(obj["sampler_kept"]), survivors=int(obj["survivors"]),
                   settings=dict(obj["settings"]), config_problems=list(obj["config_problems"]),
                   config_notes=list(obj["config_notes"]),
                   sample_rates={int(k): int(v) for k, v in obj["sample_rates"].items()}, hint=obj.get("hint", ""))

    def rows(self) -> list[tuple[int, str | None, str]]:
        """(line, key, reason) for every problem."""
        return [(p.line, p.key, p.reason) for p in self.problems]

    def summary(self) -> str:
        lines = [f"{self.manifest}: {self.lines} lines; FunASR's index keeps {self.index_kept}, the sampler "
                 f"{self.sampler_kept}, trained on: {self.survivors}"]
        for effect in EFFECTS:
            reasons = Counter(p.reason for p in self.problems if p.effect == effect)
            if reasons:
                lines.append(f"  {effect}: " + ", ".join(f"{r} {n}" for r, n in reasons.most_common()))
        lines += [f"  config problem: {m}" for m in self.config_problems]
        if self.hint:
            lines.append(f"  {self.hint}")
        lines += [f"  config note: {m}" for m in self.config_notes]
        return "\n".join(lines)


def rejects_path(output: Path) -> Path:
    """Where prepare() writes the rejects of `output`: train.jsonl -> train.rejects.jsonl."""
    return sibling_path(output, ".rejects.jsonl")


def check_rejects_path(manifest: Path) -> Path:
    """Where `nano8k data check` writes its rejects: train.jsonl -> train.check.rejects.jsonl (not
    prepare's train.rejects.jsonl, which it would otherwise overwrite)."""
    return sibling_path(manifest, ".check.rejects.jsonl")


def sibling_path(output: Path, suffix: str) -> Path:
    """train.jsonl -> train<suffix>; other names get the suffix appended."""
    output = Path(output)
    if output.suffix in (".jsonl", ".json"):
        return output.with_suffix(suffix)
    return output.with_name(output.name + suffix)


def check_notes_path(manifest: Path) -> Path:
    """Where `nano8k data check` writes its notes (clipped, silent, rate, ...: trained on as they
    are, each naming its key): train.jsonl -> train.check.notes.jsonl."""
    return sibling_path(manifest, ".check.notes.jsonl")


def write_notes(report: CheckReport, path: Path) -> int:
    """Write a check's notes (effect `note`) to `path` as JSONL; returns the number written."""
    notes = [p for p in report.problems if p.effect == "note"]
    write_jsonl_atomic(Path(path), (p.to_json() for p in notes))
    return len(notes)


def write_rejects(report: PrepareReport | CheckReport, path: Path, include_notes: bool = False) -> int:
    """Write a report's problems to `path` as JSONL (file, line, key, reason, effect, detail);
    returns the number written. For a CheckReport, notes are left out unless include_notes."""
    problems = [p for p in report.problems if include_notes or p.effect != "note"]
    write_jsonl_atomic(Path(path), (p.to_json() for p in problems))
    return len(problems)
