"""The `nano8k decode` Hydra app: batched decoding with Fun-ASR-Nano, results.jsonl and metrics.json.

The decoding itself (input, model, prompt, batches, metrics) is nano8k.decoding; this module is the
app around it. Outputs, in the run directory: config.yaml (the validated decode config),
decode.log, status.json, results.jsonl (input order; key, audio, ref, hyp, ctc_hyp, errors,
duration, decode_time, status, reason, then the manifest's fields) and metrics.json (`score.py`'s
corpus metrics of the decoded utterances with a reference, plus counts, audio hours and RTF).
With `vad=silero` a file is a whole call (nano8k.calls): results.jsonl holds its speech segments,
calls.jsonl and calls/ its transcripts per call and channel.
Exit status: 0 all decoded, 1 some utterances (calls, segments) failed, 2 a usage error (one line).
"""

from __future__ import annotations


import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hydra
import yaml
from omegaconf import DictConfig

from nano8k import calls, config, interrupts, launch, rundir
from nano8k.calls import CALLS_DIR, CALLS_FILE
from nano8k.decoding import (METRICS_FILE, RESULTS_FILE, Decoder, ResultsJournal, compute_metrics, prompt_options,
                             read_input, write_results)
from nano8k.errors import UserError
from nano8k.files import atomic_path, read_yaml, write_json_atomic

log = logging.getLogger(__name__)
launch.register_resolvers()

EXIT_SOME_FAILED = 1


# --------------------------------------------------------------------------------------------
# The Hydra app
# --------------------------------------------------------------------------------------------


def run(cfg: DictConfig) -> float | None:
    """Decode one job; returns the primary error rate (for sweepers) or None.

    Every job leaves status.json. A single run exits 1 when some utterances failed and 2 on a usage
    error; in a sweep a failed job is logged and recorded and the others go on.
    """
    outcome = launch.run_tracked(lambda run_dir, _: _run(cfg, run_dir), record=lambda o: o.summary(),
                                 undone="nothing was decoded")
    if outcome is None:  # a failed job of a sweep (recorded in status.json)
        return None
    if outcome.failed and not launch.in_sweep():
        raise SystemExit(EXIT_SOME_FAILED)
    primary = outcome.metrics.get("primary")
    return outcome.metrics.get(primary) if primary else None


def _run(cfg: DictConfig, run_dir: Path) -> Outcome:
    settings = config.validate(cfg, app="decode")
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.check_decode_dir(run_dir)  # again, for a run directory a config file set (the CLI checked a literal one)
    lock = rundir.RunLock(run_dir).acquire()  # one writer per directory (a second decode is refused)
    try:
        check_rerun(settings, run_dir)
        with atomic_path(run_dir / "config.yaml") as tmp:
            Path(tmp).write_text(yaml.safe_dump(settings, sort_keys=False, allow_unicode=True), encoding="utf-8")
        outcome = decode(settings, run_dir, stop_at_signals=True)
    finally:
        lock.release()
    from rich.console import Console

    Console().print(*outcome.tables(), sep="\n")
    print(f"results: {run_dir / RESULTS_FILE}\nmetrics: {run_dir / METRICS_FILE}")
    if outcome.calls is not None:
        print(f"calls: {run_dir / CALLS_FILE} (transcripts in {run_dir / CALLS_DIR})")
    if outcome.failed:
        print(f"error: {outcome.failure_line()}", file=sys.stderr)
    return outcome


main = hydra.main(config_path="pkg://nano8k.conf", config_name="decode", version_base="1.3")(run)

# Settings a rerun in the same directory may change: the results do not depend on them.
RERUN_MAY_CHANGE = ("batch_size", "device")


