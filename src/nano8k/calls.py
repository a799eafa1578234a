"""Whole calls (`nano8k decode vad=silero`): channels, speech segments, one batched decoding of
the segments of every call, and the transcripts stitched back per call and channel in time order.

A call is a file of the input (file, folder, list, JSONL, Kaldi wav.scp), or, for a Kaldi
directory with `segments`, a recording (with `reco2file_and_channel`: the file and side each
recording is, so the recordings of one file's two sides are one call). Its streams are what gets
a transcript: each channel of a stereo file (`channels=split`, the default), their mean (`mix`)
or one channel (`A`, `B`, an index, a `channel_names` name). nano8k.vad cuts each stream into
speech segments a window at a time; the segments of all calls become the decoder's items (a
segment is read from the file when its batch is decoded), sorted by duration and batched
together; so memory holds one VAD window and one batch, whatever the length of the calls.

Outputs, in the run directory: results.jsonl (a line per segment: call, channel, start, end, hyp,
ctc_hyp, decode_time, status), calls.jsonl (a line per call: its turns in time order, speech,
times, RTF, errors against its reference), calls/CALL.txt, .srt and .ctm, and metrics.json.
References: one per call (a folder's .txt, a manifest's text), or a Kaldi `segments` + `text`
set, scored per call (per channel when reco2file_and_channel says which) and per reference
segment (the VAD segments that overlap it most, in time order).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nano8k.decoding import Item
from nano8k.errors import UserError, one_line

log = logging.getLogger(__name__)

CALLS_FILE = "calls.jsonl"
CALLS_DIR = "calls"
DEFAULT_NAMES = ("A", "B")


@dataclass
class Stream:
    """What gets one transcript: a channel of a file (None: the mean of its channels)."""

    name: str
    audio: str
    channel: int | None


@dataclass
class Reference:
    """A reference segment of a Kaldi directory."""

    key: str
    start: float
    end: float
    stream: str | None  # its channel's name, when reco2file_and_channel says which
    text: str | None


@dataclass
class Call:
    key: str
    audio: str | None
    streams: list[Stream] = field(default_factory=list)
    ref: str | None = None  # one reference for the whole call
    references: list[Reference] = field(default_factory=list)
    fields: dict = field(default_factory=dict)
    sides: dict[int, str] = field(default_factory=dict)  # channel index -> audio file, from reco2file_and_channel
    reason: str | None = None  # why it failed
    duration: float = 0.0
    speech_s: float = 0.0
    vad_s: float = 0.0


# --------------------------------------------------------------------------------------------
# Channels
# --------------------------------------------------------------------------------------------


def channel_names(settings: dict) -> list[str]:
    names = [str(n) for n in settings.get("channel_names") or DEFAULT_NAMES]
    if len(set(names)) != len(names) or any(not re.fullmatch(r"[\w.-]+", n) for n in names):
        raise UserError(f"channel_names: {names}: names must be distinct words (letters, digits, _ . -)")
    return names


def channel_choice(settings: dict, names: list[str]) -> str | int:
    """"split", "mix" or a channel index, from decode's `channels` (null: split with vad, else mix)."""
    value = settings.get("channels")
    whole_calls = bool(settings.get("vad"))
    if value is None:
        return "split" if whole_calls else "mix"
    text = str(value).strip()
    if text.lower() in ("split", "mix"):
        if text.lower() == "split" and not whole_calls:
            raise UserError("channels=split: needs vad=silero (whole calls, a transcript per channel); without it a "
                            "file is one utterance: channels=mix or one channel")
        return text.lower()
    if text in names:
        return names.index(text)
    if text.upper() in DEFAULT_NAMES:
        return DEFAULT_NAMES.index(text.upper())
    if text.isdigit():
        return int(text)
    raise UserError(f"channels={value}: use split, mix, A, B, a channel index or one of channel_names ({', '.join(names)})")


def _name(index: int, names: list[str]) -> str:
    return names[index] if index < len(names) else f"ch{index}"


