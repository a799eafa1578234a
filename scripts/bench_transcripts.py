#!/usr/bin/env python3
"""What decoding's transcripts are worth beyond the text, on a trained model (the demo's): word
times, non-speech, confidence and their cost. Prints JSON; README quotes one run.

  word_times   dev utterances assembled into calls with known gaps (0.4-1.5 s of comfort noise),
               decoded whole (vad=silero): the first word's start and the last word's end of each
               utterance against its speech edges (10 ms frames within 40 dB of the peak, the rule
               the corpus was trimmed with); the VAD windows' edges beside them (what segment times
               were before word times); for greedy decoding and for strategy=joint (whose
               transcript the times are of)
  non_speech   scripts/make_nonspeech.py's twelve kinds (seed 0: clips training never saw; the
               demo trains on seed 1's), decoded one clip at a time without a VAD: characters a
               minute of non-speech with the speech gate and without (and --baseline-run's, e.g. a
               model trained without non-speech); the dev CER with and without
  confidence   the dev set decoded with word confidence; the calibration cross-fitted (fitted on
               one half of the utterances, applied to the other, both ways): AUC at telling wrong
               words from right ones and expected calibration error, calibrated with and without
               the LLM's measure, and each measure alone; and the user's path: the calibration
               fitted on the whole dev set (decode calibrate=true) and applied to --fresh-dev more
               utterances of the dev split's kind (rendered by the corpus's generator: the dev
               set's 287 words alone would show ECE ~0.05 for a perfectly calibrated confidence);
               each ECE beside the one a perfectly calibrated confidence would show on those words
  cost         dev decode time with word times and confidence and without: one process, batch by
               batch, taking turns (the sum of each batch's median of --repeats), beside the same
               decode without times timed twice (the A/A difference: the measurement's noise)

usage: scripts/bench_transcripts.py --run RUN --dev DEV.jsonl [--calls 6] [--repeats 21] [--fresh-dev 400] [--out DIR]
                                    [--baseline-run RUN] [--parts cost,confidence,...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import make_demo_corpus  # noqa: E402  (the corpus's speech rule: the word times' truth)
import make_nonspeech  # noqa: E402

from nano8k import score  # noqa: E402
from nano8k.decoding import confidence  # noqa: E402

NANO8K = [sys.executable, "-m", "nano8k"]
RATE = 8000


def decode(out: Path, *args: str) -> tuple[list[dict], dict]:
    proc = subprocess.run([*NANO8K, "decode", *args, f"hydra.run.dir={out}"], capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"decode failed: {proc.stderr[-2000:]}")
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return records, json.loads((out / "metrics.json").read_text())


def word_times(run: str, dev: list[dict], work: Path, n_calls: int, strategy: str = "greedy") -> dict:
    rng = np.random.default_rng(0)
    calls = work / "calls"
    calls.mkdir(exist_ok=True)  # the same calls for each strategy (seeded)
    truth = []  # (call, start, end, reference) of each utterance's speech
    per_call = 8
    for c in range(n_calls):
        pieces, at = [], 0.0
        for u in dev[c * per_call:(c + 1) * per_call]:
            gap = rng.uniform(0.4, 1.5)
            pieces.append(rng.standard_normal(int(gap * RATE)) * 10 ** (-65 / 20))  # comfort noise
            at += gap
            x, sr = soundfile.read(u["audio"], dtype="float64")
            assert sr == RATE
            start, end = (sample / RATE for sample in make_demo_corpus.speech_span(x, RATE))
            truth.append((f"call{c}", at + start, at + end, u["ref"]))
            pieces.append(x)
            at += len(x) / RATE
        pieces.append(np.zeros(int(0.8 * RATE)))
        soundfile.write(calls / f"call{c}.wav", np.concatenate(pieces), RATE, subtype="PCM_16")
    records, _ = decode(work / f"decode-calls-{strategy}", f"checkpoint={run}", f"input={calls}", "vad=silero",
                        f"strategy={strategy}")
    starts, ends, vad_starts, vad_ends, right_starts, right_ends, missed = [], [], [], [], [], [], 0
    for call, start, end, ref in truth:
        mine = [r for r in records if r.get("call") == call and r["status"] == "ok"]
        words = [w for r in mine for w in r.get("words") or [] if w["end"] > w["start"]
                 and start - 0.2 <= (w["start"] + w["end"]) / 2 <= end + 0.2]
        windows = [r for r in mine if min(r["end"], end) - max(r["start"], start) > 0]
        if not words or not windows:
            missed += 1
            continue
        last = max(words, key=lambda w: w["end"])
        starts.append(abs(words[0]["start"] - start))
        ends.append(abs(last["end"] - end))
        vad_starts.append(abs(min(r["start"] for r in windows) - start))
        vad_ends.append(abs(max(r["end"] for r in windows) - end))
        spoken = score.normalize(ref).split()  # the edge words the model got right: timing alone
        if spoken and score.normalize(words[0]["word"]) == spoken[0]:
            right_starts.append(starts[-1])
        if spoken and score.normalize(last["word"]) == spoken[-1]:
            right_ends.append(ends[-1])

    def stats(values: list[float]) -> dict:
        return {"median_ms": round(1000 * float(np.median(values)), 1), "p90_ms": round(1000 * float(np.percentile(values, 90)), 1)}

    return {"utterances": len(truth), "measured": len(starts), "missed": missed, "first_word_start": stats(starts),
            "last_word_end": stats(ends), "both_edges": stats(starts + ends),
            "edge_words_right": {"starts": len(right_starts), "ends": len(right_ends),
                                 "both_edges": stats(right_starts + right_ends)},
            "vad_window_start": stats(vad_starts), "vad_window_end": stats(vad_ends),
            "vad_window_both": stats(vad_starts + vad_ends)}


def non_speech(run: str, dev_path: str, work: Path, baseline: str | None) -> dict:
    clips = work / "nonspeech"
    manifest = make_nonspeech.write(clips, per_kind=4, seconds=5.5, seed=0)
    out: dict = {}
    if baseline:  # another model on the same clips (e.g. one trained without non-speech)
        out["baseline"] = {"run": baseline}
        for name, gate in (("gate", "true"), ("no_gate", "false")):
            _, metrics = decode(work / f"ns-baseline-{name}", f"checkpoint={baseline}", f"input={manifest}",
                                f"speech_gate.enabled={gate}")
            out["baseline"][name] = {"chars_per_minute": round(metrics["non_speech"]["chars_per_minute"], 2),
                                     "clips_with_words": metrics["non_speech"]["with_words"],
                                     "no_speech_status": metrics["no_speech"]}
    for name, gate in (("gate", "true"), ("no_gate", "false")):
        records, metrics = decode(work / f"ns-{name}", f"checkpoint={run}", f"input={manifest}",
                                  f"speech_gate.enabled={gate}")
        by_kind: dict[str, int] = {}
        for r in records:
            by_kind[r["kind"]] = by_kind.get(r["kind"], 0) + len(r["hyp"].replace(" ", ""))
        _, dev_metrics = decode(work / f"dev-{name}", f"checkpoint={run}", f"input={dev_path}",
                                f"speech_gate.enabled={gate}", "timestamps=false")
        out[name] = {"clips": len(records), "minutes": round(metrics["non_speech"]["seconds"] / 60, 2),
                     "chars_per_minute": round(metrics["non_speech"]["chars_per_minute"], 2),
                     "clips_with_words": metrics["non_speech"]["with_words"], "no_speech_status": metrics["no_speech"],
                     "chars_by_kind": by_kind, "dev_cer": dev_metrics["cer"], "dev_wer": dev_metrics["wer"],
                     "dev_no_speech": dev_metrics["no_speech"]}
    out["kinds"] = len(make_nonspeech.KINDS)
    out["dev_cer_rise_points"] = round(100 * (out["gate"]["dev_cer"] - out["no_gate"]["dev_cer"]), 2)
    return out


def perfectly_calibrated_ece(predicted: list[float], draws: int = 200) -> float:
    """The calibration error a perfectly calibrated confidence would show on these words by chance
    alone: the mean ECE when each word is right with exactly its predicted probability (seeded
    draws). A measured ECE is read against it: on a few hundred words it is itself ~0.05."""
    rng = np.random.default_rng(0)
    p = np.asarray(predicted)
    return round(float(np.mean([score.calibration_error(p, rng.random(len(p)) < p) for _ in range(draws)])), 4)


def fresh_dev(work: Path, n: int) -> Path:
    """n utterances more of the dev split (ids after the bundled ones: the corpus's own generator,
    make_demo_corpus.ivr_utterance, so the same voices, delivery and kinds of text; never trained
    on), rendered here with the installed TTS engines: a source/target JSONL."""
    import make_demo_corpus as corpus

    corpus.ivr_engines(allow_version_mismatch=True)  # every engine installed, or a one-line refusal
    first = corpus.IVR_SPLITS["dev"][0]
    plan = [corpus.ivr_utterance("dev", i) for i in range(first, first + n)]
    done = corpus.render_ivr_files(plan, work / "fresh_dev")
    manifest = work / "fresh_dev.jsonl"
    manifest.write_text("".join(json.dumps({"key": u.utt, "source": str(work / "fresh_dev" / f"{u.utt}.wav"),
                                            "target": corpus.normalize_text(u.text)}) + "\n" for u, _ in done))
    return manifest


def confidence_quality(run: str, dev_path: str, work: Path, n_fresh: int) -> dict:
    """The dev set's words cross-fitted (below), and the user's path end to end: the calibration
    fitted on the whole dev set (`decode calibrate=true`) and applied (`calibration=FILE`) to
    n_fresh utterances more of the dev split's kind, scored by `nano8k decode`'s own metrics."""
    records, _ = decode(work / "dev-words", f"checkpoint={run}", f"input={dev_path}", "calibrate=true")
    scored = score.score_records([r for r in records if r["status"] != "failed"], lang="en")
    halves = [score.Scores([u for i, u in enumerate(scored.utterances) if i % 2 == h], scored.lang) for h in (0, 1)]
    outcomes = [h.word_outcomes() for h in halves]
    right = [r for h in (0, 1) for _, r in outcomes[h]]

    def cross_fitted(measures_of) -> dict:
        """Fitted on one half, applied to the other, both ways: AUC and calibration error."""
        predicted = []
        for h in (0, 1):
            calibration = confidence.Calibration.fit([measures_of(w) for w, _ in outcomes[1 - h]],
                                                     [r for _, r in outcomes[1 - h]], "bench")
            predicted += [calibration(measures_of(w)) for w, _ in outcomes[h]]
        return {"auc": round(score.auc(predicted, right), 4), "ece": round(score.calibration_error(predicted, right), 4),
                "ece_if_perfectly_calibrated": perfectly_calibrated_ece(predicted)}

    def alone(name: str) -> dict:
        values = [w["measures"].get(name, 1.0) for h in (0, 1) for w, _ in outcomes[h]]
        return {"auc": round(score.auc(values, right), 4), "ece": round(score.calibration_error(values, right), 4)}

    out = {"words": len(right), "wrong": len(right) - sum(right),
           "calibrated": cross_fitted(lambda w: w["measures"]),
           "calibrated_without_llm": cross_fitted(lambda w: {k: v for k, v in w["measures"].items() if k != "llm"}),
           "entropy_alone": alone("entropy"), "support_alone_auc": alone("support")["auc"],
           "llm_alone_auc": alone("llm")["auc"]}
    if n_fresh:
        fresh_records, metrics = decode(work / "fresh-dev-words", f"checkpoint={run}",
                                        f"input={fresh_dev(work, n_fresh)}",
                                        f"calibration={work / 'dev-words' / confidence.CALIBRATION_FILE}")
        quality = metrics["confidence"]
        fresh = score.score_records([r for r in fresh_records if r["status"] != "failed"], lang="en").word_outcomes()
        out["fitted_on_dev_applied_to_fresh_dev"] = {
            "utterances": len(fresh_records), "words": quality["words"], "wrong": quality["wrong"],
            "auc": round(quality["auc"], 4), "ece": round(quality["ece"], 4),
            "ece_if_perfectly_calibrated": perfectly_calibrated_ece([float(w["confidence"]) for w, _ in fresh])}
    return out


def cost(run: str, dev_path: str, repeats: int, batch_size: int = 16) -> dict:
    """Decoding time of the dev set with word times and confidence and without: one process, the
    same model, batch by batch (reading, features and the model: Decoder.decode of the batch's
    items), the decoders taking turns `repeats` times on each batch; the sum of the per-batch
    medians. Interleaving at the batch cancels the machine's drift, which whole decodes a minute
    apart do not (two runs of five whole decodes each measured +7% and +23%). A second decoder
    without times is timed alongside: its difference from the first is this machine's noise on the
    measurement (an A/A comparison), to read `added` against."""
    from nano8k import config
    from nano8k.decoding import Decoder, read_input

    flags = {"without": "false", "without_again": "false", "with": "true"}
    decoders = {name: Decoder(config.validate(config.compose("decode", [
        f"checkpoint={run}", f"input={dev_path}", f"timestamps={flag}", "device=cpu"]), app="decode"))
        for name, flag in flags.items()}
    items, _ = read_input(dev_path)
    for item in items:
        decoders["without"].probe(item)
    items.sort(key=lambda item: -(item.duration or 0))  # as decode batches them: longest first
    medians = dict.fromkeys(flags, 0.0)
    for start in range(0, len(items), batch_size):
        keys = [item.key for item in items[start:start + batch_size]]
        times: dict[str, list[float]] = {name: [] for name in flags}
        for r in range(repeats + 1):
            order = list(flags)[r % 3:] + list(flags)[:r % 3]  # each decoder first, second and last in turn
            for name in order:
                batch = [i for i in read_input(dev_path)[0] if i.key in keys]
                tick = time.perf_counter()
                decoders[name].decode(batch, batch_size, progress=False)
                if r:  # the first round warms up
                    times[name].append(time.perf_counter() - tick)
        for name in medians:
            medians[name] += statistics.median(times[name])
    return {"repeats": repeats, "batches": -(-len(items) // batch_size), "decode_s_with_times": round(medians["with"], 3),
            "decode_s_without": round(medians["without"], 3), "added": round(medians["with"] / medians["without"] - 1, 4),
            "a_a_difference": round(medians["without_again"] / medians["without"] - 1, 4)}


PARTS = ("word_times", "word_times_joint", "non_speech", "confidence", "cost")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--dev", required=True)
    ap.add_argument("--calls", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=21, help="cost: rounds on each batch (fewer spread more)")
    ap.add_argument("--fresh-dev", type=int, default=400, help="confidence: utterances more of the dev split's kind "
                                                                 "to measure the calibration on (0: none)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--baseline-run", help="another model's non-speech, on the same clips")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"which measurements, comma-separated (default: all: "
                                                             f"{', '.join(PARTS)})")
    args = ap.parse_args()
    parts = args.parts.split(",")
    if set(parts) - set(PARTS):
        ap.error(f"--parts: {', '.join(sorted(set(parts) - set(PARTS)))} unknown; choose from {', '.join(PARTS)}")
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_transcripts_"))
    work.mkdir(parents=True, exist_ok=True)
    dev = []
    for line in Path(args.dev).read_text().splitlines():
        obj = json.loads(line)
        dev.append({"key": obj["key"], "ref": obj["messages"][2]["content"],
                    "audio": obj["messages"][1]["content"].split("!", 1)[1].split("<|endofspeech|>")[0]})
    measure = {"word_times": lambda: word_times(args.run, dev, work, args.calls),
               "word_times_joint": lambda: word_times(args.run, dev, work, args.calls, "joint"),
               "non_speech": lambda: non_speech(args.run, args.dev, work, args.baseline_run),
               "confidence": lambda: confidence_quality(args.run, args.dev, work, args.fresh_dev),
               "cost": lambda: cost(args.run, args.dev, args.repeats)}
    result = {"run": args.run, "dev": args.dev, **{part: measure[part]() for part in parts}}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
