"""What users hand over, read into one entry type (`Entry`): a Kaldi data directory (wav.scp +
text, optional segments ``utt rec start end`` and utt2spk; pipe entries ``cmd |`` refused unless
allowed), a source/target JSONL (the seed's "simple" format; ``audio``/``text`` are accepted too),
a CSV/TSV file with a header (named columns for the audio, the transcript and optionally the key;
defaults: the first of audio|path|wav|source, text|transcript|target|sentence, key|id|utt), or a
folder of audio files (any format `audio` reads), searched recursively, each with a same-stem
``.txt`` transcript; the key is the relative path without extension.

Every input line that cannot become an entry is a Problem with file, line, key and reason; a key
seen before keeps the first line and reports the later one. Stereo (``channel``): "mix" keeps the
file as it is (FunASR averages the channels), "A"/"B" (or 0/1) pick one channel, "split" makes one
entry per channel transcript (``K-A``/``K-B`` for a key ``K``).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from nano8k.data.audio import AUDIO_SUFFIXES, is_audio_name, is_url, not_a_file, resolve_path
from nano8k.data.manifest import LINE_FIELDS, fbank_frames, is_manifest, with_audio
from nano8k.data.manifest import parse as parse_manifest
from nano8k.data.problems import Problem
from nano8k.data.text import (
    bad_bytes,
    clean_transcript,
    decode_text,
    encoding_of,
    read_lines,
    read_text,
    replaced,
    shown,
    undecodable,
)
from nano8k.errors import UserError, one_line
from nano8k.files import atomic_path, write_jsonl_atomic, write_lines_atomic

# prepare(channel=...): "mix" keeps every channel (FunASR averages them), "A"/"B" pick one,
# "split" writes one line per channel transcript (keys <key>-A, <key>-B).
CHANNEL_MODES = ("mix", "A", "B", "split")
CHANNEL_SUFFIXES = ("A", "B")  # channel 0, channel 1


@dataclass
class Entry:
    """One utterance read from the input, before its audio is looked at."""

    file: str
    line: int
    key: str
    audio: str | None  # path as written (or the command of a pipe entry)
    text: str | None
    pipe: bool = False
    raw: str | None = None  # the input line, for the rejects file
    segment: tuple[Fraction, Fraction] | None = None  # (start, end) in seconds: a Kaldi segment
    recording: str | None = None  # the wav.scp key of a segment
    channel: int | None = None  # 0 (A) or 1 (B): that channel alone; None: all channels
    mono_only: bool = False  # channel=split with one transcript: right for mono audio only
    speaker: str | None = None
    fields: dict = field(default_factory=dict)  # the source's other fields, carried (e.g. simulate's channel)
    obj: dict | None = None  # the JSON object of a JSONL/Nano line, as read
    audio_field: str | None = None  # the JSONL field that held the audio path
    prompt: str | None = None  # a Nano line's prompt before the audio


@dataclass
class Keyed:
    """A `key value` line of a Kaldi file (or a folder's transcript)."""

    value: str
    file: str
    line: int
    raw: str


def channel_mode(channel: str | int) -> str | int:
    """"mix" | 0 | 1 | "split" from what users write (mix, A, B, 0, 1, split; any case)."""
    text = str(channel).strip()
    lowered = text.lower()
    if lowered in ("mix", "split"):
        return lowered
    if text.upper() in CHANNEL_SUFFIXES:
        return CHANNEL_SUFFIXES.index(text.upper())
    if text in ("0", "1"):
        return int(text)
    raise UserError(f"channel {channel!r}: use mix, A (or 0), B (or 1) or split")


SOURCE_FORMATS = ("kaldi", "jsonl", "csv", "tsv", "folder")
# what write_corpus writes: the sources' formats, and the Nano JSONL FunASR trains on
WRITE_FORMATS = ("kaldi", "jsonl", "nano", "csv", "tsv", "folder")


def read_source(source: Path, *, mode: str | int = "mix", allow_pipes: bool = False, source_format: str | None = None,
                audio_column: str | None = None, text_column: str | None = None, key_column: str | None = None,
                exclude: Path | None = None, audio_root: Path | str | None = None, need_text: bool = True,
                manifests: bool = False) -> tuple[str, Path, list[Entry], list[Problem]]:
    """Any source nano8k reads: (format, location, entries with unique keys, rejects). The one
    reader, shared by prepare, simulate and decode, so all apply the same rules and reasons.

    Formats: a Kaldi directory, a source/target JSONL, a CSV/TSV, a folder; with `manifests` also a
    Nano JSONL ("nano"); without `need_text` (decoding: transcripts are references, optional) also
    a text list of audio paths ("list") and one audio file ("audio"). The one path rule: a relative
    audio path is taken from `audio_root` when given, else from the input's own directory (the
    Kaldi directory, the JSONL's or CSV's directory); entries carry absolute paths. A key seen
    before keeps its first entry; the later one is a duplicate_key reject."""
    fmt, location, delimiter = detect_source(source, source_format, need_text=need_text, manifests=manifests)
    root = audio_root_of(location, audio_root)
    if fmt == "kaldi":
        entries, rejects = _read_kaldi(location, allow_pipes, mode, need_text)
    elif fmt == "jsonl":
        entries, rejects = _read_source_jsonl(location, mode, need_text, manifests)
    elif fmt == "nano":
        entries, rejects = _read_source_jsonl(location, mode, need_text, manifests=True)
    elif fmt == "table":
        entries, rejects = _read_table(location, mode, delimiter, audio_column, text_column, key_column, need_text)
    elif fmt == "list":
        entries, rejects = _read_list(location)
    elif fmt == "audio":
        audio = str(Path(location).absolute())  # as given it is relative to here, not to its own directory
        entries, rejects = [Entry(str(location), 0, location.stem, audio, None, raw=str(location))], []
    else:
        entries, rejects = _read_folder(location, mode, exclude=exclude, need_text=need_text)
    if not entries and not rejects:  # a 0-byte wav.scp, an empty list: an error, never "0 of 0 written"
        raise UserError(f"{location}: holds no utterances (an empty {FORMAT_NAMES.get(fmt, fmt)}); nothing to do")
    for entry in entries:
        if entry.audio is not None and not entry.pipe and not is_url(entry.audio):
            entry.audio = resolve_path(entry.audio, root)
    return fmt, location, _unique_keys(entries, rejects), rejects


FORMAT_NAMES = {"kaldi": "Kaldi directory", "jsonl": "JSONL", "nano": "Nano manifest", "table": "table",
                "list": "list of audio files", "folder": "folder"}


KALDI_INPUTS = ("wav.scp", "text", "segments", "utt2spk", "utt2channel")  # what _read_kaldi may read


def files_read(location: Path, entries: list[Entry] = ()) -> set[Path]:
    """The files a command read for a source (resolved): the file itself, a Kaldi directory's
    files, and the entries' audio (a folder's transcripts beside it)."""
    location = Path(location)
    read = {location} | ({location / n for n in KALDI_INPUTS} if location.is_dir() else set())
    for entry in entries:
        if entry.audio is not None and not entry.pipe and not is_url(entry.audio):
            read |= {Path(entry.audio), Path(entry.audio).with_suffix(".txt")}
    return {p.resolve() for p in read}


def check_apart(outputs: Iterable[Path], location: Path, entries: list[Entry] = ()) -> None:
    """One line, before anything is written, when an output would land on a file the source was
    read from (prepare DIR DIR/text would replace the transcripts with the manifest)."""
    read = files_read(location, entries)
    for output in outputs:
        if Path(output).resolve() in read:
            raise UserError(f"{output}: is a file of the input {location}; writing there would overwrite it: choose "
                            "another output")


def audio_root_of(location: Path, audio_root: Path | str | None) -> Path:
    """The one path rule's directory: `audio_root` when given, else the input's own directory (a
    directory input itself, a file's parent)."""
    if audio_root is not None:
        if not Path(audio_root).is_dir():
            raise UserError(f"audio_root {audio_root}: no such directory")
        return Path(audio_root).absolute()
    location = Path(location).absolute()
    return location if location.is_dir() else location.parent


def audio_root_hint(problems: Iterable[Problem], total: int, location: Path, audio_root: Path | str | None) -> str:
    """When every audio file of an input is missing, the likely cause: relative paths taken from
    the wrong directory. '' otherwise."""
    missing = sum(p.reason == "missing_audio" for p in problems)
    if not total or missing < total:
        return ""
    return (f"every audio file is missing: relative paths are taken from {audio_root_of(location, audio_root)}; "
            "if they are relative to another directory, give it with --audio-root (audio_root=)")


def detect_source(source: Path, source_format: str | None = None, need_text: bool = True,
                  manifests: bool = False) -> tuple[str, Path, str | None]:
    """(format, location, CSV delimiter or None)."""
    source = Path(source).expanduser()
    what = not_a_file(source)
    if what == "does not exist":
        raise UserError(f"{source}: no such file or directory")
    if what is not None and what != "is a directory":  # a FIFO is never opened: reading it waits forever
        raise UserError(f"{source}: {what}, not a file or directory nano8k can read")
    if source.is_file() and source.name == "wav.scp":
        source = source.parent
    wanted = source_format.lower().strip() if source_format else None
    if wanted not in (None, *SOURCE_FORMATS):
        raise UserError(f"source format {source_format!r}: use kaldi, jsonl, csv, tsv or folder")
    if source.is_dir():
        if wanted not in (None, "kaldi", "folder"):
            raise UserError(f"{source}: a directory cannot be read as {wanted}")
        if wanted != "folder" and (source / "wav.scp").is_file():
            if need_text and not (source / "text").is_file():
                raise UserError(f"{source}: Kaldi data directory without a text file")
            return "kaldi", source, None
        if wanted == "kaldi":
            raise UserError(f"{source}: not a Kaldi data directory (no wav.scp)")
        if any(True for _ in audio_files(source, exclude=None)):
            return "folder", source, None
        raise UserError(f"{source}: neither a Kaldi data directory (no wav.scp) nor a folder of audio files "
                        f"({', '.join(sorted(AUDIO_SUFFIXES))})" + (" with .txt transcripts" if need_text else ""))
    if wanted in ("kaldi", "folder"):
        raise UserError(f"{source}: a file cannot be read as {wanted}; give the directory")
    suffix = source.suffix.lower()
    if wanted in ("csv", "tsv") or suffix in (".csv", ".tsv", ".tab"):
        if wanted == "tsv" or (wanted is None and suffix in (".tsv", ".tab")):
            return "table", source, "\t"
        return "table", source, "," if suffix == ".csv" else None  # None: sniffed
    if wanted is None and is_audio_name(source):
        if need_text:
            raise UserError(f"{source}: one audio file has no transcript; give a Kaldi directory, a JSONL, a CSV/TSV "
                            "or a folder of audio files with .txt transcripts")
        return "audio", source, None
    with open(source, "rb") as f:
        head = f.read(4096)
    # the head may end inside a character: decoded leniently, for a look at what the file is
    text_head = head.decode(encoding_of(head), "replace").lstrip("\ufeff").lstrip() if is_text(head) else None
    if wanted == "jsonl" or suffix in (".jsonl", ".json") or (text_head or "").startswith("{"):
        if manifests and _first_is_manifest(source):
            return "nano", source, None
        return "jsonl", source, None
    if not need_text and wanted is None and text_head is not None and suffix in LIST_SUFFIXES:
        return "list", source, None
    if not need_text:  # never read as a list of paths: a raw telephony prompt would be thousands of "paths"
        raise UserError(f"{source}: not audio nano8k reads ({suffix or 'no extension'}; audio: "
                        f"{', '.join(sorted(AUDIO_SUFFIXES))}), nor a JSONL, nor a text list of audio files "
                        f"({', '.join(s or 'no extension' for s in LIST_SUFFIXES)})")
    raise UserError(f"{source}: neither a Kaldi data directory (wav.scp + text), a JSONL file nor a .csv/.tsv "
                    "file (give the format with source_format / --format)")


LIST_SUFFIXES = (".txt", ".lst", ".list", ".scp", "")  # a text list of audio paths, one a line


def is_text(head: bytes) -> bool:
    """Whether a file's first bytes are text (UTF-8 or UTF-16), not binary."""
    if encoding_of(head).startswith("utf-16"):
        return True
    if b"\0" in head:
        return False
    try:
        head[:-4].decode("utf-8")  # the last bytes may cut a character
    except UnicodeDecodeError:
        return False
    return True


def _first_is_manifest(path: Path) -> bool:
    """Whether the first non-blank line is a Nano line (read alone: a manifest may be large)."""
    with open(path, "rb") as raw:
        encoding = encoding_of(raw.read(4096))
    with open(path, encoding=encoding, errors="replace") as f:
        for line in f:
            if line.strip():
                try:
                    return is_manifest(json.loads(line))
                except ValueError:
                    return False
    return False


def read_keyed(
    path: Path, rejects: list[Problem], value_name: str | None, claimed: set[str] | None = None,
) -> dict[str, Keyed]:
    """`key value` lines of a Kaldi file. `value_name`: the value must be there (a malformed line
    otherwise); None: it may be empty (a transcript: reported as empty where it is used). Keys of
    rejected lines go to `claimed`: their transcripts are not reported a second time."""
    out: dict[str, Keyed] = {}
    claimed = set() if claimed is None else claimed
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        key, value = parts[0], (parts[1].strip() if len(parts) > 1 else "")
        if undecodable(line):
            rejects.append(Problem(str(path), lineno, shown(key), "undecodable_text", bad_bytes(line), input=shown(line)))
            claimed.add(key)
            continue
        if value_name is not None and not value:
            rejects.append(Problem(str(path), lineno, key, "malformed_line", f"no {value_name} after the key", input=line))
            claimed.add(key)
            continue
        if key in out:
            rejects.append(Problem(str(path), lineno, key, "duplicate_key", f"first at {path}:{out[key].line}, which is kept", input=line))
            continue
        out[key] = Keyed(value, str(path), lineno, line)
    return out


SIDES = {"A": 0, "B": 1, "1": 0, "2": 1}  # reco2file_and_channel's recording side -> channel index


def read_reco2file_and_channel(directory: Path) -> dict[str, tuple[str, int]]:
    """A Kaldi directory's reco2file_and_channel (`recording file side`, side A or B, or 1 or 2):
    recording -> (file, channel index); {} when there is none. A malformed line is one error
    naming it (the file says which call and channel each recording is: guessing would mix them)."""
    path = Path(directory) / "reco2file_and_channel"
    if not path.is_file():
        return {}
    out: dict[str, tuple[str, int]] = {}
    for lineno, line in enumerate(read_lines(path), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or parts[2].upper() not in SIDES:
            raise UserError(f"{path}:{lineno}: expected `recording file side` with side A or B (or 1 or 2), "
                            f"got {shown(line.strip())!r}")
        if parts[0] in out:
            raise UserError(f"{path}:{lineno}: recording {parts[0]} is listed twice")
        out[parts[0]] = (parts[1], SIDES[parts[2].upper()])
    return out


def _pair_transcripts(
    unit: Entry, transcripts: dict[str, Keyed], used: set[str], mode: str | int, missing: str,
    speakers: Mapping[str, Keyed], entries: list[Entry], rejects: list[Problem], need_text: bool = True,
    fields: Mapping[str, dict] | None = None, reported: set[str] = frozenset(),
) -> None:
    """Entries for one audio unit (a wav.scp line, a segment, a folder's file) keyed `unit.key`,
    with transcripts looked up by key; channel=split looks for `<key>-A`/`<key>-B` first."""

    def pair(key: str, channel: int | None, mono_only: bool, note: str = "") -> None:
        found = transcripts.get(key)
        carried = dict((fields or {}).get(key) or (fields or {}).get(unit.key) or {})
        if found is None and not need_text:
            speaker = speakers.get(key) or speakers.get(unit.key)
            entries.append(Entry(unit.file, unit.line, key, unit.audio, None, unit.pipe, raw=unit.raw,
                                 segment=unit.segment, recording=unit.recording, channel=channel, mono_only=mono_only,
                                 speaker=speaker.value if speaker else None, fields=carried))
            return
        if found is None and key in reported:
            return  # its transcript line is a reject already: one report per utterance
        if found is None:
            rejects.append(Problem(unit.file, unit.line, key, "no_text", f"{key} is not in {missing}{note}", input=unit.raw))
            return
        used.add(key)
        text, bad = clean_transcript(found.value)  # empty: a non-speech segment, kept (its truth is no words)
        if bad:
            rejects.append(Problem(found.file, found.line, key, "undecodable_text", bad, input=found.raw))
            return
        speaker = speakers.get(key) or speakers.get(unit.key)
        entries.append(Entry(unit.file, unit.line, key, unit.audio, text, unit.pipe, raw=unit.raw,
                              segment=unit.segment, recording=unit.recording, channel=channel, mono_only=mono_only,
                              speaker=speaker.value if speaker else None, fields=carried))

    if mode == "split":
        per_channel = [f"{unit.key}-{suffix}" for suffix in CHANNEL_SUFFIXES]
        if any(key in transcripts for key in per_channel):
            for channel, key in enumerate(per_channel):
                pair(key, channel, False, " (channel=split: one transcript per channel, "
                                          f"{per_channel[0]} and {per_channel[1]})")
            whole = transcripts.get(unit.key)
            if whole is not None:
                used.add(unit.key)
                rejects.append(Problem(whole.file, whole.line, unit.key, "unused_text",
                                       f"channel=split uses {per_channel[0]}/{per_channel[1]}; this transcript of "
                                       "the whole recording is not written", input=whole.raw))
        else:
            pair(unit.key, None, True)
    else:
        pair(unit.key, mode if isinstance(mode, int) else None, False)


def _read_kaldi(directory: Path, allow_pipes: bool, mode: str | int = "mix",
                need_text: bool = True) -> tuple[list[Entry], list[Problem]]:
    """wav.scp + text (+ segments, utt2spk, and utt2channel: simulate's channel parameters, one
    JSON object a key) -> entries in wav.scp order (segments order when there is a segments file);
    pairing problems as rejects."""
    scp, text, seg, spk = (directory / name for name in ("wav.scp", "text", "segments", "utt2spk"))
    rejects: list[Problem] = []
    claimed: set[str] = set()  # keys of rejected audio lines: their transcripts are not reported again
    bad_text: set[str] = set()  # keys of rejected transcript lines: reported once, there
    transcripts = read_keyed(text, rejects, None, bad_text) if text.is_file() else {}
    speakers = read_keyed(spk, rejects, "speaker") if spk.is_file() else {}
    channels = _read_utt2channel(directory / "utt2channel", rejects)
    recordings = read_keyed(scp, rejects, "audio path", None if seg.is_file() else claimed)

    pipes = [(r.line, key) for key, r in recordings.items() if r.value.endswith("|")]
    if pipes and not allow_pipes:
        lineno, key = pipes[0]
        more = f" and {len(pipes) - 1} more" if len(pipes) > 1 else ""
        raise UserError(f"{scp}:{lineno}: '{key}' is a pipe command ('... |'){more}; commands in data files are "
                        "not run unless pipes are allowed (allow_pipes / --allow-pipes)")

    def location(rec: Keyed) -> tuple[str, bool]:
        pipe = rec.value.endswith("|")
        return (rec.value[:-1].strip() if pipe else rec.value), pipe

    units: list[Entry] = []
    if seg.is_file():
        seen: dict[str, int] = {}
        for lineno, line in enumerate(read_lines(seg), 1):
            if not line.strip():
                continue
            parts = line.split()
            where = (str(seg), lineno)
            key = parts[0]
            claimed.add(key)  # reported below unless it becomes an entry, which uses its transcript
            if undecodable(line):
                rejects.append(Problem(*where, shown(key), "undecodable_text", bad_bytes(line), input=shown(line)))
                continue
            try:
                if len(parts) != 4:
                    raise ValueError(f"{len(parts)} fields, not 4 (utt rec start end)")
                start, end = Fraction(parts[2]), Fraction(parts[3])
                if start < 0 or end <= start:
                    raise ValueError(f"start {parts[2]} and end {parts[3]}: need 0 <= start < end")
            except (ValueError, ZeroDivisionError) as err:
                rejects.append(Problem(*where, key, "malformed_line", one_line(err), input=line))
                continue
            if key in seen:
                rejects.append(Problem(*where, key, "duplicate_key", f"first at {seg}:{seen[key]}, which is kept", input=line))
                continue
            seen[key] = lineno
            rec = recordings.get(parts[1])
            if rec is None:
                rejects.append(Problem(*where, key, "no_recording", f"recording {parts[1]} is not in {scp}", input=line))
                continue
            audio, pipe = location(rec)
            units.append(Entry(*where, key, audio, None, pipe, raw=line, segment=(start, end), recording=parts[1]))
    else:
        for key, rec in recordings.items():
            audio, pipe = location(rec)
            units.append(Entry(rec.file, rec.line, key, audio, None, pipe, raw=rec.raw))

    entries: list[Entry] = []
    used: set[str] = set()
    for unit in units:
        _pair_transcripts(unit, transcripts, used, mode, str(text), speakers, entries, rejects, need_text, channels,
                          bad_text)
    audio_file = seg if seg.is_file() else scp
    for key, found in transcripts.items():
        base = re.sub(r"-[AB]$", "", key) if mode == "split" else key
        if key not in used and key not in claimed and base not in claimed:
            rejects.append(Problem(found.file, found.line, key, "no_audio", f"{key} is not in {audio_file}", input=found.raw))
    return entries, rejects


def _read_utt2channel(path: Path, rejects: list[Problem]) -> dict[str, dict]:
    """utt2channel (`key {json}`, what simulate writes) -> {key: {"channel": {...}}}."""
    if not path.is_file():
        return {}
    out = {}
    for key, found in read_keyed(path, rejects, "channel object").items():
        try:
            value = json.loads(found.value)
        except ValueError as err:
            rejects.append(Problem(found.file, found.line, key, "malformed_line", f"not a JSON object: {one_line(err)}",
                                   input=found.raw))
            continue
        out[key] = {"channel": value}
    return out


def _row_channel(key: str, mode: str | int) -> tuple[int | None, bool]:
    """(channel, mono_only) of a JSONL/CSV row: with channel=split, a key ending in -A/-B takes
    that channel of its audio; any other key must have mono audio."""
    if isinstance(mode, int):
        return mode, False
    if mode == "split":
        match = re.fullmatch(r".+-([AB])", key)
        return (CHANNEL_SUFFIXES.index(match[1]), False) if match else (None, True)
    return None, False


# JSONL fields of a source line, the first present wins; every other field is carried.
JSONL_AUDIO_FIELDS = ("source", "audio", "wav", "path")
JSONL_TEXT_FIELDS = ("target", "text", "reference")
KEY_FIELDS = ("key", "id", "utt_id", "utt")  # a JSONL line's key, in order (prepare, score)


def _read_source_jsonl(path: Path, mode: str | int = "mix", need_text: bool = True,
                       manifests: bool = False) -> tuple[list[Entry], list[Problem]]:
    """The seed's {"key", "source"|"audio", "target"|"text"} lines -> entries in file order; the
    line's other fields (speaker, simulate's channel, ...) are carried. With `manifests`, Nano
    lines (messages) are read too, line by line (a file may mix both)."""
    entries: list[Entry] = []
    rejects: list[Problem] = []
    seen: dict[str, int] = {}
    checked_format = False
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        where = (str(path), lineno)
        if undecodable(line):
            rejects.append(Problem(*where, json_key(replaced(line)), "undecodable_text", bad_bytes(line), input=shown(line)))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            rejects.append(Problem(*where, None, "malformed_line", f"invalid JSON: {err.msg} at column {err.colno}", input=line))
            continue
        if not isinstance(obj, dict):
            rejects.append(Problem(*where, None, "malformed_line", f"a JSON {type(obj).__name__}, not an object", input=line))
            continue
        if manifests and is_manifest(obj):
            found = _nano_entry(obj, where, line, need_text)
            if isinstance(found, Problem):
                rejects.append(found)
                continue
            if found.key in seen:
                rejects.append(Problem(*where, found.key, "duplicate_key", f"first at {path}:{seen[found.key]}, which is "
                                                                           "kept", input=line))
                continue
            seen[found.key] = lineno
            entries.append(found)
            continue
        if not checked_format:
            checked_format = True
            if is_manifest(obj):
                raise UserError(f"{path}: already a Nano manifest (it has 'messages'); check it instead of preparing it")
        key_field = next((k for k in KEY_FIELDS if k in obj), "key")
        key = obj.get(key_field)
        if key is None:
            key = f"sample_{lineno:08d}"
        elif isinstance(key, (list, tuple)) and len(key) == 1:
            key = key[0]
        if not isinstance(key, (str, int)) or isinstance(key, bool) or str(key).strip() == "":
            rejects.append(Problem(*where, None, "malformed_line", f"key {key!r} is not a non-empty string", input=line))
            continue
        key = str(key).strip()
        if key in seen:
            rejects.append(Problem(*where, key, "duplicate_key", f"first at {path}:{seen[key]}, which is kept", input=line))
            continue
        seen[key] = lineno

        audio_field = next((k for k in JSONL_AUDIO_FIELDS if k in obj), "source")
        text_field = next((k for k in JSONL_TEXT_FIELDS if k in obj), "target")
        audio, text = obj.get(audio_field), obj.get(text_field)
        problem = None
        if audio is None or (isinstance(audio, str) and not audio.strip()):
            problem = ("no_audio", f"no {'/'.join(JSONL_AUDIO_FIELDS)} field")
        elif not isinstance(audio, str):
            problem = ("malformed_line", f"'{audio_field}' is a {type(audio).__name__}, not a path")
        elif text is None and not need_text:
            pass
        elif text is None:
            problem = ("no_text", f"no {'/'.join(JSONL_TEXT_FIELDS)} field")
        elif not isinstance(text, str):
            problem = ("malformed_line", f"'{text_field}' is a {type(text).__name__}, not a string")
        else:
            text, bad = clean_transcript(text)  # empty: a non-speech segment, kept
            if bad:
                problem = ("undecodable_text", bad)
        if problem is not None:
            rejects.append(Problem(*where, key, *problem, input=line))
            continue
        channel, mono_only = _row_channel(key, mode)
        carried = {k: v for k, v in obj.items() if k not in (key_field, audio_field, text_field)}
        speaker = carried.get("speaker")
        entries.append(Entry(*where, key, audio.strip(), text, raw=line, channel=channel, mono_only=mono_only,
                             speaker=speaker if isinstance(speaker, str) else None, fields=carried, obj=obj,
                             audio_field=audio_field))
    return entries, rejects


def _nano_entry(obj: dict, where: tuple[str, int], line: str, need_text: bool) -> Entry | Problem:
    """A Nano line (simulate's and decode's input) as an entry: its single audio file, the first
    assistant turn as its transcript (optional without `need_text`), its prompt and fields."""
    try:
        parsed = parse_manifest(obj)
    except ValueError as err:
        return Problem(*where, None, "malformed_line", one_line(err), input=line)
    key = parsed.key or f"sample_{where[1]:08d}"
    text = parsed.text.strip() if parsed.text is not None else None
    if not parsed.audio:
        return Problem(*where, key, "no_audio", "no <|startofspeech|>!path<|endofspeech|> in the user turn", input=line)
    if len(parsed.audio) > 1:
        return Problem(*where, key, "multiple_audio", f"{len(parsed.audio)} audio files in the user turns", input=line)
    if text is None and need_text:
        return Problem(*where, key, "no_text", "no assistant turn with a string content", input=line)
    speaker = parsed.fields.get("speaker")
    return Entry(*where, key, parsed.audio[0], text, raw=line, obj=parsed.obj, prompt=parsed.prompt,
                 fields=parsed.fields, speaker=speaker if isinstance(speaker, str) else None)


def _read_list(path: Path) -> tuple[list[Entry], list[Problem]]:
    """One audio path a line (blank lines and # comments skipped); key: the file's stem, or the
    path as written where two stems collide."""
    lines = [(n, line.strip()) for n, line in enumerate(read_lines(path), 1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    stems = Counter(Path(line).stem for _, line in lines)
    return [Entry(str(path), n, Path(line).stem if stems[Path(line).stem] == 1 else line, line, None, raw=line)
            for n, line in lines], []


def json_key(line: str) -> str | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    key = obj.get("key") if isinstance(obj, dict) else None
    return str(key) if isinstance(key, (str, int)) and not isinstance(key, bool) else None


TABLE_COLUMNS = {
    "audio": ("audio", "path", "wav", "source", "audio_path", "wav_path", "audio_filepath", "file"),
    "text": ("text", "transcript", "target", "sentence", "transcription"),
    "key": ("key", "id", "utt", "utt_id", "uttid"),
}


def _read_table(
    path: Path, mode: str | int, delimiter: str | None, audio_column: str | None = None,
    text_column: str | None = None, key_column: str | None = None, need_text: bool = True,
) -> tuple[list[Entry], list[Problem]]:
    """A CSV/TSV file with a header row -> entries in file order. Columns are matched by name,
    case-insensitively; without a key column the key is sample_<line>. `delimiter` None: the
    header line's most frequent of `,`, TAB, `;` and `|`."""
    content = read_text(path)
    if content.startswith("\ufeff"):
        content = content[1:]
    if delimiter is None:  # the header's most frequent of , TAB ; | (csv.Sniffer gives up on ragged rows)
        head = next((line for line in content.splitlines() if line.strip()), "")
        delimiter = max(",\t;|", key=head.count)
    physical = content.splitlines()
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    rejects: list[Problem] = []
    entries: list[Entry] = []
    header: list[str] | None = None
    columns: dict[str, int | None] = {}
    seen: dict[str, int] = {}
    end = 0
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:  # e.g. a NUL byte or an unterminated quote at the end
            end = reader.line_num
            rejects.append(Problem(str(path), start, None, "malformed_line", f"CSV: {one_line(err)}",
                                   input=shown("\n".join(physical[start - 1:end]))))
            continue
        end = reader.line_num
        raw = "\n".join(physical[start - 1:end])
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip() for cell in row]
            columns = _table_columns(path, header, audio_column, text_column, key_column)
            continue
        where = (str(path), start)
        if undecodable(raw):
            key_at = columns["key"]
            key = shown(row[key_at]).strip() if key_at is not None and key_at < len(row) else None
            rejects.append(Problem(*where, key, "undecodable_text", bad_bytes(raw), input=shown(raw)))
            continue
        if len(row) != len(header):
            rejects.append(Problem(*where, None, "malformed_line", f"{len(row)} fields, the header has {len(header)}",
                                   input=raw))
            continue
        key = row[columns["key"]].strip() if columns["key"] is not None else f"sample_{start:08d}"
        if not key:
            rejects.append(Problem(*where, None, "malformed_line", f"empty {header[columns['key']]!r}", input=raw))
            continue
        if key in seen:
            rejects.append(Problem(*where, key, "duplicate_key", f"first at {path}:{seen[key]}, which is kept", input=raw))
            continue
        seen[key] = start
        audio, (text, bad) = row[columns["audio"]].strip(), clean_transcript(row[columns["text"]])
        if not audio:
            rejects.append(Problem(*where, key, "no_audio", f"empty {header[columns['audio']]!r}", input=raw))
            continue
        if bad:
            rejects.append(Problem(*where, key, "undecodable_text", bad, input=raw))
            continue
        channel, mono_only = _row_channel(key, mode)
        carried = _table_fields(header, row, {i for i in columns.values() if i is not None})
        speaker = carried.get("speaker")
        entries.append(Entry(*where, key, audio, text or None, raw=raw, channel=channel, mono_only=mono_only,
                             speaker=speaker if isinstance(speaker, str) else None, fields=carried))
    if header is None:
        raise UserError(f"{path}: no header row (a CSV/TSV file needs named columns)")
    return entries, rejects


INTEGER = re.compile(r"[-+]?\d+")
DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")  # no nan/inf: those stay text


def _cell_value(text: str) -> int | float | str:
    if INTEGER.fullmatch(text):
        return int(text)
    return float(text) if DECIMAL.fullmatch(text) else text


def _table_fields(header: list[str], row: list[str], used: set[int]) -> dict:
    """A row's other columns, carried: numbers as numbers, empty cells left out; simulate's channel
    columns (manifest.LINE_FIELDS) together as one `channel` object, as its JSONL writes it."""
    fields: dict = {}
    for i, (name, cell) in enumerate(zip(header, row)):
        if i in used or not cell.strip() or not name:
            continue
        value = _cell_value(cell.strip())
        if name in LINE_FIELDS:
            fields.setdefault("channel", {})[name] = value
        else:
            fields[name] = value
    return fields


def _table_columns(path: Path, header: list[str], audio: str | None, text: str | None, key: str | None) -> dict[str, int | None]:
    lowered = [name.lower() for name in header]
    found: dict[str, int | None] = {}
    for role, given in (("audio", audio), ("text", text), ("key", key)):
        if given is not None:
            if given.strip().lower() not in lowered:
                raise UserError(f"{path}: no column {given!r} for the {role} (columns: {', '.join(header)})")
            found[role] = lowered.index(given.strip().lower())
            continue
        found[role] = next((lowered.index(name) for name in TABLE_COLUMNS[role] if name in lowered), None)
        if found[role] is None and role != "key":
            raise UserError(f"{path}: no {role} column (looked for {', '.join(TABLE_COLUMNS[role])}; columns: "
                            f"{', '.join(header)}); name it with {role}_column / --{role}-column")
    if found["audio"] == found["text"]:
        raise UserError(f"{path}: the audio and the text column are both {header[found['audio']]!r}")
    return found


def audio_files(directory: Path, exclude: Path | None) -> Iterable[Path]:
    """Audio files under `directory`, recursively, sorted by relative path; hidden files and
    directories, and `exclude` (the output's own audio directory), are skipped."""
    skip = os.path.abspath(exclude) if exclude is not None else None
    for current, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (skip is None or os.path.abspath(os.path.join(current, d)) != skip))
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in AUDIO_SUFFIXES:
                yield Path(current) / name


def readable_audio(location: str | Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(readable audio files, those left out as unreadable or empty) of a folder (audio_files, in
    the order of their relative paths; absolute paths) or of a list file (a path a line, relative to
    the list's directory; blank lines and # comments skipped): the noise and room-response lists of
    simulate and augment. Cached per location: a noise folder is listed once per process."""
    return _readable_audio(str(Path(location).resolve()))


@functools.lru_cache(maxsize=8)
def _readable_audio(location: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    import soundfile as sf

    where = Path(location)
    if where.is_dir():
        found = sorted(audio_files(where, None), key=lambda p: p.relative_to(where).as_posix())
    else:
        lines = (line.strip() for line in read_lines(where))
        found = [Path(line) if Path(line).is_absolute() else where.parent / line
                 for line in lines if line and not line.startswith("#")]
    readable, left_out = [], []
    for path in found:
        try:
            info = sf.info(str(path))
            good = info.frames > 0 and info.samplerate > 0
        except Exception:  # noqa: BLE001 -- any unreadable file is left out, and said so by the caller
            good = False
        (readable if good else left_out).append(str(path))
    return tuple(readable), tuple(left_out)


def folder_key(relative: Path) -> str:
    """Key of a file in a folder input: its relative path without extension, '/'-separated,
    whitespace replaced by '_' (Kaldi keys hold no whitespace)."""
    return re.sub(r"\s+", "_", relative.with_suffix("").as_posix())


def _read_folder(directory: Path, mode: str | int = "mix", exclude: Path | None = None,
                 need_text: bool = True) -> tuple[list[Entry], list[Problem]]:
    """Audio files with same-stem .txt transcripts (stem-A.txt/stem-B.txt for channel=split)."""
    rejects: list[Problem] = []
    units: list[Entry] = []
    owners: dict[str, Path] = {}
    for path in audio_files(directory, exclude):
        key = folder_key(path.relative_to(directory))
        if key in owners:
            rejects.append(Problem(str(path), 0, key, "duplicate_key", f"the key of {owners[key]}, which is used; this "
                                                                       "file is not"))
            continue
        owners[key] = path
        units.append(Entry(str(path), 0, key, str(path.absolute()), None, raw=str(path)))

    transcripts: dict[str, Keyed] = {}
    others: dict[str, str] = {}  # key -> a file of that stem in no format nano8k reads
    for current, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(current) / name
            key = folder_key(path.relative_to(directory))
            if not name.lower().endswith(".txt"):
                if not is_audio_name(name):
                    others.setdefault(key, name)
                continue
            content = path.read_bytes()
            try:
                text = decode_text(content, path)
            except UserError as err:
                rejects.append(Problem(str(path), 0, key, "undecodable_text", str(err),
                                       input=content.decode("utf-8", "backslashreplace")))
                continue
            if undecodable(text):
                rejects.append(Problem(str(path), 0, key, "undecodable_text", bad_bytes(text), input=shown(text)))
                continue
            transcripts[key] = Keyed(text, str(path), 0, text)

    entries: list[Entry] = []
    used: set[str] = set()
    for unit in units:
        _pair_transcripts(unit, transcripts, used, mode, "the folder (no .txt transcript)", {}, entries, rejects,
                          need_text)
    for key, found in sorted(transcripts.items()):
        if key not in used:
            other = others.get(re.sub(r"-[AB]$", "", key) if mode == "split" else key)
            detail = (f"no audio file with this stem; {other} is not a format nano8k reads "
                      f"({', '.join(sorted(AUDIO_SUFFIXES))})" if other else "no audio file with this stem")
            rejects.append(Problem(found.file, 0, key, "no_audio", detail, input=found.raw))
    return entries, rejects


def _unique_keys(entries: list[Entry], rejects: list[Problem]) -> list[Entry]:
    """Drop entries whose key an earlier entry already has (after channel=split suffixing)."""
    seen: dict[str, Entry] = {}
    kept = []
    for entry in entries:
        first = seen.get(entry.key)
        if first is not None:
            rejects.append(Problem(entry.file, entry.line, entry.key, "duplicate_key",
                                   f"the key of {first.file}:{first.line}, which is kept; this one is not used",
                                   input=entry.raw))
            continue
        seen[entry.key] = entry
        kept.append(entry)
    return kept


# ---------------------------------------------------------------------------------------------
# Writing sources: the one Kaldi writer (what read_source reads back)
# ---------------------------------------------------------------------------------------------


@dataclass
class KaldiRow:
    key: str
    audio: str
    text: str
    speaker: str | None = None
    line: dict | None = None  # simulate's drawn telephone-line parameters -> utt2channel


def write_kaldi(directory: Path, rows: Sequence[KaldiRow]) -> None:
    """wav.scp and text (transcripts on one line), utt2channel when rows carry channel parameters,
    utt2spk and spk2utt when they name speakers (Kaldi wants every utterance in utt2spk: one
    without a speaker is its own). Keys must hold no whitespace."""
    directory = Path(directory)
    bad = next((row.key for row in rows if re.search(r"\s", row.key)), None)
    if bad is not None:
        raise UserError(f"{directory}: the key {bad!r} has whitespace, which a Kaldi directory cannot hold")
    write_lines_atomic(directory / "wav.scp", (f"{row.key} {row.audio}" for row in rows))
    write_lines_atomic(directory / "text", (f"{row.key} {' '.join(row.text.split())}" for row in rows))
    if any(row.line is not None for row in rows):
        write_lines_atomic(directory / "utt2channel",
                           (f"{row.key} {json.dumps(row.line or {}, ensure_ascii=False, separators=(',', ':'))}"
                            for row in rows))
    if any(row.speaker for row in rows):
        pairs = [(row.key, row.speaker or row.key) for row in rows]
        write_lines_atomic(directory / "utt2spk", (f"{u} {s}" for u, s in pairs))
        by_speaker: dict[str, list[str]] = {}
        for u, s in pairs:
            by_speaker.setdefault(s, []).append(u)
        write_lines_atomic(directory / "spk2utt", (f"{s} {' '.join(us)}" for s, us in sorted(by_speaker.items())))


@dataclass
class RewrittenAudio:
    """An entry whose audio was rewritten (`nano8k data simulate`): the new file, its length and rate,
    and the telephone line's drawn parameters, for the corpus writers below."""

    entry: Entry
    audio: str
    samples: int
    rate: int
    line: dict  # the telephone line's drawn parameters (on disk: the `channel` object)


def write_corpus(output_format: str, out_dir: Path, manifest: Path, rows: Sequence[RewrittenAudio],
                 frontend_fs: int) -> None:
    """The rewritten corpus in `output_format`, a format read_source reads back: a Kaldi directory
    (out_dir, utt2channel), a CSV/TSV (manifest: the drawn parameters as columns, so `nano8k compare`
    can bucket by them once decoded), a folder (same-stem .txt beside each file, channel.jsonl), or a
    JSONL (manifest: the input's source/target fields, or a Nano line with its audio replaced)."""
    if output_format == "kaldi":
        write_kaldi(out_dir, [KaldiRow(r.entry.key, r.audio, r.entry.text, r.entry.speaker, r.line) for r in rows])
    elif output_format in ("csv", "tsv"):
        with atomic_path(manifest) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter="\t" if output_format == "tsv" else ",")
            writer.writerow(["key", "audio", "text", "speaker", *LINE_FIELDS])
            for r in rows:
                writer.writerow([r.entry.key, r.audio, r.entry.text, r.entry.speaker or "",
                                 *("" if r.line.get(c) is None else r.line[c] for c in LINE_FIELDS)])
    elif output_format == "folder":
        for r in rows:
            write_lines_atomic(Path(r.audio).with_suffix(".txt"), [r.entry.text])
        write_jsonl_atomic(out_dir / "channel.jsonl",
                           [{"key": r.entry.key, "audio": r.audio, "channel": r.line} for r in rows])
    else:
        write_jsonl_atomic(manifest, [_jsonl_row(r, output_format, frontend_fs) for r in rows])


def _jsonl_row(r: RewrittenAudio, output_format: str, frontend_fs: int) -> dict:
    entry = r.entry
    if output_format == "nano":
        row = with_audio(entry.obj or {}, r.audio)
        row.update(key=entry.key, speech_length=fbank_frames(r.samples, r.rate, frontend_fs),
                   duration=round(r.samples / r.rate, 6), sample_rate=r.rate)
    elif entry.audio_field is not None:  # a source/target JSONL: its fields, the new path
        row = dict(entry.obj or {})
        row[entry.audio_field] = r.audio
    else:
        row = {"key": entry.key, "source": r.audio, "target": entry.text}
        if entry.speaker:
            row["speaker"] = entry.speaker
    row["channel"] = r.line
    return row
