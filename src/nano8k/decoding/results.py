"""What a decode leaves: results.jsonl (appended batch by batch while it runs, then rewritten in
input order) and the corpus metrics of its records."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nano8k.decoding.decoder import Item
from nano8k.errors import UserError
from nano8k.files import atomic_path, json_safe

RESULTS_FILE = "results.jsonl"
METRICS_FILE = "metrics.json"

def compute_metrics(records: list[dict], lang: str = "auto", numbers: bool = False) -> tuple[Any, dict]:
    """score.py's corpus metrics of the decoded utterances with a reference (per-utterance error
    counts go into the records' `errors`), plus counts, audio hours, decode time, RTF and, where
    there are CTC hypotheses, the CTC branch's rates under `ctc`. Returns (Scores or None, metrics)."""
    from nano8k import score as scoring

    decoded = [r for r in records if r["status"] != "failed"]
    scored = [r for r in decoded if r.get("ref") is not None]
    scores = None
    metrics: dict[str, Any] = {"utterances": len(records), "decoded": len(decoded),
                               "failed": len(records) - len(decoded), "scored": len(scored),
                               "no_speech": sum(r["status"] == "no speech" for r in records),
                               "repetition_cut": sum(r.get("cut") == "repetition" for r in records)}
    if scored:
        scores = scoring.score_records(scored, lang=lang, numbers=numbers)
        scores.failed = [r["key"] for r in records if r["status"] == "failed"]  # as `nano8k score` counts them
        for record, utt in zip(scored, scores.utterances):
            record["errors"] = {scoring.RATE_NAMES[unit]: counts.to_dict() for unit, counts in utt.counts.items()}
        metrics.update({k: v for k, v in scores.metrics().items() if k not in ("utterances", "audio_hours", "rtf")})
    audio_s = sum(r["duration"] or 0.0 for r in decoded)
    decode_s = sum(r["decode_time"] or 0.0 for r in decoded)
    metrics.update(audio_hours=audio_s / 3600, decode_s=round(decode_s, 4),
                   rtf=decode_s / audio_s if audio_s > 0 else None,
                   utterances_per_s=len(decoded) / decode_s if decode_s > 0 else None)
    with_ctc = [r for r in scored if r.get("ctc_hyp") is not None]
    if with_ctc and scores is not None:
        ctc = scoring.score_records([{**r, "hyp": r["ctc_hyp"]} for r in with_ctc], lang=scores.lang, numbers=numbers)
        m = ctc.metrics()
        metrics["ctc"] = {k: m[k] for k in ("utterances", "primary", "cer", "wer", "mer", "ser", "counts")}
    return scores, metrics


class ResultsJournal:
    """results.jsonl while a decode runs: each batch's records appended as it finishes (flushed
    and fsync'd: a kill loses at most the batch in flight, and never leaves half a line that is
    read back), so that a decode interrupted by a signal or killed resumes where it stopped. The
    finished decode rewrites the file in input order (write_results)."""

    def __init__(self, path: Path, items: list[Item]):
        self.path = Path(path)
        self.done = self._read_back(items)
        self.appended = 0
        self._file = None

    def _read_back(self, items: list[Item]) -> dict[int, dict]:
        """The records of an earlier, unfinished decode of the same input, by input index (matched
        by key and audio, in order); a torn last line is dropped."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"{self.path}: cannot read the results of the earlier decode ({err}); decode into a new "
                            "directory") from None
        lines = text.split("\n")
        complete = lines[:-1]  # the part after the last newline is a line a kill cut short (or empty)
        positions: dict[tuple, list[int]] = {}
        for index, item in enumerate(items):
            positions.setdefault((item.key, item.audio), []).append(index)
        done: dict[int, dict] = {}
        for number, line in enumerate(complete, 1):
            try:
                record = json.loads(line)
                slot = positions[(record["key"], record["audio"])].pop(0)
            except (ValueError, KeyError, IndexError, TypeError):
                raise UserError(f"{self.path}:{number}: not a result of this input; decode into a new "
                                "directory") from None
            done[slot] = record
        if lines[-1]:
            with open(self.path, "r+b") as f:
                f.truncate(len("\n".join(complete).encode("utf-8")) + (1 if complete else 0))
        return done

    def append(self, records: list[dict]) -> None:
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        try:
            for record in records:
                self._file.write(json.dumps(json_safe(record), ensure_ascii=False) + "\n")
            self._file.flush()
            self.appended += len(records)
            os.fsync(self._file.fileno())
        except OSError as err:
            raise UserError(f"{self.path}: cannot write ({err.strerror})") from None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def write_results(path: Path, records: list[dict]) -> None:
    """results.jsonl, written to a temporary file and renamed (a crash never leaves half a file)."""
    try:
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(json_safe(record), ensure_ascii=False) + "\n")
    except OSError as err:
        raise UserError(f"{path}: cannot write ({err.strerror})") from None