def open_streams(call: Call, choice: str | int, names: list[str], raw_rate: int | None) -> None:
    """The call's streams from its audio header; a call that cannot be read is marked failed. A
    file of more than two channels under `split` is a usage error (one line naming the option)."""
    from nano8k.data import audio as audio_files

    files = call.sides or {None: call.audio}
    for side, path in files.items():
        if not path or not Path(path).is_file():
            call.reason = f"{path}: no such file"
            return
        try:
            frames, rate, channels, _ = audio_files.header_of(path, raw_rate)
        except audio_files.AudioProblem as err:
            call.reason = err.detail
            return
        except OSError as err:
            call.reason = f"{path}: {err.strerror or one_line(err)}"
            return
        call.duration = max(call.duration, frames / rate if rate else 0.0)
        if side is not None:  # reco2file_and_channel: this recording is one side of the call
            call.streams.append(Stream(_name(side, names), path, side if channels > 1 else None))
        elif choice == "mix":
            call.streams.append(Stream("mix", path, None))
        elif choice == "split":
            if channels > 2:
                raise UserError(f"{path}: {channels} channels: channels=split takes one or two; set channels=mix, "
                                f"or channels=N for one of them (0-{channels - 1})")
            call.streams += [Stream(_name(i, names) if channels > 1 else "mono", path, i if channels > 1 else None)
                             for i in range(channels)]
        elif channels > 1 and choice >= channels:
            call.reason = f"{path}: channel {choice} of a {channels}-channel file (channels={choice})"
            return
        else:
            call.streams.append(Stream(_name(int(choice), names), path, int(choice) if channels > 1 else None))


def plan(items: list[Item], settings: dict, names: list[str]) -> list[Call]:
    """Calls of the decoder's input items: a file each, or the recordings of a Kaldi `segments`
    set (with their reference segments), grouped through reco2file_and_channel when present."""
    from nano8k import data

    spec = Path(str(settings.get("input")))
    sides = data.read_reco2file_and_channel(spec) if spec.is_dir() else {}
    calls: dict[str, Call] = {}
    for item in items:
        recording = item.fields.get("recording")
        if item.segment is None and item.key in sides:  # a recording without segments: one side of a call
            name, side = sides[item.key]
            call = calls.setdefault(name, Call(name, item.audio))
            call.sides.setdefault(side, item.audio)
            if item.reason is not None:
                call.reason = item.reason
            elif item.ref is not None:
                call.references.append(Reference(item.key, 0.0, float("inf"), _name(side, names), item.ref))
            continue
        if item.segment is None or recording is None:
            if item.key in calls:
                continue
            calls[item.key] = Call(item.key, item.audio, ref=item.ref, reason=item.reason,
                                   fields={k: v for k, v in item.fields.items() if k != "recording"})
            continue
        name, side = sides.get(recording, (recording, None))
        call = calls.setdefault(name, Call(name, item.audio))
        if side is not None and item.audio:
            call.sides.setdefault(side, item.audio)
        if item.reason is not None:  # a reference line that cannot be used; the call's audio is checked itself
            call.fields.setdefault("reference_problems", []).append(f"{item.key}: {item.reason}")
            continue
        call.references.append(Reference(item.key, float(item.segment[0]), float(item.segment[1]),
                                         _name(side, names) if side is not None else None, item.ref))
    return list(calls.values())


# --------------------------------------------------------------------------------------------
# Segments and decoding
# --------------------------------------------------------------------------------------------


def segment_items(calls: list[Call], detector: Any, raw_rate: int | None, progress: bool = True) -> list[Item]:
    """Speech segments of every stream of every call, as decoder items (read when decoded)."""
    from nano8k.data import audio as audio_files
    from nano8k.parallel import progress_bar

    items: list[Item] = []
    todo = [c for c in calls if c.reason is None]
    with progress_bar("vad", len(todo), enabled=progress) as advance:
        for call in todo:
            tick = time.perf_counter()
            found: list[Item] = []
            try:
                for stream in call.streams:
                    speech = detector.speech(stream.audio, stream.channel, raw_rate)
                    call.speech_s += speech.speech_s
                    for segment in speech.segments:
                        found.append(Item(f"{call.key}-{stream.name}-{round(segment.start * 1000):08d}", stream.audio,
                                          segment=(segment.start, segment.end), channel=stream.channel,
                                          raw_rate=raw_rate, fields={"call": call.key, "channel": stream.name,
                                                                     "start": segment.start, "end": segment.end}))
            except audio_files.AudioProblem as err:
                call.reason = err.detail
                found = []
            call.vad_s = time.perf_counter() - tick
            items += found
            advance(1)
    return items


