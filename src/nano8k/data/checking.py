"""`check(manifest, dataset_conf)`: what FunASR 1.4.16 will do with a Nano JSONL, line by line.

It applies the rules FunASR's index, batch sampler and dataset apply (with FunASR's own defaults
for absent keys; see RULES and DEFAULTS), plus audio checks (existence, header, samples, sample
rate, clipping, silence, non-finite samples) and text checks, and returns counts by reason, the
problems (each naming its key), and how many samples each stage keeps. `check_cached` is the same,
cached under the manifest's content hash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nano8k.data.audio import (
    CLIP_FRACTION,
    SILENCE_DBFS,
    Audio,
    examine,
    is_url,
    resolve_path,
)
from nano8k.data.manifest import (
    DEFAULT_FRONTEND_FS,
    SPEECH_BEGIN,
    audio_paths,
    fake_token_len,
    fbank_frames,
)
from nano8k.data.manifest import parse as parse_manifest
from nano8k.data.problems import CheckReport, Problem
from nano8k.data.sources import audio_root_hint, audio_root_of, json_key
from nano8k.data.text import (
    bad_bytes,
    bad_characters,
    has_words,
    encoding_of,
    read_lines,
    replaced,
    shown,
    undecodable,
)
from nano8k.errors import UserError, one_line
from nano8k.files import atomic_path
from nano8k.parallel import map_ordered


@dataclass(frozen=True)
class Rule:
    effect: str
    where: str  # FunASR file:line
    text: str


RULES: dict[str, Rule] = {
    # --- the index (`index_ds: FunASR`, datasets.py:391-569), in its order ---------------------
    "invalid_utf8": Rule("fatal", "datasets.py:436-437", "the line is not UTF-8: FunASR reads the manifest as "
                         "utf-8 text and the run ends with UnicodeDecodeError"),
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
    "corrupt_audio": Rule("load", "datasets.py:226-250 + load_utils.py:127-146",
                          "soundfile reads the header but not the samples (ffmpeg, FunASR's last resort, is "
                          "not modelled): retried with a random other sample"),
    "empty_audio": Rule("load", "datasets.py:234-250 + wav_frontend.py:169-181", "audio has no samples: the front end raises, retried with a random other sample"),
    "nonfinite_audio": Rule("load", "datasets.py:226-250 + utils/fbank.py:148",
                            "NaN or infinite samples: kaldi-native-fbank raises `mel energy is nan`, retried with a "
                            "random other sample"),
    "input_ids_over_max_token_length": Rule(
        "load", "datasets.py:81, 333-337",
        "at least fake_token_len + text_length + 1 input ids > the dataset's max_token_length (default 1500): retried"),
    # --- batching -------------------------------------------------------------------------------
    "over_batch_size": Rule(
        "batch", "samplers.py:362-375 (dynamic), 491-500 (buffer)",
        "token batches: source_len > batch_size: trained alone in an over-budget batch; when it is the first "
        "sample the sampler meets (buffer sampler: the shortest of a sort buffer) the first batch is empty "
        "and the collator fails with KeyError 'input_ids' (datasets.py:343-378)"),
    # --- data: trained on as it is, but wrong ------------------------------------------------------
    "undecodable_text": Rule("data", "datasets.py:286-287", "the transcript holds U+FFFD or control characters (text "
                             "decoded with the wrong encoding upstream): FunASR trains on it as it is"),
    # --- notes ----------------------------------------------------------------------------------
    "clipped": Rule("note", "load_utils.py:132-139", f"at least {CLIP_FRACTION:.1%} of a channel's samples at full "
                    "scale: FunASR trains on it as it is"),
    "silent": Rule("note", "load_utils.py:132-139", f"RMS of the channel mix below {SILENCE_DBFS:g} dBFS: FunASR "
                   "trains on it as it is (a transcript for silence is usually a pairing error)"),
    "no_speech": Rule("note", "datasets.py:209-259", "no `<|startofspeech|>!path<|endofspeech|>` in the user turn: a text-only sample"),
    "url_audio": Rule("note", "load_utils.py:98-101", "audio is a URL: FunASR downloads it at every load; not checked"),
    "sample_rate_differs": Rule("note", "load_utils.py:179-187", "sample rate differs from the expected rate: FunASR resamples it to the front end's rate"),
    "multichannel": Rule("note", "load_utils.py:128-140", "more than one channel: FunASR averages the channels"),
    "speech_length_mismatch": Rule("note", "wav_frontend.py:169-181", "speech_length differs from the audio's fbank frame count by more than 1"),
    "duplicate_key": Rule("note", "datasets.py:503-505", "key seen on an earlier line (FunASR does not care; decoding and scoring do)"),
    "non_speech": Rule("note", "datasets.py:286-287", "the transcript is empty: a non-speech segment, trained to be "
                       "answered with no words (`<|im_end|>` at once; `nano8k data prepare` writes text_length 1 so "
                       "that FunASR's index keeps it)"),
    "no_words": Rule("note", "datasets.py:286-287", "the transcript has no letter or digit (only punctuation, zero-width characters or a BOM): empty once normalised, nothing to learn or score"),
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
    check_content: bool = True,
    clip_fraction: float = CLIP_FRACTION,
    silence_dbfs: float = SILENCE_DBFS,
    audio_root: Path | None = None,
) -> CheckReport:
    """Predict, line by line, what FunASR 1.4.16 does with `manifest` under `dataset_conf`.

    Applies RULES in FunASR's order, with FunASR's defaults (DEFAULTS) for absent keys. With
    `check_audio` each audio file's header is read, and with `check_content` too its samples
    (corrupt_audio when they cannot be read; clipped and silent notes, see CLIP_FRACTION and
    SILENCE_DBFS: FunASR trains on such audio as it is). A file whose rate differs from
    `expected_fs` is a note, not a drop: FunASR's loader resamples it to the front end's rate
    (librosa/soxr), so it trains; but in an 8 kHz corpus it is usually a file from another channel
    (a wideband file keeps its upper band at a 16 kHz front end), which is worth knowing.
    `frontend_fs` is the rate the speech_length cross-check counts at. Transcripts that are empty
    or hold U+FFFD/control characters are `data` problems (trained on, but wrong); a line that is
    not UTF-8 is fatal (FunASR's reader raises). Returns a CheckReport (counts by reason, problems
    as (line, key, reason) with the input line for all but notes, how many lines the index /
    sampler / dataset keep). Relative audio paths are taken from the manifest's directory, as
    `nano8k train` has FunASR take them (funasr_gaps 22), or from `audio_root`.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise UserError(f"{manifest}: manifest not found")
    root = audio_root_of(manifest, audio_root)
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

    with open(manifest, "rb") as f:
        if encoding_of(f.read(4096)).startswith("utf-16"):
            report.config_problems.append(
                f"{manifest} is UTF-16 text: FunASR reads manifests as UTF-8 and the run ends with "
                "UnicodeDecodeError or indexes nothing; convert it (iconv -f UTF-16 -t UTF-8)")
    parsed: list[tuple[int, str]] = []
    # utf-8, not utf-8-sig: FunASR opens it so (datasets.py:437), and a BOM turns line 1 into a JSON error.
    for lineno, line in enumerate(read_lines(manifest, encoding="utf-8"), 1):
        if line.strip():
            parsed.append((lineno, line))
    report.lines = len(parsed)

    # Pass 1: the index and the sampler (no I/O).
    audio_jobs: list[tuple[int, str]] = []  # (position in `states`, path)
    states: list[dict] = []
    keys_seen: dict[str, int] = {}
    for lineno, line in parsed:
        if undecodable(line):
            state = {"stage": "fatal", "problems": [("invalid_utf8", bad_bytes(line))], "key": json_key(replaced(line)),
                     "audio": []}
        else:
            state = _index_rules(lineno, line, settings)
            _text_rules(state)
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

    # Pass 2: audio headers and samples (parallel, results in order).
    def inspect(job: tuple[int, str]) -> Audio:
        return examine(job[1], check_content, root)

    label = "reading audio" if check_content else "reading audio headers"
    headers = map_ordered(inspect, audio_jobs, workers, label)
    rates: Counter = Counter()
    for (pos, path), audio in zip(audio_jobs, headers):
        state = states[pos]
        if state["stage"] != "kept":
            continue  # an earlier file of this line already failed
        if audio.problem is not None and audio.problem[0] not in ("corrupt_audio", "nonfinite_audio"):
            state["problems"].append(audio.problem)
            state["stage"] = "load"
            continue
        rates[audio.sample_rate] += 1
        state["frames"] = state.get("frames", 0) + fbank_frames(audio.frames, audio.sample_rate, frontend_fs)
        if audio.frames == 0:
            state["problems"].append(("empty_audio", f"0 samples: {audio.path}"))
            state["stage"] = "load"
            continue
        if audio.problem is not None:  # corrupt or non-finite samples: the header was fine
            state["problems"].append(audio.problem)
            state["stage"] = "load"
            continue
        if expected_fs is not None and audio.sample_rate != int(expected_fs):
            how = f"resampled to {frontend_fs} Hz" if frontend_fs else "resampled to the front end's rate"
            state["problems"].append(("sample_rate_differs", f"{audio.sample_rate} Hz, expected {expected_fs} Hz "
                                      f"({how} by FunASR's loader): {audio.path}"))
        if audio.channels > 1:
            state["problems"].append(("multichannel", f"{audio.channels} channels, averaged: {audio.path}"))
        if audio.clipped is not None and audio.clipped >= clip_fraction:
            state["problems"].append(("clipped", f"{audio.clipped:.2%} of the samples of a channel at full scale: "
                                                 f"{audio.path}"))
        if audio.rms_dbfs is not None and audio.rms_dbfs < silence_dbfs:
            level = "digital silence" if audio.rms_dbfs == -math.inf else f"RMS {audio.rms_dbfs:.1f} dBFS"
            state["problems"].append(("silent", f"{level} (below {silence_dbfs:g} dBFS): {audio.path}"))

    # Pass 3: what the dataset does with the rest; counts.
    for (lineno, line), state in zip(parsed, states):
        if state["stage"] == "kept":
            _dataset_rules(state, settings, check_audio)
        stage = state["stage"]
        report.index_kept += stage in ("kept", "sampler", "load")
        report.sampler_kept += stage in ("kept", "load")
        report.survivors += stage == "kept"
        for reason, detail in state["problems"]:
            effect = RULES[reason].effect
            report.problems.append(Problem(str(manifest), lineno, state.get("key"), reason, detail, effect,
                                           input=None if effect == "note" else shown(line)))

    report.sample_rates = dict(sorted(rates.items()))
    report.hint = audio_root_hint(report.problems, len(audio_jobs), manifest, audio_root)
    relative = sum(not os.path.isabs(path) for _, path in audio_jobs)
    if audio_root is not None and relative:
        report.config_notes.append(
            f"{relative} relative audio paths were taken from --audio-root {root}; `nano8k train` takes them from "
            f"the manifest's directory ({manifest.absolute().parent}): `nano8k data prepare --audio-root` writes "
            "absolute paths")
    if settings.sampler is not None and not report.fatal:
        problems, notes = _batch_crash(states, settings)
        report.config_problems += problems
        report.config_notes += notes
    return report