def check_rerun(settings: dict, run_dir: Path) -> None:
    """A directory holding results decodes on only with the settings that made them (the same
    command resumes an interrupted decode); other settings would mix two decodes in one file."""
    previous = run_dir / "config.yaml"
    if not (run_dir / RESULTS_FILE).exists() or not previous.is_file():
        return
    old, new = (config.flatten(c) for c in (read_yaml(previous, "decode config"), settings))
    changed = sorted(k for k in set(old) | set(new)
                     if old.get(k) != new.get(k) and not k.startswith(RERUN_MAY_CHANGE))
    if changed:
        shown = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
        raise UserError(f"{run_dir}: holds the results of a decode with other settings ({shown}); rerun it as it was "
                        "to finish it, or decode into a new directory")


# --------------------------------------------------------------------------------------------
# Decoding, as a library call
# --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    records: list[dict]
    metrics: dict
    scores: Any = None  # score.Scores of the decoded utterances (whole calls: calls) with a reference, or None
    run_dir: Path | None = None
    calls: list[dict] | None = None  # whole calls (vad): a record per call

    @property
    def failed(self) -> int:
        """Failed utterances; with whole calls, failed calls and failed segments of the others."""
        if self.calls is not None:
            return sum(c["status"] == "failed" for c in self.calls) + sum(c["failed_segments"] for c in self.calls)
        return sum(r["status"] == "failed" for r in self.records)

    def failure_line(self) -> str:
        if self.calls is not None:
            calls = [c for c in self.calls if c["status"] == "failed"]
            segments = sum(c["failed_segments"] for c in self.calls)
            parts = [f"{len(calls)} of {len(self.calls)} calls failed"] if calls else []
            parts += [f"{segments} of {len(self.records)} segments failed"] if segments else []
            example = (f"{calls[0]['call']}: {calls[0]['reason']}" if calls else
                       next(f"{r['key']}: {r['reason']}" for r in self.records if r["status"] == "failed"))
            return f"{', '.join(parts)} (status \"failed\" in {CALLS_FILE} and {RESULTS_FILE}), e.g. {example}"
        reasons = sorted({r["reason"] for r in self.records if r["status"] == "failed"})
        return (f"{self.failed} of {len(self.records)} utterances failed (status \"failed\" in {RESULTS_FILE}), "
                f"e.g. {reasons[0]}")

    def summary(self) -> dict:
        keys = ("utterances", "decoded", "failed", "calls", "decoded_calls", "failed_calls", "segments", "primary",
                "cer", "wer", "mer", "ser", "audio_hours", "rtf")
        return {k: self.metrics[k] for k in keys if k in self.metrics}

    def tables(self) -> list[Any]:
        from rich.table import Table

        from nano8k import score as scoring

        m = self.metrics
        table = Table(title="decoding", title_justify="left", show_header=False)
        table.add_column("", justify="left")
        table.add_column("", justify="right")
        if self.calls is not None:
            rows = [("calls", m["calls"]), ("decoded", m["decoded_calls"]), ("failed", m["failed_calls"]),
                    ("no speech found", m["silent_calls"]), ("segments", m["segments"]),
                    ("failed segments", m["failed_segments"]), ("with reference", m["scored"]),
                    ("audio", f"{m['audio_hours'] * 3600:.1f} s"),
                    ("speech", "n/a" if m["speech_ratio"] is None else f"{100 * m['speech_ratio']:.1f}% of channel time"),
                    ("VAD time", f"{m['vad_s']:.2f} s"), ("decode time", f"{m['decode_s']:.2f} s"),
                    ("RTF (VAD + decoding)", f"{m['rtf']:.4f}" if m.get("rtf") is not None else "n/a"),
                    ("model load", f"{m['load_s']:.1f} s"), ("device / dtype", f"{m['device']} / {m['llm_dtype']}"),
                    ("strategy", m["strategy"])]
            for name, value in rows:
                table.add_row(name, str(value))
            return [table] + (scoring.score_tables(self.scores) if self.scores is not None else [])
        rows = [("utterances", m["utterances"]), ("decoded", m["decoded"]), ("failed", m["failed"]),
                ("with reference", m["scored"]), ("audio", f"{m['audio_hours'] * 3600:.1f} s"),
                ("decode time", f"{m['decode_s']:.2f} s"),
                ("RTF", f"{m['rtf']:.4f}" if m.get("rtf") is not None else "n/a"),
                ("utterances/s", f"{m['utterances_per_s']:.2f}" if m.get("utterances_per_s") else "n/a"),
                ("model load", f"{m['load_s']:.1f} s"), ("device / dtype", f"{m['device']} / {m['llm_dtype']}"),
                ("batch size", m["batch_size"]), ("front end", f"{m['frontend_fs']} Hz"), ("strategy", m["strategy"])]
        if "ctc" in m:
            rate = m["ctc"][m["ctc"]["primary"]]
            rows.append((f"CTC {m['ctc']['primary'].upper()}", "n/a" if rate is None else f"{100 * rate:.2f}%"))
        if m.get("word_confidence"):  # what a word's confidence is: a calibrated probability or a raw measure
            rows.append(("word confidence", m["word_confidence"]))
        for name, value in rows:
            table.add_row(name, str(value))
        out: list[Any] = [table]
        if self.scores is not None:
            out += scoring.score_tables(self.scores)
        return out