def check(settings: dict) -> None:
    """The VAD's and the channels' settings, before the input is read."""
    from nano8k import vad

    if settings.get("vad"):
        vad.check(settings["vad"])
    channel_choice(settings, channel_names(settings))


def prepare(items: list[Item], settings: dict) -> list[Call]:
    """The calls of the input, their streams opened (headers only): everything that can be refused
    is refused here, before any model is loaded."""
    names = channel_names(settings)
    choice = channel_choice(settings, names)
    calls = plan(items, settings, names)
    for call in calls:
        if call.reason is None:
            open_streams(call, choice, names, settings.get("raw_rate"))
    return calls


def decode_calls(calls: list[Call], settings: dict, run_dir: Path, decode_segments: Callable[[list[Item]], list[dict]],
                 progress: bool = True) -> tuple[list[dict], list[dict], dict, Any]:
    """Decode whole calls: (segment records, call records, metrics, Scores of the calls or None).
    decode_segments(items) -> their records (decode's: batched, through results.jsonl, so that an
    interrupted decode resumes at the segments it had not decoded; the VAD finds the same ones)."""
    from nano8k import vad

    detector = vad.detector(settings.get("vad") or {})
    segments = segment_items(calls, detector, settings.get("raw_rate"), progress)
    log.info("vad: %d calls, %d segments, %.1f s of speech in %.1f s of audio", len(calls), len(segments),
             sum(c.speech_s for c in calls), sum(c.duration * len(c.streams) for c in calls))
    records = decode_segments(segments) if segments else []
    for record in records:
        record.pop("ref", None)  # a segment has no reference of its own: calls and reference segments do
        record.pop("segment", None)  # start and end say it
    score_conf = settings.get("score") or {}
    call_records, scores = _call_records(calls, records, score_conf)
    metrics = _metrics(calls, records, call_records, scores, score_conf)
    write_call_files(run_dir / CALLS_DIR, call_records)
    write_calls(run_dir / CALLS_FILE, call_records)
    return records, call_records, metrics, scores


def _call_records(calls: list[Call], records: list[dict], score_conf: dict) -> tuple[list[dict], Any]:
    from nano8k import score as scoring

    by_call: dict[str, list[dict]] = {}
    for record in records:
        by_call.setdefault(record["call"], []).append(record)
    out, scored = [], []
    for call in calls:
        mine = sorted(by_call.get(call.key, []), key=lambda r: (r["start"], r["channel"]))
        turns = sorted((turn_of(r) for r in mine if r["status"] == "ok"),  # an empty text too: speech without words
                       key=lambda t: (t["start"], t["channel"]))
        decode_s = sum(r.get("decode_time") or 0.0 for r in mine)
        record: dict[str, Any] = {
            "call": call.key, "audio": call.audio if not call.sides else sorted(call.sides.values()),
            "status": "failed" if call.reason else "ok", "reason": call.reason,
            "channels": [s.name for s in call.streams], "duration": round(call.duration, 3),
            "segments": len(mine), "failed_segments": sum(r["status"] == "failed" for r in mine),
            "speech_s": round(call.speech_s, 3),
            "speech_ratio": round(call.speech_s / (call.duration * len(call.streams)), 4)
            if call.duration and call.streams else None,
            "vad_s": round(call.vad_s, 3), "decode_s": round(decode_s, 3),
            "rtf": round((call.vad_s + decode_s) / call.duration, 5) if call.duration and not call.reason else None,
            "turns": turns, **call.fields}
        if not call.reason and not mine:
            record["note"] = "no speech found"
        reference = _call_reference(call)
        if reference is not None and not call.reason:
            record["ref"] = reference
            record["hyp"] = _call_hypothesis(call, turns)
            scored.append(record)
        out.append(record)
    scores = None
    if scored:
        lang, numbers = score_conf.get("lang") or "auto", bool(score_conf.get("numbers"))
        scores = scoring.score_records([{"key": r["call"], "ref": r["ref"], "hyp": r["hyp"], "duration": r["duration"]}
                                        for r in scored], lang=lang, numbers=numbers)
        for record, utt in zip(scored, scores.utterances):
            record["errors"] = {scoring.RATE_NAMES[unit]: counts.to_dict() for unit, counts in utt.counts.items()}
    return out, scores


