"""`nano8k data prepare`: a source (see `sources`) -> the Nano JSONL FunASR trains on (see `manifest`).

Output lines follow the input's order (wav.scp or segments order for Kaldi, sorted relative paths
for a folder) whatever the number of workers. Sample rates are recorded, never changed: FunASR's
loader resamples every file to the front end's rate.

* Audio that is not a whole file FunASR's loader reads (a Kaldi segment, one channel of a stereo
  file, a pipe's output, a headerless telephony file) is written as a WAV file under
  ``<output stem>.audio/``, named after the key (sanitized, plus 8 hex digits of its SHA-1: keys are
  unique, so names cannot collide), in the source's own sample format when WAV holds it
  losslessly (PCM 8-32 bit, float, mu-law, A-law), else PCM 16. Segment bounds are rounded to the
  nearest sample; an end past the recording by at most ``segment_tolerance`` (Kaldi's
  extract-segments --max-overshoot, 0.5 s) is cut at the recording's end, further is a reject.
* A transcript whose token count provably exceeds ``max_target_length`` (its UTF-8 bytes over the
  tokenizer's longest token) is rejected before it is tokenized.

Every input line that cannot become a manifest line is reported with file, line, key and reason
and written, with the input line (cut to a bound), to ``rejects_path(output)``; the good lines are
written all the same (one bad file never stops a run).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from nano8k.data.audio import (
    LOSSLESS_WAV_SUBTYPES,
    Audio,
    AudioProblem,
    audio_name,
    header_of,
    load,
    SEGMENT_TOLERANCE,
    segment_samples,
    nonfinite_samples,
    open_audio,
    probe,
    run_pipe,
    write_wav_atomic,
)
from nano8k.data.manifest import (
    DEFAULT_FRONTEND_FS,
    DEFAULT_SYSTEM,
    count_tokens,
    decoding_prompt,
    fbank_frames,
    load_tokenizer,
    longest_token_bytes,
    record,
)
from nano8k.data.problems import (
    PrepareReport,
    Problem,
    rejects_path,
    sibling_path,
    write_rejects,
)
from nano8k.data.sources import (
    CHANNEL_SUFFIXES,
    Entry,
    audio_root_hint,
    channel_mode,
    check_apart,
    read_source,
)
from nano8k.data.text import has_words
from nano8k.errors import UserError, one_line
from nano8k.files import write_jsonl_atomic
from nano8k.parallel import map_ordered

MAX_TARGET_LENGTH = 2048  # FunASR's index default (datasets.py:405): longer transcripts are dropped



def prepare(
    source: Path,
    output: Path,
    tokenizer_dir: Path,
    prompt: str | None = None,
    system: str = DEFAULT_SYSTEM,
    workers: int = 1,
    allow_pipes: bool = False,
    frontend_fs: int | None = DEFAULT_FRONTEND_FS,
    *,
    language: str | None = None,
    itn: bool = True,
    channel: str | int = "mix",
    source_format: str | None = None,
    audio_column: str | None = None,
    text_column: str | None = None,
    key_column: str | None = None,
    audio_root: Path | None = None,
    segment_tolerance: float = SEGMENT_TOLERANCE,
    raw_rate: int | None = None,
    max_target_length: int | None = MAX_TARGET_LENGTH,
) -> PrepareReport:
    """Write the Nano JSONL manifest for a Kaldi data directory, a source/target JSONL, a CSV/TSV
    file or a folder of audio files with .txt transcripts (see the module docstring).

    Lines come out in input order whatever `workers` is. Rejected lines go to the report and, with
    the input line, to `rejects_path(output)` (always written, empty when nothing was rejected);
    everything else is written: no single input line or audio file stops the run. Relative audio
    paths are taken from `audio_root`, by default the input's own directory (sources.read_source);
    written paths are absolute. Pipe entries (`cmd |`) in wav.scp are refused unless
    `allow_pipes`. `prompt` defaults to decoding's (`decoding_prompt(language, itn)`); give
    `prompt` or `language`, not both. `channel` is "mix", "A"/0, "B"/1 or "split". `source_format`
    (kaldi, jsonl, csv, tsv, folder) overrides the detection by name. `frontend_fs` is the front
    end's rate (frontend_conf.fs) that speech_length is counted at. `raw_rate` is the sample rate
    of `.raw` files (headerless 16-bit PCM). A transcript over `max_target_length` tokens (FunASR's
    index would drop it) is a reject; None: no limit. The source's other fields (speaker,
    simulate's channel parameters) are carried into the manifest.
    """
    source, output = Path(source), Path(output)
    if workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    if frontend_fs is not None and int(frontend_fs) <= 0:
        raise UserError(f"frontend_fs must be a positive sample rate, got {frontend_fs}")
    if not segment_tolerance >= 0:
        raise UserError(f"segment_tolerance must be >= 0 seconds, got {segment_tolerance}")
    if max_target_length is not None and int(max_target_length) < 1:
        raise UserError(f"max_target_length must be at least 1, got {max_target_length}")
    mode = channel_mode(channel)
    if prompt is not None and (language is not None or not itn):
        raise UserError("give a literal prompt or a language (and itn), not both: the prompt is then decoding's")
    if prompt is None:
        prompt = decoding_prompt(language, itn)
    if output.is_dir():
        raise UserError(f"{output}: is a directory; give the manifest's file name (e.g. {output / 'train.jsonl'})")
    audio_dir = sibling_path(output, ".audio")
    fmt, location, entries, rejects = read_source(
        source, mode=mode, allow_pipes=allow_pipes, source_format=source_format, audio_column=audio_column,
        text_column=text_column, key_column=key_column, exclude=audio_dir, audio_root=audio_root)
    check_apart([output, rejects_path(output)], location, entries)
    tokenizer = load_tokenizer(tokenizer_dir)
    entries = _within_target_length(entries, tokenizer, max_target_length, rejects)

    groups = _group_by_audio(entries)

    def work(indices: list[int]) -> list[Audio]:
        return _process_group([entries[i] for i in indices], audio_dir, segment_tolerance, frontend_fs, raw_rate)

    audios: list[Audio] = [Audio()] * len(entries)
    for indices, results in zip(groups, map_ordered(work, groups, workers, "reading audio")):
        for i, audio in zip(indices, results):
            audios[i] = audio
    lengths = count_tokens(tokenizer, [e.text or "" for e in entries])

    report = PrepareReport(source=source, output=output, rejects_file=rejects_path(output), format=fmt,
                           frontend_fs=frontend_fs, audio_dir=audio_dir)
    records = []
    rates: Counter = Counter()
    for entry, audio, text_length in zip(entries, audios, lengths):
        problem = audio.problem
        if problem is None:
            speech_length = fbank_frames(audio.frames, audio.sample_rate, frontend_fs)
            if speech_length < 1:
                problem = ("audio_too_short", f"{audio.frames} samples at {audio.sample_rate} Hz, {audio.path}")
            elif max_target_length is not None and text_length > max_target_length:
                problem = ("text_too_long", f"{text_length} tokens > max_target_length {max_target_length} (FunASR's "
                                            "index would drop the line)")
        if problem is not None:
            rejects.append(Problem(entry.file, entry.line, entry.key, problem[0], problem[1], input=entry.raw))
            continue
        duration = audio.frames / audio.sample_rate
        fields = dict(entry.fields)
        if entry.speaker is not None:
            fields["speaker"] = entry.speaker
        records.append(record(entry.key, str(audio.path), entry.text or "", prompt=prompt, system=system,
                              speech_length=speech_length, text_length=text_length, duration=duration,
                              sample_rate=audio.sample_rate, fields=fields))
        report.total_duration += duration
        if entry.text and not has_words(entry.text):
            report.no_words.append(entry.key)
        elif not entry.text:
            report.non_speech.append(entry.key)
        rates[audio.sample_rate] += 1
        report.multichannel += audio.channels > 1
        report.materialized += audio.materialized

    output.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(output, records)
    report.written = len(records)
    report.rejects = sorted(rejects, key=lambda p: (p.file, p.line))
    report.sample_rates = dict(sorted(rates.items()))
    report.hint = audio_root_hint(report.rejects, len(entries), location, audio_root)
    write_rejects(report, report.rejects_file)
    return report


def _within_target_length(entries: list[Entry], tokenizer: Any, max_target_length: int | None,
                          rejects: list[Problem]) -> list[Entry]:
    """The entries whose transcript may fit max_target_length: one whose UTF-8 bytes exceed
    max_target_length x the longest token's bytes has more tokens than that whatever they are, and
    is rejected without tokenizing it (a 10 MB transcript would take half a minute and gigabytes)."""
    if max_target_length is None:
        return entries
    limit = longest_token_bytes(tokenizer) * int(max_target_length)
    kept = []
    for entry in entries:
        size = len((entry.text or "").encode("utf-8", "surrogateescape"))
        if size > limit:
            rejects.append(Problem(entry.file, entry.line, entry.key, "text_too_long",
                                   f"{size} bytes: more than max_target_length {max_target_length} tokens whatever "
                                   "the tokenizer makes of them (not tokenized)", input=entry.raw))
        else:
            kept.append(entry)
    return kept


def _group_by_audio(entries: list[Entry]) -> list[list[int]]:
    """Entry indices per audio source (a file or a pipe command), sources in order of first use:
    a recording is opened (a pipe run) once for all its segments and channels."""
    groups: dict[tuple[bool, str], list[int]] = {}
    for i, entry in enumerate(entries):
        groups.setdefault((entry.pipe, entry.audio or ""), []).append(i)
    return list(groups.values())


def _process_group(
    group: list[Entry], audio_dir: Path, tolerance: float, frontend_fs: int | None, raw_rate: int | None,
) -> list[Audio]:
    """The audio of every entry of one source: its header, and for cuts, channel picks, pipes and
    files FunASR's loader cannot read the samples, written under `audio_dir`. Never raises: a
    failure is each entry's problem."""
    first = group[0]
    label = f"'{first.audio}'" if first.pipe else str(first.audio)
    try:
        if first.pipe:
            try:
                output = run_pipe(first.audio or "")
                frames, rate, channels, subtype = header_of(output)
            except AudioProblem as err:
                reason = err.reason if err.reason == "pipe_failed" else "pipe_failed"
                detail = err.detail if err.reason == "pipe_failed" else f"{label} did not write readable audio: {err.detail}"
                return [Audio(problem=(reason, detail))] * len(group)
            header = Audio(path=None, frames=frames, sample_rate=rate, channels=channels, subtype=subtype)
            source: bytes | str = output
        else:
            header = probe(first.audio or "", raw_rate=raw_rate)
            if header.problem is not None:
                return [header] * len(group)
            source = label = str(header.path)
        return [_entry_audio(entry, header, source, raw_rate, label, audio_dir, tolerance, frontend_fs)
                for entry in group]
    except Exception as err:  # noqa: BLE001 -- one bad file never stops the run
        reason = "pipe_failed" if first.pipe else "unreadable_audio"
        return [Audio(problem=(reason, f"{label}: {type(err).__name__}: {one_line(err)}"))] * len(group)