def decode(settings: dict, run_dir: Path, progress: bool = True, decoder: Decoder | None = None,
           stop_at_signals: bool = False) -> Outcome:
    """Decode `settings["input"]` with the model of `settings` (a validated decode config); write
    results.jsonl and metrics.json to run_dir; return the records and metrics. A `decoder` built
    before (Decoder(settings)) is reused as it is: its model and prompt win over `settings`.

    results.jsonl grows as batches finish (decoding.ResultsJournal), and a decode finds there
    what an earlier, unfinished one of the same input decoded and decodes only the rest.
    stop_at_signals (the app): once the model is loaded, SIGTERM/SIGINT stop after the current
    batch (interrupts.Interrupted: status.json says how far it got; exit 143/130)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    calls.check(settings)
    items, kind = read_input(settings.get("input"), settings.get("audio_root"), settings.get("raw_rate"))
    log.info("input: %s (%s), %d utterances", settings.get("input"), kind, len(items))
    prompt_settings = prompt_options(settings)
    batch_size = int(config.own_setting(settings, "batch_size", "decode"))
    if batch_size < 1:
        raise UserError(f"batch_size={batch_size}: must be at least 1")
    whole_calls = calls.prepare(items, settings) if settings.get("vad") else None  # refusals before the model loads
    if whole_calls is None:
        choice = calls.channel_choice(settings, calls.channel_names(settings))
        for item in items:
            item.channel = choice if isinstance(choice, int) else item.channel
    started = time.perf_counter()
    decoder = decoder or Decoder(settings, prompt_settings)
    load_s = time.perf_counter() - started
    if settings.get("calibrate") and not decoder.has_ctc:  # before anything is decoded
        raise UserError("calibrate: the model has no CTC branch, so its words have no confidence to calibrate")
    log.info("model: %s; weights: %s; config: %s; prompt: %r", decoder.model_dir, ", then ".join(decoder.loaded_from),
             decoder.config_source, decoder.prompt)
    if decoder.filtering:
        log.info("hotwords: %d listed; each utterance's prompt gets those its CTC posteriors support (score >= %g, "
                 "at most %d: records' `hotwords`)", len(prompt_settings["hotwords"]), decoder.hotword_filter.threshold,
                 decoder.hotword_filter.max_kept)
    if stop_at_signals:
        interrupts.defer()  # from here a signal stops after the batch in flight, its results kept

    def decode_items(todo: list, what: str) -> list[dict]:
        """The items' records through results.jsonl (ResultsJournal): those an earlier, unfinished
        decode wrote are taken from it, the rest appended batch by batch."""
        journal = ResultsJournal(run_dir / RESULTS_FILE, todo)
        if journal.done:
            log.info("resuming: %d of %d %s were decoded before (%s); decoding the other %d", len(journal.done),
                     len(todo), what, run_dir / RESULTS_FILE, len(todo) - len(journal.done))

        def on_batch(batch: list[dict]) -> None:
            journal.append(batch)
            signum = interrupts.pending() if stop_at_signals else None
            if signum is not None:
                decoded = len(journal.done) + journal.appended
                raise interrupts.Interrupted(signum, f"interrupted by {interrupts.signal_name(signum)} after {decoded} of "
                                                     f"{len(todo)} {what}, kept in {run_dir / RESULTS_FILE}; rerun "
                                                     "the same command to decode the rest",
                                             {"decoded": decoded, what.replace(" ", "_"): len(todo)})

        try:
            return decoder.decode(todo, batch_size, progress=progress, done=journal.done, on_batch=on_batch)
        finally:
            journal.close()

    call_records = None
    if whole_calls is not None:
        records, call_records, metrics, scores = calls.decode_calls(
            whole_calls, settings, run_dir, lambda segments: decode_items(segments, "segments"), progress)
    else:
        records = decode_items(items, "utterances")
        score_conf = settings.get("score") or {}
        scores, metrics = compute_metrics(records, lang=score_conf.get("lang") or "auto",
                                          numbers=bool(score_conf.get("numbers")))
    decoding_settings = {"joint": {"joint": {**asdict(decoder.joint),
                                             "ctc_accepted": sum("ctc_accepted" in r for r in records)}},
                         "speculative": {"speculative": decoder.acceptance.report()}}.get(decoder.strategy, {})
    if decoder.filtering:  # how many hotwords the prompts got
        kept = [len(r["hotwords"]) for r in records if "hotwords" in r]
        decoding_settings["hotword_filter"] = {**asdict(decoder.hotword_filter), "listed": len(prompt_settings["hotwords"]),
                                               "utterances": len(kept), "kept_mean": sum(kept) / len(kept) if kept else 0.0}
    metrics.update(strategy=decoder.strategy, **decoding_settings,
                   load_s=round(load_s, 3), batch_size=batch_size, device=decoder.device, llm_dtype=decoder.dtype_name,
                   frontend_fs=decoder.frontend.fs, max_new_tokens=decoder.max_new_tokens, prompt=decoder.prompt,
                   model_dir=str(decoder.model_dir), checkpoint=decoder.checkpoint, config=decoder.config_source,
                   input=str(settings.get("input")), input_kind=kind)
    if decoder.timestamps:
        metrics["word_confidence"] = (f"calibrated ({settings['calibration']})" if decoder.calibration is not None
                                      else "uncalibrated (decode a dev set with calibrate=true to fit it)")
    if settings.get("calibrate"):
        metrics["calibration"] = fit_calibration(scores, decoder, run_dir, settings)
    write_results(run_dir / RESULTS_FILE, records)
    write_json_atomic(run_dir / METRICS_FILE, metrics)
    return Outcome(records, metrics, scores, run_dir, call_records)


def fit_calibration(scores: Any, decoder: Decoder, run_dir: Path, settings: dict) -> dict:
    """calibrate=true: fit the confidence calibration on this decode's words and references, write
    it to run_dir/calibration.json (decode with calibration=THAT FILE), and report how well the
    calibrated confidence does on the words it was fitted on."""
    from nano8k.decoding import confidence

    outcomes = scores.word_outcomes() if scores is not None else []
    usable = [(w["measures"], right) for w, right in outcomes if w.get("measures")]
    calibration = confidence.Calibration.fit([m for m, _ in usable], [r for _, r in usable],
                                             confidence.model_digest(decoder.model), checkpoint=decoder.checkpoint,
                                             input=str(settings.get("input")))
    path = run_dir / confidence.CALIBRATION_FILE
    calibration.save(path)
    from nano8k import score as scoring

    fitted = [calibration(m) for m, _ in usable]
    right = [r for _, r in usable]
    log.info("confidence calibration: %s (fitted on %d words)", path, len(usable))
    return {"file": str(path), "words": len(usable), "auc": scoring.auc(fitted, right),
            "ece": scoring.calibration_error(fitted, right)}