def turn_of(record: dict) -> dict:
    """A decoded segment as a turn of its call: its times are those of its first and last word
    where the CTC branch placed them (the VAD window pads speech on both sides), else the window's."""
    placed = [w for w in record.get("words") or [] if w.get("start") is not None and not w.get("interpolated")]
    start, end = (placed[0]["start"], max(w["end"] for w in placed)) if placed else (record["start"], record["end"])
    turn = {"channel": record["channel"], "start": start, "end": end, "text": record["hyp"]}
    if record.get("ctc_hyp") is not None:
        turn["ctc_text"] = record["ctc_hyp"]
    if record.get("words") is not None:
        turn["words"] = record["words"]
    return turn


def _by_stream(call: Call) -> bool:
    """Whether every reference segment names its channel (then scored channel by channel)."""
    return bool(call.references) and all(r.stream is not None for r in call.references)


def _call_reference(call: Call) -> str | None:
    if call.references:
        texts = [r for r in call.references if r.text is not None]
        if not texts:
            return None
        order = (lambda r: (r.stream, r.start)) if _by_stream(call) else (lambda r: r.start)
        return " ".join(r.text for r in sorted(texts, key=order))
    return call.ref


def _call_hypothesis(call: Call, turns: list[dict]) -> str:
    order = (lambda t: (t["channel"], t["start"])) if _by_stream(call) else (lambda t: t["start"])
    return " ".join(t["text"] for t in sorted(turns, key=order) if t["text"].strip())


def _reference_segments(calls: list[Call], records: list[dict]) -> list[dict]:
    """Each Kaldi reference segment with the text of the VAD segments that overlap it most."""
    out = []
    for call in calls:
        refs = [r for r in call.references if r.text is not None]
        if not refs or call.reason:
            continue
        assigned: dict[str, list[dict]] = {r.key: [] for r in refs}
        for record in records:
            if record["call"] != call.key or record["status"] == "failed":
                continue
            candidates = [r for r in refs if r.stream in (None, record["channel"])]
            overlap = {r.key: min(r.end, record["end"]) - max(r.start, record["start"]) for r in candidates}
            best = max(overlap, key=overlap.get, default=None)
            if best is not None and overlap[best] > 0:
                assigned[best].append(record)
        for ref in refs:
            hyp = " ".join(r["hyp"] for r in sorted(assigned[ref.key], key=lambda r: r["start"]) if r["hyp"])
            out.append({"key": ref.key, "ref": ref.text, "hyp": hyp, "duration": ref.end - ref.start})
    return out