def _text_rules(state: dict) -> None:
    """The transcripts of a line FunASR indexes: empty, or holding text that was mis-decoded."""
    for content in state.get("assistants") or []:
        if not isinstance(content, str):
            continue
        if not content.strip():
            state["problems"].append(("non_speech", f"assistant content {content!r} with text_length "
                                                    f"{state.get('text_length')}"))
        else:
            bad = bad_characters(content)
            if bad:
                state["problems"].append(("undecodable_text", f"{bad} in {content[:80]!r}"))
            elif not has_words(content):
                state["problems"].append(("no_words", f"assistant content {content[:80]!r}"))
        return  # the first assistant turn: what a one-turn ASR line trains on


CHECK_CACHE_FORMAT = 2  # bump when check() changes what it reports

# The dataset_conf keys check() reads; other keys (num_workers, shuffle, ...) do not change the report.
CHECK_CONF_KEYS = ("index_ds", "batch_sampler", "batch_type", "batch_size", "sort_size", "max_token_length",
                   "length_scale_source", "batch_size_sample_max", "min_source_length", "max_source_length",
                   "max_target_length", "data_split_num")


def default_cache_dir() -> Path:
    """$NANO8K_CACHE_DIR/checks, else $XDG_CACHE_HOME/nano8k/checks, else ~/.cache/nano8k/checks."""
    if os.environ.get("NANO8K_CACHE_DIR"):
        return Path(os.environ["NANO8K_CACHE_DIR"]) / "checks"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nano8k" / "checks"


