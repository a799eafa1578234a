"""Training data for Fun-ASR-Nano: build the manifest FunASR reads (`prepare`) and predict what
FunASR will do with it (`check`).

`prepare(source, output, tokenizer_dir)` reads a Kaldi data directory (wav.scp + text) or a
`source`/`target` JSONL (the seed's "simple" format; `audio`/`text` are accepted as key names)
and writes the Nano JSONL of FunASR 1.4.16 (`dataset: FunASR`, `index_ds: FunASR`)::

    {"key": "utt001",
     "messages": [{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": "语音转写：<|startofspeech|>!/abs/utt001.wav<|endofspeech|>"},
                  {"role": "assistant", "content": "hello"}],
     "speech_length": 298, "text_length": 1, "duration": 3.0, "sample_rate": 8000}

* ``speech_length`` is the number of 10 ms fbank frames FunASR's ``WavFrontend`` computes for the
  file (25 ms window, snip_edges): ``1 + (N - 25 ms) // 10 ms`` on the waveform *after* FunASR's
  loader has resampled it to the front end's rate (``frontend_fs``), whose length is
  ``ceil(n * frontend_fs / sr)`` (librosa/soxr and torchaudio both round up). For 8 kHz and
  16 kHz files with a 16 kHz front end this equals the native-rate formula of FunASR's
  scp2jsonl, ``int((dur_ms - 25) // 10 + 1)``; for 16 kHz files into an 8 kHz front end, or 44.1/48
  kHz files, the native formula is off by one at window boundaries, so the resampled length is
  used. Integers only: no float durations are involved.
* ``text_length`` is the number of tokens of the transcript alone, with the model's own
  tokenizer and no special tokens. FunASR's dataset trains on ``f"{text}<|im_end|>"``, which is
  always exactly one token more (``<|im_end|>`` is an added special token and never merges), but
  the transcript-only count is what FunASR's scp2jsonl writes (so manifests are interchangeable
  with upstream's), and it keeps the index's only empty-transcript guard working: ``text_length <
  1`` drops the line (datasets.py:458-464), which a count that included ``<|im_end|>`` would turn
  off. The one-token difference in `max_target_length`/`max_token_length` budgets is immaterial.
* Sample rates are recorded, never changed: FunASR's loader resamples every file to the front
  end's rate. ``check(expected_fs=...)`` reports a differing rate as a note (see there).

Every input line that cannot become a manifest line is reported with file, line, key and reason
and written to ``rejects_path(output)``; the good lines are written all the same.

`check(manifest, dataset_conf)` applies, line by line, the rules FunASR's index, batch sampler and
dataset apply (with FunASR's own defaults for absent keys; see RULES and DEFAULTS below), plus audio
checks, and returns counts by reason, the problems, and how many samples each stage keeps.

torch, funasr and transformers are imported inside functions: the CLI imports this module.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from nano8k.errors import UserError

__all__ = [
    "DEFAULT_PROMPT",
    "DEFAULT_SYSTEM",
    "DEFAULT_FRONTEND_FS",
    "RULES",
    "DEFAULTS",
    "Problem",
    "PrepareReport",
    "CheckReport",
    "prepare",
    "check",
    "write_rejects",
    "rejects_path",
    "fbank_frames",
    "resampled_length",
    "fake_token_len",
    "load_tokenizer",
    "count_tokens",
    "audio_paths",
]

DEFAULT_PROMPT = "语音转写："
DEFAULT_SYSTEM = "You are a helpful assistant."
DEFAULT_FRONTEND_FS = 16000  # WavFrontend's default fs and the released Fun-ASR-Nano's frontend_conf.fs

SPEECH_BEGIN = "<|startofspeech|>"
SPEECH_END = "<|endofspeech|>"
SPEECH_TAG = re.compile(r"<\|startofspeech\|>(.*?)<\|endofspeech\|>", re.S)  # datasets.py:79
FRAME_LENGTH_MS = 25  # WavFrontend frame_length (wav_frontend.py:100)
FRAME_SHIFT_MS = 10  # WavFrontend frame_shift (wav_frontend.py:101)
LFR_N = 6  # Fun-ASR-Nano frontend_conf lfr_m 7 / lfr_n 6: T_lfr = ceil(T / 6)
MULTITURN_NUM_MAX = 5  # datasets.py:84 (dataset default)

# ---------------------------------------------------------------------------------------------
# FunASR's rules, in one place
# ---------------------------------------------------------------------------------------------
# Paths are relative to site-packages/funasr (1.4.16): `datasets.py` is
# datasets/fun_asr_datasets/datasets.py, `samplers.py` is datasets/audio_datasets/samplers.py.
#
# Effects, in the order a sample meets them:
#   fatal    FunASR raises while building the index: the whole run crashes.
#   index    the FunASR index drops the line silently (len(index_ds) excludes it).
#   sampler  the batch sampler skips the sample silently (it is never in a batch).
#   load     the dataset fails on the sample at __getitem__ and silently retries with a *random
#            other* sample (datasets.py:153-160): the line is never trained on.
#   batch    the sample is trained, but breaks the token budget (see over_batch_size).
#   note     no effect on what is trained; worth knowing.
# A line gets at most one problem with a removing effect (fatal/index/sampler/load): the first one
# FunASR meets, as FunASR never looks further. Notes and `batch` accumulate.

EFFECTS = ("fatal", "index", "sampler", "load", "batch", "note")
REMOVING = frozenset({"fatal", "index", "sampler", "load"})


@dataclass(frozen=True)
class Rule:
    effect: str
    where: str  # FunASR file:line
    text: str


RULES: dict[str, Rule] = {
    # --- the index (`index_ds: FunASR`, datasets.py:391-569), in its order ---------------------
    "json_error": Rule("index", "datasets.py:439-445", "line is not valid JSON: logged and dropped"),
    "no_messages": Rule("fatal", "datasets.py:447", "no 'messages' (or not an object): KeyError/TypeError ends the run"),
    "bad_length": Rule("fatal", "datasets.py:448-455", "speech_length/text_length not int()-convertible: the run crashes"),
    "text_length_below_1": Rule("index", "datasets.py:458-464", "text_length missing or < 1: dropped"),
    "speech_too_long": Rule("index", "datasets.py:465-466", "speech_length > max_source_length: dropped"),
    "speech_too_short": Rule("index", "datasets.py:467-468", "speech_length < min_source_length: dropped"),
    "text_too_long": Rule("index", "datasets.py:469-470", "text_length > max_target_length: dropped"),
    "bad_messages": Rule("fatal", "datasets.py:473-481", "messages is not a list of objects: TypeError ends the run"),
    # --- the batch sampler (dataset_conf.batch_sampler -> samplers.py:20-47) ---------------------
    # source_len = speech_length + text_length (datasets.py:501).
    "over_max_token_length": Rule(
        "sampler", "samplers.py:128-134 (example), 358-361 (dynamic), 486-489 (buffer)",
        "speech_length + text_length > max_token_length: skipped by the batch sampler"),
    # --- the dataset (`dataset: FunASR`, datasets.py:145-341) ------------------------------------
    "no_user_turn": Rule("load", "datasets.py:168-170", "no user turn: the dataset retries with a random other sample"),
    "no_assistant_turn": Rule("load", "datasets.py:168-170", "no assistant turn: the dataset retries with a random other sample"),
    "missing_audio": Rule("load", "datasets.py:226-250 + load_utils.py:104-116", "audio file does not exist: retried with a random other sample"),
    "unreadable_audio": Rule("load", "datasets.py:226-250 + load_utils.py:127-146", "soundfile cannot read the audio (no torchaudio; ffmpeg fallback): retried with a random other sample"),
    "empty_audio": Rule("load", "datasets.py:234-250 + wav_frontend.py:169-181", "audio has no samples: the front end raises, retried with a random other sample"),
    "input_ids_over_max_token_length": Rule(
        "load", "datasets.py:81, 333-337",
        "at least fake_token_len + text_length + 1 input ids > the dataset's max_token_length (default 1500): retried"),
    # --- batching -------------------------------------------------------------------------------
    "over_batch_size": Rule(
        "batch", "samplers.py:362-375 (dynamic), 491-500 (buffer)",
        "token batches: source_len > batch_size: trained alone in an over-budget batch; when it is the first "
        "sample the sampler meets (buffer sampler: the shortest of a sort buffer) the first batch is empty "
        "and the collator fails with KeyError 'input_ids' (datasets.py:343-378)"),
    # --- notes ----------------------------------------------------------------------------------
    "no_speech": Rule("note", "datasets.py:209-259", "no `<|startofspeech|>!path<|endofspeech|>` in the user turn: a text-only sample"),
    "url_audio": Rule("note", "load_utils.py:98-101", "audio is a URL: FunASR downloads it at every load; not checked"),
    "sample_rate_differs": Rule("note", "load_utils.py:179-187", "sample rate differs from the expected rate: FunASR resamples it to the front end's rate"),
    "multichannel": Rule("note", "load_utils.py:128-140", "more than one channel: FunASR averages the channels"),
    "speech_length_mismatch": Rule("note", "wav_frontend.py:169-181", "speech_length differs from the audio's fbank frame count by more than 1"),
    "duplicate_key": Rule("note", "datasets.py:503-505", "key seen on an earlier line (FunASR does not care; decoding and scoring do)"),
}

# FunASR's defaults for the dataset_conf keys the rules read, where FunASR reads them.
# The same key means different things in different places (see the report in `check`).
DEFAULTS: dict[str, tuple[Any, str]] = {
    "index.max_source_length": (8000, "datasets.py:403"),  # 10 ms frames, manifest speech_length
    "index.min_source_length": (10, "datasets.py:404"),
    "index.max_target_length": (2048, "datasets.py:405"),
    "index.min_target_length": (0, "datasets.py:406"),  # read, never used
    "dataset.max_token_length": (1500, "datasets.py:81"),  # len(input_ids)
    "dataset.max_source_length": (3000, "datasets.py:85"),  # LFR frames of the loaded audio
    "dataset.max_target_length": (1024, "datasets.py:86"),  # only logged (289-292), never applied
    "dataset.batch_size_token_max": (2500, "datasets.py:83"),  # collator drops the last sample (377-384)
    "dataset.retry": (100, "datasets.py:77"),
    "loader.batch_sampler": ("BatchSampler", "dataloader_entry.py:119"),
    "sampler.batch_type": ("example", "samplers.py:28"),
    "sampler.sort_size": (-1, "samplers.py:33"),
    "sampler.max_token_length[example]": (None, "samplers.py:99"),
    "sampler.length_scale_source[example]": (1.0, "samplers.py:100"),
    "sampler.max_token_length[dynamic]": (2048, "samplers.py:339"),
    "sampler.max_token_length[buffer]": (2048, "samplers.py:455"),
    "sampler.batch_size_sample_max[buffer]": (200, "samplers.py:457"),
}

# The names under which samplers.py:14-19 registers the one factory whose rules are modelled.
FACTORY_SAMPLERS = frozenset({
    "BatchSampler", "CustomDistributedBatchSampler", "CustomDistributedDynamicBatchSampler",
    "DynamicBatchLocalShuffleSampler", "RankFullLocalShuffleBatchSampler", "RankFullLocalShuffleDynamicBatchSampler",
})

# prepare()'s reasons for not writing an input line (all have effect "reject").
PREPARE_REASONS: dict[str, str] = {
    "malformed_line": "the line cannot be parsed (bad JSON, not an object, a field of the wrong type, no path)",
    "duplicate_key": "the key was already used by an earlier line (the first one is kept)",
    "no_audio": "a transcript without audio (no wav.scp entry / no source field)",
    "no_text": "audio without a transcript (no text entry / no target field)",
    "empty_text": "the transcript is empty",
    "missing_audio": "the audio file does not exist",
    "unreadable_audio": "soundfile cannot read the audio",
    "audio_too_short": "the audio is shorter than one 25 ms fbank window (speech_length would be 0)",
    "pipe_failed": "the wav.scp command failed or did not write readable audio",
}


# ---------------------------------------------------------------------------------------------
# Lengths
# ---------------------------------------------------------------------------------------------


def resampled_length(num_samples: int, sample_rate: int, target_rate: int) -> int:
    """Samples after FunASR's loader resamples `num_samples` at `sample_rate` to `target_rate`:
    ceil(n * target / sr), as librosa (soxr) and torchaudio's Resample produce."""
    if sample_rate == target_rate:
        return int(num_samples)
    return -(-int(num_samples) * int(target_rate) // int(sample_rate))


def fbank_frames(num_samples: int, sample_rate: int, frontend_fs: int | None = DEFAULT_FRONTEND_FS) -> int:
    """10 ms fbank frames WavFrontend (25 ms window, snip_edges) yields for the file: exact, in
    integers. With `frontend_fs` the waveform is first resampled as FunASR's loader does;
    `frontend_fs=None` counts at the file's own rate (FunASR's scp2jsonl formula). Audio shorter
    than one window gives 0 (FunASR then shrinks the window, wav_frontend.py:174, or fails)."""
    n, fs = int(num_samples), int(sample_rate)
    if frontend_fs is not None:
        n, fs = resampled_length(n, fs, frontend_fs), int(frontend_fs)
    # 1 + floor((n/fs*1000 - 25) / 10), exactly
    frames = (n * 1000 - FRAME_LENGTH_MS * fs) // (FRAME_SHIFT_MS * fs) + 1
    return max(frames, 0)


def fake_token_len(fbank_frames_10ms: int, lfr_n: int = LFR_N) -> int:
    """Audio placeholder tokens FunASR's dataset inserts for an utterance (datasets.py:251-254),
    from its LFR frame count ceil(T / lfr_n)."""
    t = -(-int(fbank_frames_10ms) // lfr_n)
    olens = 1 + (t - 3 + 2 * 1) // 2
    olens = 1 + (olens - 3 + 2 * 1) // 2
    return (olens - 1) // 2 + 1


def load_tokenizer(tokenizer_dir: Path) -> Any:
    """The model's HF tokenizer (AutoTokenizer, as FunASR's HuggingfaceTokenizer loads it). A model
    directory holding `Qwen3-0.6B/` is accepted for the tokenizer directory itself."""
    directory = Path(tokenizer_dir)
    if not directory.is_dir():
        raise UserError(f"{directory}: tokenizer directory not found")
    if not any((directory / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        if (directory / "Qwen3-0.6B").is_dir():
            directory = directory / "Qwen3-0.6B"
        else:
            raise UserError(f"{directory}: no tokenizer files (tokenizer.json / tokenizer_config.json)")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except Exception as err:  # noqa: BLE001 -- any failure here is the user's directory
        raise UserError(f"{directory}: cannot load the tokenizer ({type(err).__name__}: {_one_line(err)})") from None


def count_tokens(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Tokens per transcript, without special tokens (= len(tokenizer.tokenize(text)), FunASR's
    scp2jsonl; FunASR's training target adds exactly one, `<|im_end|>`)."""
    counts: list[int] = []
    for start in range(0, len(texts), 4096):
        encoded = tokenizer(list(texts[start:start + 4096]), add_special_tokens=False)["input_ids"]
        counts += [len(ids) for ids in encoded]
    return counts


# ---------------------------------------------------------------------------------------------
# Problems and reports
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One input line that has a problem: where it is, which key, why, and what it does."""

    file: str
    line: int  # 1-based; 0 for a problem that belongs to no line
    key: str | None
    reason: str
    detail: str = ""
    effect: str = "reject"  # prepare: "reject"; check: one of EFFECTS

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "key": self.key, "reason": self.reason,
                "effect": self.effect, "detail": self.detail}

    def __str__(self) -> str:
        key = f" [{self.key}]" if self.key is not None else ""
        return f"{self.where}{key}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class PrepareReport:
    source: Path
    output: Path
    rejects_file: Path
    format: str  # "kaldi" or "jsonl"
    written: int = 0
    rejects: list[Problem] = field(default_factory=list)
    total_duration: float = 0.0  # seconds of audio written
    sample_rates: dict[int, int] = field(default_factory=dict)  # rate -> lines written
    multichannel: int = 0  # lines written whose audio has more than one channel (FunASR averages)
    frontend_fs: int | None = DEFAULT_FRONTEND_FS

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

    def summary(self) -> str:
        rates = ", ".join(f"{sr} Hz: {n}" for sr, n in sorted(self.sample_rates.items())) or "none"
        lines = [f"{self.output}: {self.written} of {self.total} lines written, {self.total_duration / 3600:.2f} h "
                 f"(sample rates {rates})"]
        if self.rejects:
            reasons = ", ".join(f"{r} {n}" for r, n in self.counts.most_common())
            lines.append(f"{self.rejected} rejected ({reasons}): see {self.rejects_file}")
        if self.multichannel:
            lines.append(f"{self.multichannel} multi-channel files: FunASR averages their channels")
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
    def fatal(self) -> bool:
        return bool(self.config_problems) or any(p.effect == "fatal" for p in self.problems)

    @property
    def ok(self) -> bool:
        """No crash predicted and every line is trained on."""
        return not self.fatal and self.survivors == self.lines

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
        lines += [f"  config note: {m}" for m in self.config_notes]
        return "\n".join(lines)


def rejects_path(output: Path) -> Path:
    """Where prepare() writes the rejects of `output`: train.jsonl -> train.rejects.jsonl."""
    return _sibling(output, ".rejects.jsonl")


def _sibling(output: Path, suffix: str) -> Path:
    """train.jsonl -> train<suffix>; other names get the suffix appended."""
    output = Path(output)
    if output.suffix in (".jsonl", ".json"):
        return output.with_suffix(suffix)
    return output.with_name(output.name + suffix)


def write_rejects(report: PrepareReport | CheckReport, path: Path, include_notes: bool = False) -> int:
    """Write a report's problems to `path` as JSONL (file, line, key, reason, effect, detail);
    returns the number written. For a CheckReport, notes are left out unless include_notes."""
    problems = [p for p in report.problems if include_notes or p.effect != "note"]
    _write_jsonl_atomic(Path(path), (p.to_json() for p in problems))
    return len(problems)


# ---------------------------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------------------------


@dataclass
class _Entry:
    """One utterance read from the input, before its audio is looked at."""

    file: str
    line: int
    key: str
    audio: str | None  # path as written (or the command of a pipe entry)
    text: str | None
    pipe: bool = False


@dataclass
class _Audio:
    path: str | None = None  # absolute path that goes into the manifest
    frames: int = 0
    sample_rate: int = 0
    channels: int = 0
    problem: tuple[str, str] | None = None  # (reason, detail)


def prepare(
    source: Path,
    output: Path,
    tokenizer_dir: Path,
    prompt: str = DEFAULT_PROMPT,
    system: str = DEFAULT_SYSTEM,
    workers: int = 1,
    allow_pipes: bool = False,
    frontend_fs: int | None = DEFAULT_FRONTEND_FS,
) -> PrepareReport:
    """Write the Nano JSONL manifest for a Kaldi data directory or a source/target JSONL.

    Lines come out in input order (wav.scp order for Kaldi). Rejected lines go to the report and to
    `rejects_path(output)` (always written, empty when nothing was rejected); everything else is
    written. Relative audio paths are resolved against the current directory, as Kaldi and FunASR
    do; written paths are absolute. Pipe entries (`cmd |`) in wav.scp are refused unless
    `allow_pipes`: then each command is run and its audio stored under `<output stem>.audio/`.
    `frontend_fs` is the front end's rate (frontend_conf.fs) that speech_length is counted at.
    """
    source, output = Path(source), Path(output)
    if workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    if frontend_fs is not None and int(frontend_fs) <= 0:
        raise UserError(f"frontend_fs must be a positive sample rate, got {frontend_fs}")
    fmt, location = _detect_source(source)
    if output.is_dir():
        raise UserError(f"{output}: is a directory; give the manifest's file name (e.g. {output / 'train.jsonl'})")
    if fmt == "jsonl" and output.resolve() == location.resolve():
        raise UserError(f"{output}: the output would overwrite the input")

    if fmt == "kaldi":
        entries, rejects = _read_kaldi(location, allow_pipes)
    else:
        entries, rejects = _read_source_jsonl(location)
    tokenizer = load_tokenizer(tokenizer_dir)

    audio_dir = _sibling(output, ".audio") if allow_pipes else None

    def probe(entry: _Entry) -> _Audio:
        if entry.pipe:
            return _materialize_pipe(entry, audio_dir)
        return _probe_path(entry.audio)

    audios = _map_ordered(probe, entries, workers, "probing audio")
    lengths = count_tokens(tokenizer, [e.text or "" for e in entries])

    report = PrepareReport(source=source, output=output, rejects_file=rejects_path(output), format=fmt,
                           frontend_fs=frontend_fs)
    records = []
    rates: Counter = Counter()
    for entry, audio, text_length in zip(entries, audios, lengths):
        problem = audio.problem
        if problem is None:
            speech_length = fbank_frames(audio.frames, audio.sample_rate, frontend_fs)
            if speech_length < 1:
                problem = ("audio_too_short", f"{audio.frames} samples at {audio.sample_rate} Hz, {audio.path}")
        if problem is not None:
            rejects.append(Problem(entry.file, entry.line, entry.key, problem[0], problem[1]))
            continue
        duration = audio.frames / audio.sample_rate
        records.append({
            "key": entry.key,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": f"{prompt}{SPEECH_BEGIN}!{audio.path}{SPEECH_END}"},
                {"role": "assistant", "content": entry.text},
            ],
            "speech_length": speech_length,
            "text_length": text_length,
            "duration": round(duration, 6),
            "sample_rate": audio.sample_rate,
        })
        report.total_duration += duration
        rates[audio.sample_rate] += 1
        report.multichannel += audio.channels > 1

    output.parent.mkdir(parents=True, exist_ok=True)
    _write_jsonl_atomic(output, records)
    report.written = len(records)
    report.rejects = sorted(rejects, key=lambda p: (p.file, p.line))
    report.sample_rates = dict(sorted(rates.items()))
    write_rejects(report, report.rejects_file)
    return report


def _detect_source(source: Path) -> tuple[str, Path]:
    if not source.exists():
        raise UserError(f"{source}: no such file or directory")
    if source.is_file() and source.name == "wav.scp":
        source = source.parent
    if source.is_dir():
        if not (source / "wav.scp").is_file():
            raise UserError(f"{source}: neither a Kaldi data directory (no wav.scp) nor a JSONL file")
        if not (source / "text").is_file():
            raise UserError(f"{source}: Kaldi data directory without a text file")
        if (source / "segments").is_file():
            raise UserError(f"{source}: has a segments file; Nano manifests take one audio file per utterance, "
                            "so cut the segments into files first")
        return "kaldi", source
    if source.suffix in (".jsonl", ".json"):
        return "jsonl", source
    with open(source, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf").lstrip()
    if head.startswith(b"{"):
        return "jsonl", source
    raise UserError(f"{source}: neither a Kaldi data directory (wav.scp + text) nor a JSONL file")


def _read_lines(path: Path, encoding: str = "utf-8-sig") -> list[str]:
    """Lines as FunASR's `for line in open(path, encoding=...)` sees them: universal newlines only
    (str.splitlines would also split on U+2028 and friends, which JSON strings may hold raw)."""
    try:
        with open(path, encoding=encoding) as f:
            return [line.rstrip("\n") for line in f]
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _read_kaldi(directory: Path, allow_pipes: bool) -> tuple[list[_Entry], list[Problem]]:
    """wav.scp + text -> entries in wav.scp order; pairing problems as rejects."""
    scp, text = directory / "wav.scp", directory / "text"
    rejects: list[Problem] = []

    transcripts: dict[str, tuple[str, int]] = {}
    for lineno, line in enumerate(_read_lines(text), 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        key, words = parts[0], (parts[1] if len(parts) > 1 else "")
        if key in transcripts:
            rejects.append(Problem(str(text), lineno, key, "duplicate_key", f"first at {text}:{transcripts[key][1]}"))
            continue
        transcripts[key] = (words.strip(), lineno)

    entries: list[_Entry] = []
    seen: dict[str, int] = {}
    pipes: list[tuple[int, str]] = []
    for lineno, line in enumerate(_read_lines(scp), 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        key = parts[0]
        if len(parts) < 2:
            rejects.append(Problem(str(scp), lineno, key, "malformed_line", "no audio path after the key"))
            continue
        if key in seen:
            rejects.append(Problem(str(scp), lineno, key, "duplicate_key", f"first at {scp}:{seen[key]}"))
            continue
        seen[key] = lineno
        location = parts[1].strip()
        pipe = location.endswith("|")
        if pipe:
            location = location[:-1].strip()
            pipes.append((lineno, key))
        words, text_line = transcripts.get(key, (None, 0))
        if words is None:
            rejects.append(Problem(str(scp), lineno, key, "no_text", f"{key} is not in {text}"))
            continue
        if not words:
            rejects.append(Problem(str(text), text_line, key, "empty_text", "no words after the key"))
            continue
        entries.append(_Entry(str(scp), lineno, key, location, words, pipe))

    if pipes and not allow_pipes:
        lineno, key = pipes[0]
        more = f" and {len(pipes) - 1} more" if len(pipes) > 1 else ""
        raise UserError(f"{scp}:{lineno}: '{key}' is a pipe command ('... |'){more}; commands in data files are "
                        "not run unless pipes are allowed (allow_pipes / --allow-pipes)")

    for key, (_, text_line) in transcripts.items():
        if key not in seen:
            rejects.append(Problem(str(text), text_line, key, "no_audio", f"{key} is not in {scp}"))
    return entries, rejects


def _read_source_jsonl(path: Path) -> tuple[list[_Entry], list[Problem]]:
    """The seed's {"key", "source"|"audio", "target"|"text"} lines -> entries in file order."""
    entries: list[_Entry] = []
    rejects: list[Problem] = []
    seen: dict[str, int] = {}
    checked_format = False
    for lineno, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        where = (str(path), lineno)
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            rejects.append(Problem(*where, None, "malformed_line", f"invalid JSON: {err.msg} at column {err.colno}"))
            continue
        if not isinstance(obj, dict):
            rejects.append(Problem(*where, None, "malformed_line", f"a JSON {type(obj).__name__}, not an object"))
            continue
        if not checked_format:
            checked_format = True
            if "messages" in obj and not any(k in obj for k in ("source", "audio")):
                raise UserError(f"{path}: already a Nano manifest (it has 'messages'); check it instead of preparing it")
        key = obj.get("key")
        if key is None:
            key = f"sample_{lineno:08d}"
        elif isinstance(key, (list, tuple)) and len(key) == 1:
            key = key[0]
        if not isinstance(key, (str, int)) or isinstance(key, bool) or str(key).strip() == "":
            rejects.append(Problem(*where, None, "malformed_line", f"key {key!r} is not a non-empty string"))
            continue
        key = str(key).strip()
        if key in seen:
            rejects.append(Problem(*where, key, "duplicate_key", f"first at {path}:{seen[key]}"))
            continue
        seen[key] = lineno

        audio_field = "source" if "source" in obj else "audio"
        text_field = "target" if "target" in obj else "text"
        audio, text = obj.get(audio_field), obj.get(text_field)
        if audio is None or (isinstance(audio, str) and not audio.strip()):
            rejects.append(Problem(*where, key, "no_audio", "no 'source' (or 'audio') field"))
            continue
        if not isinstance(audio, str):
            rejects.append(Problem(*where, key, "malformed_line", f"'{audio_field}' is a {type(audio).__name__}, not a path"))
            continue
        if text is None:
            rejects.append(Problem(*where, key, "no_text", "no 'target' (or 'text') field"))
            continue
        if not isinstance(text, str):
            rejects.append(Problem(*where, key, "malformed_line", f"'{text_field}' is a {type(text).__name__}, not a string"))
            continue
        if not text.strip():
            rejects.append(Problem(*where, key, "empty_text", f"'{text_field}' is empty"))
            continue
        entries.append(_Entry(str(path), lineno, key, audio.strip(), text.strip()))
    return entries, rejects


def _probe_path(location: str) -> _Audio:
    if re.match(r"^[a-z][a-z0-9+.-]*://", location, re.I):
        return _Audio(problem=("missing_audio", f"{location}: URLs are not supported; download the audio first"))
    path = os.path.abspath(location)
    if not os.path.isfile(path):
        hint = " (Kaldi ark offsets are not supported)" if re.search(r"\.ark:\d+$", location) else ""
        return _Audio(path=path, problem=("missing_audio", f"{path} does not exist{hint}"))
    try:
        frames, rate, channels = _audio_info(path)
    except Exception as err:  # noqa: BLE001 -- soundfile raises several types
        return _Audio(path=path, problem=("unreadable_audio", f"{path}: {_one_line(err)}"))
    return _Audio(path=path, frames=frames, sample_rate=rate, channels=channels)


def _audio_info(path: str | io.BytesIO) -> tuple[int, int, int]:
    """(frames, sample rate, channels) from soundfile, the reader FunASR falls back to here."""
    import soundfile as sf

    info = sf.info(path)
    if info.samplerate <= 0:
        raise ValueError(f"invalid sample rate {info.samplerate}")
    return int(info.frames), int(info.samplerate), int(info.channels)


def _materialize_pipe(entry: _Entry, audio_dir: Path | None) -> _Audio:
    """Run a wav.scp command and store its audio as a WAV file FunASR can open."""
    import soundfile as sf

    assert audio_dir is not None
    try:
        proc = subprocess.run(entry.audio, shell=True, capture_output=True, timeout=600)  # noqa: S602 -- opted in
    except subprocess.TimeoutExpired:
        return _Audio(problem=("pipe_failed", f"'{entry.audio}' ran longer than 600 s"))
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        return _Audio(problem=("pipe_failed", f"'{entry.audio}' exited with {proc.returncode}"
                                              + (f": {err[-1]}" if err else "")))
    try:
        info = sf.info(io.BytesIO(proc.stdout))
        data, rate = sf.read(io.BytesIO(proc.stdout), always_2d=True, dtype="float32")
    except Exception as err:  # noqa: BLE001
        return _Audio(problem=("pipe_failed", f"'{entry.audio}' did not write readable audio: {_one_line(err)}"))
    audio_dir.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", entry.key)[:80]
    path = (audio_dir / f"{entry.line:08d}-{safe}.wav").absolute()
    subtype = info.subtype if sf.check_format("WAV", info.subtype) else "PCM_16"
    sf.write(str(path), data, rate, subtype=subtype)
    return _Audio(path=str(path), frames=len(data), sample_rate=int(rate), channels=data.shape[1])


# ---------------------------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------------------------


@dataclass
class _Settings:
    """The thresholds FunASR will use for a dataset_conf."""

    min_source_length: int
    max_source_length: int
    max_target_length: int
    dataset_max_token_length: int
    sampler: str | None  # class name, None when not modelled
    batch_type: str
    batch_size: Any
    sampler_max_token_length: float | None
    length_scale_source: float
    sort_size: int
    batch_size_sample_max: int


def check(
    manifest: Path,
    dataset_conf: Mapping[str, Any],
    expected_fs: int | None = None,
    frontend_fs: int | None = DEFAULT_FRONTEND_FS,
    check_audio: bool = True,
    workers: int = 1,
) -> CheckReport:
    """Predict, line by line, what FunASR 1.4.16 does with `manifest` under `dataset_conf`.

    Applies RULES in FunASR's order, with FunASR's defaults (DEFAULTS) for absent keys, and, with
    `check_audio`, reads each audio file's header. A file whose rate differs from `expected_fs` is
    a note, not a drop: FunASR's loader resamples it to the front end's rate (librosa/soxr), so it
    trains; but in an 8 kHz corpus it is usually a file from another channel (a wideband file
    keeps its upper band at a 16 kHz front end), which is worth knowing. `frontend_fs` is the rate
    the speech_length cross-check counts at. Returns a CheckReport (counts by reason, problems as
    (line, key, reason), how many lines the index / sampler / dataset keep).
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise UserError(f"{manifest}: manifest not found")
    if not isinstance(dataset_conf, Mapping):
        raise UserError(f"dataset_conf must be a mapping, got {type(dataset_conf).__name__}")
    conf = _plain(dataset_conf)
    settings, config_problems, config_notes = _resolve_settings(conf)
    report = CheckReport(manifest=manifest, settings=vars(settings).copy(),
                         config_problems=config_problems, config_notes=config_notes)
    split_num = conf.get("data_split_num", 1)
    if isinstance(split_num, int) and split_num > 1 and manifest.suffix in (".jsonl", ".json"):
        report.config_notes.append(
            f"warning: data_split_num {split_num} with a single .jsonl: every one of the {split_num} data slices "
            f"reads the whole manifest (datasets.py:411-431, train_ds.py:222), so one epoch is {split_num} passes "
            "over the data; use data_split_num: 1 unless the manifest is a list of .jsonl shards")

    parsed: list[tuple[int, str]] = []
    # utf-8, not utf-8-sig: FunASR opens it so (datasets.py:437), and a BOM turns line 1 into a JSON error.
    for lineno, line in enumerate(_read_lines(manifest, encoding="utf-8"), 1):
        if line.strip():
            parsed.append((lineno, line))
    report.lines = len(parsed)

    # Pass 1: the index and the sampler (no I/O).
    audio_jobs: list[tuple[int, str]] = []  # (position in `states`, path)
    states: list[dict] = []
    keys_seen: dict[str, int] = {}
    for lineno, line in parsed:
        state = _index_rules(lineno, line, settings)
        states.append(state)
        key = state.get("key")
        if key is not None:
            if key in keys_seen:
                state["problems"].append(("duplicate_key", f"first at line {keys_seen[key]}"))
            else:
                keys_seen[key] = lineno
        if state["stage"] == "kept" and check_audio:
            for path in state["audio"]:
                audio_jobs.append((len(states) - 1, path))

    # Pass 2: audio headers (parallel, results in order).
    headers = _map_ordered(lambda job: _probe_path(job[1]), audio_jobs, workers, "reading audio headers")
    rates: Counter = Counter()
    for (pos, path), audio in zip(audio_jobs, headers):
        state = states[pos]
        if state["stage"] != "kept":
            continue  # an earlier file of this line already failed
        if audio.problem is not None:
            state["problems"].append(audio.problem)
            state["stage"] = "load"
            continue
        rates[audio.sample_rate] += 1
        state["frames"] = state.get("frames", 0) + fbank_frames(audio.frames, audio.sample_rate, frontend_fs)
        if audio.frames == 0:
            state["problems"].append(("empty_audio", f"0 samples: {audio.path}"))
            state["stage"] = "load"
            continue
        if expected_fs is not None and audio.sample_rate != int(expected_fs):
            how = f"resampled to {frontend_fs} Hz" if frontend_fs else "resampled to the front end's rate"
            state["problems"].append(("sample_rate_differs", f"{audio.sample_rate} Hz, expected {expected_fs} Hz "
                                      f"({how} by FunASR's loader): {audio.path}"))
        if audio.channels > 1:
            state["problems"].append(("multichannel", f"{audio.channels} channels, averaged: {audio.path}"))

    # Pass 3: what the dataset does with the rest; counts.
    for (lineno, _), state in zip(parsed, states):
        if state["stage"] == "kept":
            _dataset_rules(state, settings, check_audio)
        stage = state["stage"]
        report.index_kept += stage in ("kept", "sampler", "load")
        report.sampler_kept += stage in ("kept", "load")
        report.survivors += stage == "kept"
        for reason, detail in state["problems"]:
            report.problems.append(Problem(str(manifest), lineno, state.get("key"), reason, detail, RULES[reason].effect))

    report.sample_rates = dict(sorted(rates.items()))
    if settings.sampler is not None and not report.fatal:
        problems, notes = _batch_crash(states, settings)
        report.config_problems += problems
        report.config_notes += notes
    return report


def _plain(conf: Mapping[str, Any]) -> dict:
    try:  # an OmegaConf DictConfig, resolved
        from omegaconf import DictConfig, OmegaConf

        if isinstance(conf, DictConfig):
            try:
                return OmegaConf.to_container(conf, resolve=True)  # type: ignore[return-value]
            except Exception:  # noqa: BLE001 -- an interpolation outside the node: the rules need no such key
                return OmegaConf.to_container(conf, resolve=False)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover
        pass
    return dict(conf)


def _resolve_settings(conf: dict) -> tuple[_Settings, list[str], list[str]]:
    """dataset_conf -> the thresholds each FunASR component will use (its own defaults where absent)."""
    problems: list[str] = []
    notes: list[str] = []

    def get(key: str, default_name: str) -> Any:
        default = DEFAULTS[default_name][0]
        value = conf.get(key, default)
        return default if value is None and default is not None else value

    index_ds = conf.get("index_ds")
    if index_ds is None:
        problems.append("index_ds is absent: the FunASR dataset looks up index_ds_classes[None] and fails with "
                        "TypeError (datasets.py:41-42); set index_ds: FunASR")
    elif index_ds != "FunASR":
        notes.append(f"index_ds is {index_ds!r}: the index rules checked are those of 'FunASR'")

    name = conf.get("batch_sampler", DEFAULTS["loader.batch_sampler"][0])
    batch_type = conf.get("batch_type", DEFAULTS["sampler.batch_type"][0])
    sort_size = conf.get("sort_size", DEFAULTS["sampler.sort_size"][0])
    batch_size = conf.get("batch_size")
    scale = 1.0
    mtl: float | None
    if name is None or name not in FACTORY_SAMPLERS:
        sampler = None
        mtl = None
        if name is None:
            problems.append("batch_sampler is null: FunASR's DataloaderMapStyle then passes None as DataLoader "
                            "arguments and fails (dataloader_entry.py:119-134)")
        else:
            notes.append(f"batch_sampler {name!r}: its rules are not modelled; sampler counts assume no skipping")
    elif batch_type == "example":
        sampler = "CustomDistributedBatchSampler"
        mtl = conf.get("max_token_length", DEFAULTS["sampler.max_token_length[example]"][0])
        scale = float(conf.get("length_scale_source", DEFAULTS["sampler.length_scale_source[example]"][0]))
        if "batch_type" not in conf:
            notes.append("batch_type is absent: FunASR batches by example (samplers.py:28), batch_size counts "
                         "utterances, and the collator still applies batch_size_token_max (datasets.py:377)")
        if mtl is None:
            notes.append("batch_type 'example' without max_token_length: the sampler skips nothing (samplers.py:99)")
    else:
        sampler = ("CustomDistributedBufferDynamicBatchSampler" if (sort_size or -1) > 0
                   else "CustomDistributedDynamicBatchSampler")
        key = "sampler.max_token_length[buffer]" if sampler.endswith("BufferDynamicBatchSampler") else "sampler.max_token_length[dynamic]"
        mtl = conf.get("max_token_length", DEFAULTS[key][0])
    if sampler is not None and batch_size is None:
        problems.append("batch_size is absent: FunASR's batch samplers require it (TypeError)")
    elif sampler is not None and (not isinstance(batch_size, (int, float)) or isinstance(batch_size, bool)):
        problems.append(f"batch_size {batch_size!r} is not a number")
    sample_max = int(conf.get("batch_size_sample_max", DEFAULTS["sampler.batch_size_sample_max[buffer]"][0]))
    if sampler == "CustomDistributedBufferDynamicBatchSampler" and sample_max <= 1:
        problems.append(f"batch_size_sample_max {sample_max}: the buffer sampler counts from 1, so every batch is "
                        "empty and the collator fails (samplers.py:485-500)")
    if "max_token_length" not in conf and sampler not in (None, "CustomDistributedBatchSampler"):
        notes.append(f"max_token_length is absent: the sampler skips source_len > {mtl} (its default) while the "
                     f"dataset retries len(input_ids) > {DEFAULTS['dataset.max_token_length'][0]} (its own default)")

    settings = _Settings(
        min_source_length=int(get("min_source_length", "index.min_source_length")),
        max_source_length=int(get("max_source_length", "index.max_source_length")),
        max_target_length=int(get("max_target_length", "index.max_target_length")),
        dataset_max_token_length=int(get("max_token_length", "dataset.max_token_length")),
        sampler=sampler,
        batch_type=batch_type,
        batch_size=batch_size,
        sampler_max_token_length=mtl,
        length_scale_source=scale,
        sort_size=int(sort_size if sort_size is not None else -1),
        batch_size_sample_max=sample_max,
    )
    return settings, problems, notes


def _index_rules(lineno: int, line: str, s: _Settings) -> dict:
    """FunASR's index (datasets.py:436-529) and batch sampler on one line, in their order.
    Returns {"stage": kept|fatal|index|sampler, "problems": [(reason, detail)], "key", ...}."""
    state: dict[str, Any] = {"stage": "kept", "problems": [], "key": None, "audio": []}

    def stop(stage: str, reason: str, detail: str) -> dict:
        state["stage"] = stage
        state["problems"].append((reason, detail))
        return state

    try:
        data_dict = json.loads(line.strip())
    except Exception as err:  # noqa: BLE001 -- as datasets.py:441
        bom = " (a UTF-8 byte-order mark: FunASR reads the file as utf-8)" if line.startswith("\ufeff") else ""
        return stop("index", "json_error", _one_line(err) + bom)
    if isinstance(data_dict, dict) and "key" in data_dict:
        k = data_dict["key"]
        state["key"] = str(k[0] if isinstance(k, (list, tuple)) and k else k)
    try:
        data = data_dict["messages"]
    except (KeyError, TypeError, IndexError) as err:
        return stop("fatal", "no_messages", f"{type(err).__name__}: {_one_line(err)}")
    try:  # datasets.py:448-455, verbatim
        if isinstance(data_dict.get("speech_length", 0), (list, tuple)):
            speech_length = int(data_dict.get("speech_length", [0])[0])
            text_length = int(data_dict.get("text_length", 0)[0])
        else:
            speech_length = int(data_dict.get("speech_length", 0))
            text_length = int(data_dict.get("text_length", 0))
    except Exception as err:  # noqa: BLE001
        return stop("fatal", "bad_length", f"{type(err).__name__}: {_one_line(err)}")
    state["speech_length"], state["text_length"] = speech_length, text_length

    if text_length < 1:
        try:  # datasets.py:462-463 runs before the `continue` and can itself raise
            if len(data) > 2:
                len(data[2]["content"])
        except Exception as err:  # noqa: BLE001
            return stop("fatal", "bad_messages", f"text_length < 1 and messages[2] unusable: {type(err).__name__}")
        missing = "text_length" not in data_dict
        return stop("index", "text_length_below_1", "text_length missing" if missing else f"text_length {text_length}")
    if speech_length > s.max_source_length:
        return stop("index", "speech_too_long", f"speech_length {speech_length} > max_source_length {s.max_source_length}")
    if speech_length < s.min_source_length:
        return stop("index", "speech_too_short", f"speech_length {speech_length} < min_source_length {s.min_source_length}")
    if text_length > s.max_target_length:
        return stop("index", "text_too_long", f"text_length {text_length} > max_target_length {s.max_target_length}")

    users, assistants = [], []
    try:  # datasets.py:472-492
        for item in data:
            try:
                role, content = item["role"], item["content"]
            except KeyError:
                continue  # logged and skipped by FunASR
            if role == "user":
                users.append(content)
            elif role == "assistant":
                assistants.append(content)
    except TypeError as err:
        return stop("fatal", "bad_messages", _one_line(err))
    state["users"], state["assistants"] = users, assistants
    source_len = speech_length + text_length  # datasets.py:501
    state["source_len"] = source_len

    if s.sampler_max_token_length is not None and source_len / s.length_scale_source > s.sampler_max_token_length:
        return stop("sampler", "over_max_token_length",
                    f"speech_length {speech_length} + text_length {text_length} = {source_len} > max_token_length "
                    f"{s.sampler_max_token_length:g}")

    if len(users) < 1:
        return stop("load", "no_user_turn", "messages has no user turn")
    if len(assistants) < 1:
        return stop("load", "no_assistant_turn", "messages has no assistant turn")
    paths = audio_paths(users)
    if not paths:
        state["problems"].append(("no_speech", "no <|startofspeech|>!path<|endofspeech|> in the user turns"))
    for path in paths:
        if re.match(r"^https?://", path):
            state["problems"].append(("url_audio", path))
        else:
            state["audio"].append(path)
    return state


def audio_paths(users: Iterable[Any]) -> list[str]:
    """Audio paths FunASR's dataset loads from user turns: `!path` inside the speech tags of the
    first MULTITURN_NUM_MAX turns (datasets.py:184, 217-227). Tag contents without `!` are ignored."""
    paths = []
    for i, content in enumerate(users):
        if i >= MULTITURN_NUM_MAX or not isinstance(content, str):
            break
        paths += [m[1:] for m in SPEECH_TAG.findall(content) if m.startswith("!")]
    return paths


def _dataset_rules(state: dict, s: _Settings, audio_checked: bool) -> None:
    """The dataset's own length rules for a line the index and sampler keep (datasets.py:240, 333).

    len(input_ids) = prompt tokens + fake_token_len + text_length + 1 (<|im_end|>); the prompt is
    not counted here, so this flags only lines that fail whatever the prompt. The dataset's
    max_source_length rule (LFR frames of the loaded audio, default 3000 = 180 s) cannot fire for a
    line the index kept unless speech_length is wrong, which speech_length_mismatch reports."""
    frames = state.get("frames") if audio_checked else None
    speech = state["speech_length"] if frames is None else frames
    if frames is not None and abs(frames - state["speech_length"]) > 1:
        state["problems"].append(("speech_length_mismatch",
                                  f"manifest {state['speech_length']}, audio {frames} frames"))
    at_least = fake_token_len(speech) + state["text_length"] + 1 if state["audio"] else state["text_length"] + 1
    if at_least > s.dataset_max_token_length:
        state["stage"] = "load"
        state["problems"].append(("input_ids_over_max_token_length",
                                  f"at least {at_least} input ids > max_token_length {s.dataset_max_token_length}"))
        return
    if s.batch_type != "example" and isinstance(s.batch_size, (int, float)) and state["source_len"] > s.batch_size:
        state["problems"].append(("over_batch_size", f"source_len {state['source_len']} > batch_size {s.batch_size}"))


def _batch_crash(states: list[dict], s: _Settings) -> tuple[list[str], list[str]]:
    """(problems, notes): whether token batching hands the collator an empty batch, which fails
    with KeyError 'input_ids' (datasets.py:378). The dynamic sampler appends an empty batch when the
    first sample it meets is over batch_size (samplers.py:362-375); the buffer sampler does so for
    every sort buffer whose shortest kept sample is (samplers.py:479-500). Buffers are taken over
    the index's samples, sampler-skipped ones included."""
    if s.batch_type == "example" or not isinstance(s.batch_size, (int, float)):
        return [], []
    indexed = [st for st in states if st["stage"] in ("kept", "sampler", "load")]
    lens = [st["source_len"] for st in indexed if st["stage"] != "sampler"]
    if not lens:
        return ["no sample reaches the batch sampler: the epoch has no batches"], []
    over = sum(n > s.batch_size for n in lens)
    if not over:
        return [], []
    crash = (f"batch_size {s.batch_size} is below every sample's source_len (min {min(lens)}): the first batch "
             "is empty and the collator fails with KeyError 'input_ids'")
    if over == len(lens):
        return [crash], []
    if s.sampler == "CustomDistributedBufferDynamicBatchSampler" and s.sort_size >= len(indexed):
        return [], []  # one sort buffer, and its shortest sample fits
    where = "first in an epoch" if s.sampler == "CustomDistributedDynamicBatchSampler" else "the shortest of a sort buffer"
    return [], [f"risk: {over} of {len(lens)} samples have source_len > batch_size {s.batch_size}; when one is "
                f"{where}, that batch is empty and the collator fails with KeyError 'input_ids'"]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

T = TypeVar("T")
R = TypeVar("R")


def _map_ordered(fn: Callable[[T], R], items: Sequence[T], workers: int, label: str) -> list[R]:
    """fn over items, results in input order; threads and a rich progress bar when workers > 1."""
    if workers <= 1 or len(items) < 2:
        return [fn(item) for item in items]
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    results: list[R] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        task = progress.add_task(label, total=len(items))
        for result in pool.map(fn, items):
            results.append(result)
            progress.advance(task)
    return results


def _write_jsonl_atomic(path: Path, records: Iterable[dict]) -> None:
    """Write JSON lines to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _one_line(err: BaseException | str) -> str:
    text = " ".join(str(err).split())
    return text[:300] + ("…" if len(text) > 300 else "")

