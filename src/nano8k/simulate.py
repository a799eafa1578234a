"""Telephone-channel simulation: turn a clean corpus (any sample rate) into 8 kHz telephone speech.

`simulate_corpus(source, out_dir, settings, workers, seed, output_format)` reads what `nano8k data
prepare` reads (Kaldi directory with optional segments/utt2spk, source/target JSONL, CSV/TSV, folder;
through :mod:`nano8k.data`'s own readers) or a Nano JSONL, passes every utterance through the
telephone line (telephone_line.py: `simulate_utterance(samples, sample_rate, settings, seed)`, the pure
per-utterance function; `PRESETS`, the named settings; `resolve_settings`, a preset, a YAML file
and KEY=VALUE overrides) and writes ``out_dir/wav/<name>.wav`` plus a manifest in the input's
format (Kaldi, JSONL or Nano), a ``rejects.jsonl`` and a report.

Audio is written as 8 kHz G.711 WAV (one byte a sample: the exact codes) when the output is 8 kHz
mu-law/A-law, else as 16-bit PCM; what is written is exactly what `simulate_utterance` returns.

The line itself (its steps, SNR, randomness) is telephone_line.py's `simulate_utterance`; this module runs
it over a corpus in parallel and writes the result.

Every output line records what was applied in a `channel` object (Kaldi output: ``utt2channel``)::

    {"codec": "mulaw", "level_db": -26.0, "snr_db": 21.4, "hum_hz": 50.0, "hum_snr_db": 31.2,
     "loss_rate": 0.032, "noise_file": "cafe/03.wav", "noise_snr_db": 9.8, "out_rate": 8000}

(None for a step that was not applied; `loss_rate` is the fraction of frames actually lost.)

One bad input line or file never stops a run: it is reported (file, line, key, reason) in the
report and in ``rejects.jsonl``, and the rest is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nano8k import channel, data
from nano8k.data import Entry, Problem
from nano8k.data.problems import RejectCounts
from nano8k.data.sources import check_apart
from nano8k.errors import UserError, one_line
from nano8k.parallel import progress_bar
from nano8k.telephone_line import (CHANNEL_RATE, MIN_SECONDS, PRESETS, Rejected, SimulationSettings, noise_files, require_codec,
                         simulate_utterance, utterance_seed)

__all__ = [
    "SimulateReport",
    "simulate_corpus",
    "output_names",
]

# Reasons an utterance is not written (all have effect "reject"): simulate's own, and those of the
# corpus readers it shares with prepare (REASONS: what its summary prints beside each count).
SIMULATE_REASONS: dict[str, str] = {
    "malformed_line": "the line cannot be parsed (bad JSON, not an object, no messages, a field of the wrong type)",
    "duplicate_key": "the key was already used by an earlier line (the first one is kept)",
    "no_audio": "no audio (no wav.scp entry / no source field / no <|startofspeech|>!path in the user turn)",
    "no_text": "audio without a transcript",
    "multiple_audio": "a Nano line with more than one audio file (only single-audio lines are simulated)",
    "bad_key": "the key has whitespace, which a Kaldi output cannot hold",
    "missing_audio": "the audio file does not exist (or is a URL)",
    "unreadable_audio": "soundfile cannot read the audio",
    "nonfinite_audio": "NaN or infinite samples: no level, no SNR, and nothing FunASR can compute features from",
    "pipe_failed": "the wav.scp command failed or did not write readable audio",
    "audio_too_short": "shorter than one 25 ms window",
    "silent_audio": "the audio is digital silence: no speech level to set an SNR against",
    "codec_failed": "sox failed to encode or decode the utterance",
    "write_failed": "the output audio could not be written",
    "segment_out_of_range": "a Kaldi segment outside its recording (beyond data.SEGMENT_TOLERANCE)",
    "no_such_channel": "the channel the entry names is not in the file",
    "simulation_failed": "an unexpected error while simulating (a bug: please report it)",
}
REASONS = {**data.PREPARE_REASONS, **SIMULATE_REASONS}

def _wav_subtype(settings: SimulationSettings) -> str:
    """G.711 at 8 kHz is stored as G.711 (one byte a sample, the exact codes); the rest as PCM16."""
    if settings.out_rate == CHANNEL_RATE and settings.codec == "mulaw":
        return "ULAW"
    if settings.out_rate == CHANNEL_RATE and settings.codec == "alaw":
        return "ALAW"
    return "PCM_16"


# ---------------------------------------------------------------------------------------------
# Output names
# ---------------------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def output_names(keys: Iterable[str]) -> dict[str, str]:
    """key -> file name (`.wav`), distinct even on a case-insensitive file system.

    A key that is already a safe name (letters, digits, `._-`, not starting with `.` or `-`, at
    most 100 characters) and whose lower case no other name shares is used as is; any other key
    gets its sanitized form plus `-` and 12 hex digits of its sha256, so keys that sanitize alike
    ("a b", "a/b", "a_b" next to "A_B") still get different files."""
    keys = list(keys)
    stems = {k: (_UNSAFE.sub("_", k).lstrip(".-")[:100] or "utt") for k in keys}
    folded = Counter(s.casefold() for s in stems.values())
    names: dict[str, str] = {}
    for key, stem in stems.items():
        if stem == key and folded[stem.casefold()] == 1:
            names[key] = stem
        else:
            names[key] = f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    clash = Counter(n.casefold() for n in names.values())
    for key, name in names.items():  # a clean key equal to another's hashed name: full digests
        if clash[name.casefold()] > 1:
            names[key] = f"{stems[key]}-{hashlib.sha256(key.encode()).hexdigest()}"
    if len({n.casefold() for n in names.values()}) != len(names):  # pragma: no cover - sha256 collision
        raise RuntimeError("output names collide")
    return {k: n + ".wav" for k, n in names.items()}


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------


@dataclass
class SimulateReport(RejectCounts):
    source: Path
    out_dir: Path
    manifest: Path  # the manifest file (the directory for Kaldi output)
    rejects_file: Path
    input_format: str  # kaldi, jsonl, table, folder, nano
    output_format: str  # kaldi, jsonl, nano
    settings: SimulationSettings
    seed: int
    written: int = 0
    rejects: list = field(default_factory=list)  # nano8k.data.Problem
    seconds_in: float = 0.0
    seconds_out: float = 0.0
    applied: Counter = field(default_factory=Counter)  # step -> utterances it was applied to
    hint: str = ""  # every audio file missing: where relative paths were taken from

    @property
    def exit_code(self) -> int:
        """0 when every input line was written, 1 when any was rejected."""
        return 1 if self.rejects else 0

    def summary(self) -> str:
        s = self.settings
        lines = [f"{self.manifest}: {self.written} of {self.total} utterances simulated ({self.output_format}, "
                 f"codec {s.codec}, {s.out_rate} Hz, seed {self.seed}), {self.seconds_out / 3600:.2f} h of audio "
                 f"in {self.out_dir / 'wav'}"]
        if self.written:
            steps = ", ".join(f"{k} {self.applied[k]}" for k in ("noise", "line_noise", "hum", "packet_loss"))
            lines.append(f"applied to: {steps} (of {self.written}; per utterance in its 'channel' field)")
        lines += self.rejects_summary(REASONS, self.rejects_file)
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)


def simulate_corpus(
    source: Path,
    out_dir: Path,
    settings: SimulationSettings = PRESETS["clean_g711"],
    workers: int = 1,
    seed: int = 0,
    output_format: str | None = None,
    *,
    frontend_fs: int | None = None,
    allow_pipes: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    audio_root: Path | None = None,
    raw_rate: int | None = None,
) -> SimulateReport:
    """Simulate every utterance of `source` into `out_dir` (see the module docstring).

    `source`: anything `nano8k data prepare` reads (a Kaldi data directory with optional segments
    and utt2spk, a source/target JSONL, a CSV/TSV, a folder of audio + .txt), read by nano8k.data's
    own readers, or a Nano JSONL (single-audio lines). `output_format`: kaldi, jsonl, nano, csv,
    tsv or folder (default: the input's format). A Nano output needs a Nano input, whose
    text_length it keeps; for other inputs write kaldi or jsonl and run `nano8k data prepare`.

    Writes ``out_dir/wav/<name>.wav`` (names from `output_names`), the manifest (Kaldi: wav.scp,
    text, utt2channel, and utt2spk + spk2utt when speakers are known; JSONL/Nano:
    ``out_dir/<input name>.jsonl``, the input's fields with the new absolute path and a `channel`
    object; Nano: speech_length, duration and sample_rate recomputed for the new audio, counted at
    `frontend_fs`, default 16000), and ``out_dir/rejects.jsonl`` (always; empty when nothing was
    rejected). Lines keep the input's order. `out_dir` must be absent or empty unless `overwrite`.
    Multi-channel audio is averaged. Never raises for a bad line or file: see the report.
    """
    source, out_dir = Path(source), Path(out_dir)
    if workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    settings = settings.validate()
    require_codec(settings.codec)
    frontend_fs = data.DEFAULT_FRONTEND_FS if frontend_fs is None else int(frontend_fs)
    if frontend_fs <= 0:
        raise UserError(f"frontend_fs must be a positive sample rate, got {frontend_fs}")

    input_format, location, items, rejects = data.read_source(source, allow_pipes=allow_pipes, manifests=True,
                                                              audio_root=audio_root)
    table_format = "tsv" if location.suffix.lower() == ".tsv" else "csv"
    output_format = output_format or {"kaldi": "kaldi", "nano": "nano", "table": table_format,
                                      "folder": "folder"}.get(input_format, "jsonl")
    if output_format not in data.WRITE_FORMATS:
        raise UserError(f"output format must be one of {', '.join(data.WRITE_FORMATS)}, got {output_format!r}")
    if output_format == "nano" and input_format != "nano":
        raise UserError("a Nano manifest needs text_length from the model's tokenizer: write kaldi or jsonl output "
                        "and run `nano8k data prepare` on it")
    out_dir = out_dir.absolute()
    stem = Path(location.resolve().name).stem or "data"
    manifest = {"kaldi": out_dir, "folder": out_dir / "wav", "csv": out_dir / f"{stem}.csv",
                "tsv": out_dir / f"{stem}.tsv"}.get(output_format, out_dir / f"{stem}.jsonl")
    written_files = {out_dir / n for n in ("rejects.jsonl",)} | (
        {out_dir / n for n in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2channel")} if output_format == "kaldi"
        else {manifest})
    check_apart(written_files, location)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise UserError(f"{out_dir}: not empty; choose a new directory or allow overwriting (--overwrite)")
    noise: tuple[str, ...] = ()
    if settings.noise_dir is not None:  # absolute: `noise_file` is recorded relative to it
        settings = settings.replace(noise_dir=str(Path(settings.noise_dir).resolve()))
    if settings.noise_dir is not None and settings.noise_prob > 0:
        noise = noise_files(settings.noise_dir)
        if not noise:
            raise UserError(f"noise_dir {settings.noise_dir}: no readable audio files")

    if output_format == "kaldi":  # Kaldi files are whitespace-separated
        kept = []
        for item in items:
            if re.search(r"\s", item.key):
                rejects.append(_problem(item, "bad_key", f"whitespace in the key {item.key!r}"))
            else:
                kept.append(item)
        items = kept

    wav_dir = out_dir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    names = output_names(item.key for item in items)
    tasks = [(item.key, item.audio, item.pipe, item.segment, item.channel, str(wav_dir / names[item.key]), raw_rate)
             for item in items]
    results = _run_tasks(tasks, settings, int(seed), noise, workers, progress)

    report = SimulateReport(source=source, out_dir=out_dir, manifest=manifest, rejects_file=out_dir / "rejects.jsonl",
                            input_format=input_format, output_format=output_format, settings=settings, seed=int(seed))
    records: list[data.RewrittenAudio] = []
    for item, result in zip(items, results):
        if "reason" in result:
            rejects.append(_problem(item, result["reason"], result["detail"]))
            continue
        records.append(data.RewrittenAudio(item, result["path"], result["samples"], result["rate"], result["channel"]))
        report.seconds_in += result["seconds_in"]
        report.seconds_out += result["samples"] / result["rate"]
        applied = result["channel"]
        report.applied["noise"] += applied["noise_file"] is not None
        report.applied["line_noise"] += applied["snr_db"] is not None
        report.applied["hum"] += applied["hum_hz"] is not None
        report.applied["packet_loss"] += bool(applied["loss_rate"])

    data.write_corpus(output_format, out_dir, manifest, records, frontend_fs)
    report.written = len(records)
    report.rejects = sorted(rejects, key=lambda p: (p.file, p.line))
    report.hint = data.audio_root_hint(report.rejects, len(items), location, audio_root)
    data.write_rejects(report, report.rejects_file)
    return report


def _problem(item: Entry, reason: str, detail: str) -> Any:
    return Problem(item.file, item.line, item.key, reason, detail, input=item.raw)


# --- running ---------------------------------------------------------------------------------

_JOB: dict[str, Any] = {}


def _init_worker(settings: SimulationSettings, seed: int, noise: tuple[str, ...]) -> None:
    _JOB.update(settings=settings, seed=seed, noise=noise)


def _one(task: tuple) -> dict:
    """Read, simulate and write one utterance; a failure becomes {"reason", "detail"}."""
    key, audio, pipe, segment, channel_index, out_path, raw_rate = task
    settings: SimulationSettings = _JOB["settings"]
    try:
        samples, rate = _load(audio, pipe, segment, channel_index, raw_rate)
        if len(samples) < MIN_SECONDS * rate:
            raise Rejected("audio_too_short", f"{len(samples)} samples at {rate} Hz: {audio}")
        out, out_rate, params = simulate_utterance(samples, rate, settings, utterance_seed(_JOB["seed"], key),
                                                   noise=_JOB["noise"])
        _write_wav(out_path, out, out_rate, _wav_subtype(settings))
    except Rejected as err:
        return {"reason": err.reason, "detail": err.detail}
    except Exception as err:  # noqa: BLE001 -- one utterance never stops the run
        return {"reason": "simulation_failed", "detail": f"{audio}: {type(err).__name__}: {one_line(err)}"}
    return {"path": out_path, "samples": len(out), "rate": out_rate, "seconds_in": len(samples) / rate,
            "channel": params}


def _load(audio: str, pipe: bool, segment: tuple | None, channel_index: int | None,
          raw_rate: int | None = None) -> tuple[np.ndarray, int]:
    """(frames x channels float32, rate) of a file, a pipe's output, a segment, or one channel,
    through data.audio, the loader prepare and decode use (never NaN: non-finite audio is refused)."""
    from nano8k.data import audio as audio_files

    try:
        if pipe:
            source: Any = audio_files.run_pipe(audio)
            label, unreadable = f"'{audio}'", "pipe_failed"
        else:
            if audio_files.is_url(audio):
                raise Rejected("missing_audio", f"{audio}: URLs are not supported; download the audio first")
            what = audio_files.not_a_file(audio)
            if what is not None:
                raise Rejected("missing_audio", f"{audio} {what}")
            source, label, unreadable = audio, audio, "unreadable_audio"
        start, stop = 0, None
        if segment is not None:
            total, rate, _, _ = audio_files.header_of(source, raw_rate)
            start, stop = audio_files.segment_samples(segment, total, rate, label, label)
        return audio_files.load(source, raw_rate, start=start, stop=stop, channel=channel_index)
    except audio_files.AudioProblem as err:
        reason = unreadable if pipe and err.reason in ("unreadable_audio", "corrupt_audio") else err.reason
        raise Rejected(reason, err.detail) from None


def _write_wav(path: str, samples: np.ndarray, rate: int, subtype: str) -> None:
    import soundfile as sf

    try:
        with data.atomic_path(Path(path)) as tmp:
            sf.write(tmp, channel.float_to_pcm16(samples), rate, subtype=subtype, format="WAV")
    except Exception as err:  # noqa: BLE001
        raise Rejected("write_failed", f"{path}: {one_line(err)}") from None


def _run_tasks(tasks: list, settings: SimulationSettings, seed: int, noise: tuple[str, ...], workers: int,
               progress: bool) -> list[dict]:
    """_one over the tasks, results in input order: in-process for one worker, else a process pool
    (forkserver, which imports this module once: workers are never forks of a possibly threaded
    caller); a rich progress bar on stderr."""
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(tasks) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            if "forkserver" in multiprocessing.get_all_start_methods():
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(["nano8k.simulate", "nano8k.telephone_line", "nano8k.data", "soundfile"])  # imported once
            else:
                context = multiprocessing.get_context("spawn")
            pool = stack.enter_context(ProcessPoolExecutor(
                max_workers=min(workers, len(tasks)), mp_context=context,
                initializer=_init_worker, initargs=(settings, seed, noise)))
            results: Iterable[dict] = pool.map(_one, tasks, chunksize=max(1, min(32, len(tasks) // (workers * 8))))
        else:
            _init_worker(settings, seed, noise)
            results = map(_one, tasks)
        if not progress or len(tasks) < 2:
            return list(results)
        advance = stack.enter_context(progress_bar("simulating", len(tasks)))
        out = []
        for result in results:
            out.append(result)
            advance(1)
        return out