def check_key(
    manifest: Path,
    dataset_conf: Mapping[str, Any],
    expected_fs: int | None = None,
    frontend_fs: int | None = DEFAULT_FRONTEND_FS,
    check_audio: bool = True,
    check_content: bool = True,
    clip_fraction: float = CLIP_FRACTION,
    silence_dbfs: float = SILENCE_DBFS,
    audio_root: Path | None = None,
) -> str:
    """SHA-256 of everything a check() report depends on: the manifest's bytes and absolute path,
    the dataset_conf keys check() reads, the options and thresholds, nano8k's version, and, with
    `check_audio`, the (absolute path, size, mtime) of every audio file the manifest names (so a
    file replaced under the same name changes the key; relative paths resolve as check() resolves
    them). Costs a read of the manifest and a stat per audio file."""
    from nano8k import __version__

    manifest = Path(manifest)
    digest = hashlib.sha256()
    with open(manifest, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    conf = _plain(dataset_conf)
    settings = {
        "format": CHECK_CACHE_FORMAT, "nano8k": __version__, "manifest": os.path.abspath(manifest),
        "content": digest.hexdigest(),
        "conf": {k: conf[k] for k in CHECK_CONF_KEYS if k in conf},
        "expected_fs": expected_fs, "frontend_fs": frontend_fs, "check_audio": check_audio,
        "check_content": check_content, "clip_fraction": clip_fraction, "silence_dbfs": silence_dbfs,
        "audio_root": None if audio_root is None else os.path.abspath(audio_root),
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode("utf-8"))
    if check_audio:
        seen: set[str] = set()
        root = audio_root_of(manifest, audio_root)
        for line in read_lines(manifest, encoding="utf-8"):
            for path in _line_audio_paths(line):
                path = resolve_path(path, root)
                if path in seen:
                    continue
                seen.add(path)
                try:
                    st = os.stat(path)
                    stamp = f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n"
                except OSError:
                    stamp = f"{path}\0-\n"
                key.update(stamp.encode("utf-8", "surrogateescape"))
    return key.hexdigest()


def _line_audio_paths(line: str) -> list[str]:
    """Audio paths of any user turn of a manifest line (a superset of what check() reads)."""
    if SPEECH_BEGIN not in line:
        return []
    try:
        paths = parse_manifest(line).audio
    except Exception:  # noqa: BLE001 -- a line check() reports; it has no audio to stat
        return []
    return [p for p in paths if not is_url(p)]


def check_list_file(path: Any, key: str) -> None:
    """A training/validation list (a manifest, or a list of manifests) that is missing, a
    directory, empty or binary: one line naming the key, before any model is built."""
    path = Path(str(path))
    if path.is_dir():
        raise UserError(f"{key}: {path} is a directory; give the manifest file (e.g. {path / 'train.jsonl'})")
    if not path.is_file():
        raise UserError(f"{key}: {path} not found")
    try:
        with path.open("rb") as f:
            head = f.read(1 << 16)
    except OSError as err:
        raise UserError(f"{key}: {path}: cannot read it ({err.strerror or err})") from None
    if not head.strip():
        raise UserError(f"{key}: {path} is empty")
    if b"\0" in head:
        raise UserError(f"{key}: {path} is a binary file, not a JSONL manifest or a list of manifests")


def check_cached(
    manifest: Path,
    dataset_conf: Mapping[str, Any],
    expected_fs: int | None = None,
    frontend_fs: int | None = DEFAULT_FRONTEND_FS,
    check_audio: bool = True,
    workers: int = 1,
    check_content: bool = True,
    clip_fraction: float = CLIP_FRACTION,
    silence_dbfs: float = SILENCE_DBFS,
    cache_dir: Path | None = None,
    audio_root: Path | None = None,
) -> CheckReport:
    """check(), with its report stored under `cache_dir` (default: default_cache_dir()) as
    `<check_key>.json`. A hit returns the stored report with `cached=True`. An unwritable or
    unreadable cache is no error: the check just runs (and is not stored)."""
    options = dict(expected_fs=expected_fs, frontend_fs=frontend_fs, check_audio=check_audio,
                   check_content=check_content, clip_fraction=clip_fraction, silence_dbfs=silence_dbfs,
                   audio_root=audio_root)
    manifest = Path(manifest)
    if not manifest.is_file():
        raise UserError(f"{manifest}: manifest not found")
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = check_key(manifest, dataset_conf, **options)
    path = directory / f"{key}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("key") == key:
            report = CheckReport.from_json(stored["report"])
            report.manifest, report.cached = manifest, True  # as this caller spelled the path
            report.problems = [dataclasses.replace(p, file=str(manifest)) for p in report.problems]
            return report
    report = check(manifest, dataset_conf, workers=workers, **options)
    with contextlib.suppress(OSError):
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump({"key": key, "report": report.to_json()}, f, ensure_ascii=False, default=str)
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
        return stop("index", "json_error", one_line(err) + bom)
    if isinstance(data_dict, dict) and "key" in data_dict:
        k = data_dict["key"]
        state["key"] = str(k[0] if isinstance(k, (list, tuple)) and k else k)
    try:
        data = data_dict["messages"]
    except (KeyError, TypeError, IndexError) as err:
        return stop("fatal", "no_messages", f"{type(err).__name__}: {one_line(err)}")
    try:  # datasets.py:448-455, verbatim
        if isinstance(data_dict.get("speech_length", 0), (list, tuple)):
            speech_length = int(data_dict.get("speech_length", [0])[0])
            text_length = int(data_dict.get("text_length", 0)[0])
        else:
            speech_length = int(data_dict.get("speech_length", 0))
            text_length = int(data_dict.get("text_length", 0))
    except Exception as err:  # noqa: BLE001
        return stop("fatal", "bad_length", f"{type(err).__name__}: {one_line(err)}")
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
        return stop("fatal", "bad_messages", one_line(err))
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