def _entry_audio(
    entry: Entry, header: Audio, source: bytes | str, raw_rate: int | None, label: str, audio_dir: Path,
    tolerance: float, frontend_fs: int | None,
) -> Audio:
    import soundfile as sf

    def reject(reason: str, detail: str) -> Audio:
        return Audio(path=header.path, problem=(reason, detail))

    rate, total = header.sample_rate, header.frames
    if entry.channel is not None and entry.channel >= header.channels:
        return reject("no_such_channel", f"channel {CHANNEL_SUFFIXES[entry.channel]} of a {header.channels}-channel "
                                         f"file: {label}")
    if entry.mono_only and header.channels > 1:
        return reject("split_needs_channel_text",
                      f"{header.channels}-channel audio with one transcript, {entry.key}; channel=split needs "
                      f"{entry.key}-A and {entry.key}-B: {label}")
    pick = entry.channel is not None and header.channels > 1
    if not (entry.pipe or entry.segment or pick or header.headerless):
        try:
            bad = nonfinite_samples(lambda: open_audio(source, raw_rate), header.subtype)
        except Exception as err:  # noqa: BLE001 -- soundfile raises several types
            return reject("corrupt_audio", f"{label}: {one_line(err)}")
        return reject("nonfinite_audio", f"{bad} samples are NaN or infinite: {label}") if bad else header
    start, stop = 0, total
    if entry.segment is not None:
        try:
            start, stop = segment_samples(entry.segment, total, rate, entry.recording, label, tolerance)
        except AudioProblem as err:
            return reject(err.reason, err.detail)
    count = stop - start
    if fbank_frames(count, rate, frontend_fs) < 1:
        return reject("audio_too_short", f"{count} samples at {rate} Hz, {label}")
    dtype = LOSSLESS_WAV_SUBTYPES.get(header.subtype, "float32")
    subtype = header.subtype if header.subtype in LOSSLESS_WAV_SUBTYPES and sf.check_format("WAV", header.subtype) else "PCM_16"
    try:
        samples, _ = load(source, raw_rate, start, stop, entry.channel if pick else None, dtype, label=label)
    except AudioProblem as err:
        return reject("pipe_failed" if entry.pipe and err.reason == "corrupt_audio" else err.reason, err.detail)
    target = (audio_dir / audio_name(entry.key)).absolute()
    try:
        write_wav_atomic(target, samples, rate, subtype)
    except Exception as err:  # noqa: BLE001
        return reject("write_failed", f"{target}: {one_line(err)}")
    return Audio(path=str(target), frames=len(samples), sample_rate=rate, channels=samples.shape[1],
                 subtype=subtype, materialized=True)