def _metrics(calls: list[Call], records: list[dict], call_records: list[dict], scores: Any, score_conf: dict) -> dict:
    from nano8k import score as scoring

    decoded = [c for c in calls if c.reason is None]
    audio_s = sum(c.duration for c in decoded)
    channel_s = sum(c.duration * len(c.streams) for c in decoded)
    speech_s = sum(c.speech_s for c in decoded)
    vad_s = sum(c.vad_s for c in calls)
    decode_s = sum(r.get("decode_time") or 0.0 for r in records)
    metrics: dict[str, Any] = {
        "calls": len(calls), "decoded_calls": len(decoded), "failed_calls": len(calls) - len(decoded),
        "silent_calls": sum(1 for r in call_records if r.get("note") == "no speech found"),
        "segments": len(records), "failed_segments": sum(r["status"] == "failed" for r in records),
        "scored": sum("ref" in r for r in call_records),
        "audio_hours": audio_s / 3600, "channel_hours": channel_s / 3600, "speech_hours": speech_s / 3600,
        "speech_ratio": speech_s / channel_s if channel_s else None,
        "vad_s": round(vad_s, 3), "decode_s": round(decode_s, 3),
        "rtf": (vad_s + decode_s) / audio_s if audio_s else None,
        "vad_share": vad_s / (vad_s + decode_s) if vad_s + decode_s else None,
        "audio_hours_per_compute_hour": audio_s / (vad_s + decode_s) if vad_s + decode_s else None,
        "rtf_per_call": {r["call"]: r["rtf"] for r in call_records},
    }
    if scores is not None:
        metrics.update({k: v for k, v in scores.metrics().items() if k not in ("utterances", "audio_hours", "rtf")})
    lang, numbers = score_conf.get("lang") or "auto", bool(score_conf.get("numbers"))
    by_segment = _reference_segments(calls, records)
    if by_segment:
        m = scoring.score_records(by_segment, lang=lang, numbers=numbers).metrics()
        metrics["reference_segments"] = {k: m[k] for k in ("utterances", "primary", "cer", "wer", "mer", "ser", "counts")
                                         if k in m}
    return metrics


# --------------------------------------------------------------------------------------------
# Per-call files: .txt, .srt, .ctm
# --------------------------------------------------------------------------------------------


def write_call_files(folder: Path, call_records: list[dict]) -> None:
    from nano8k.files import write_lines_atomic

    folder.mkdir(parents=True, exist_ok=True)
    for record in call_records:
        if record["status"] != "ok":
            continue
        stem = folder / re.sub(r"[^\w.-]", "_", record["call"])
        turns = [t for t in record["turns"] if t["text"].strip()]
        write_lines_atomic(stem.with_suffix(".txt"),
                           [f"[{_clock(t['start'])} - {_clock(t['end'])}] {t['channel']}: {t['text']}" for t in turns])
        srt = []
        for number, t in enumerate(turns, 1):
            srt += [str(number), f"{_clock(t['start'], ',')} --> {_clock(t['end'], ',')}", f"{t['channel']}: {t['text']}", ""]
        write_lines_atomic(stem.with_suffix(".srt"), srt)
        write_lines_atomic(stem.with_suffix(".ctm"), _ctm(record["call"], turns))


def _ctm(call: str, turns: list[dict]) -> list[str]:
    """NIST CTM: each word at its own time (the CTC aligner's), with its confidence; a turn
    without word times (a model without a CTC branch) spreads its words evenly over its span
    (CJK text counts characters as words). Punctuation, which has no width, is not a CTM word."""
    lines = []
    for t in turns:
        placed = t.get("words")
        if placed and all(w.get("start") is not None for w in placed):
            lines += [f"{call} {t['channel']} {w['start']:.3f} {w['end'] - w['start']:.3f} {w['word']}"
                      + (f" {w['confidence']:.4f}" if w.get("confidence") is not None else "")
                      for w in placed if w["end"] > w["start"]]
            continue
        words = t["text"].split()
        if len(words) == 1 and re.search(r"[\u3040-\u30ff\u3400-\u9fff]", words[0]):
            words = list(words[0])
        step = (t["end"] - t["start"]) / max(len(words), 1)
        lines += [f"{call} {t['channel']} {t['start'] + i * step:.3f} {step:.3f} {word}" for i, word in enumerate(words)]
    return lines


def _clock(seconds: float, decimal: str = ".") -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{decimal}{rest % 1000:03d}"


def write_calls(path: Path, call_records: list[dict]) -> None:
    from nano8k.files import write_lines_atomic

    write_lines_atomic(path, [json.dumps(r, ensure_ascii=False) for r in call_records])
