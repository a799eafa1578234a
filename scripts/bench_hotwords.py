#!/usr/bin/env python3
"""Hotword lists that scale: the whole list in every prompt (FunASR's way) against the hotwords
the CTC branch spots in each utterance (`hotword_filter`), on a trained model (the demo's). JSON.

  true hotwords  the five most frequent words of five letters or more in the evaluated set's
                 references (digits' names excluded): words the audio holds in some utterances
                 and not in the others
  distractors    English words of the CMU pronouncing dictionary (festival's, Debian's festlex-cmu;
                 five letters or more, none in the references), a seeded sample: the first 200, or 2,000
  runs           no hotwords; for 0, 200 and 2,000 distractors with the true five: the whole list
                 (hotword_filter.enabled=false; above 500 entries nano8k refuses it, reported as
                 such) and the filter (defaults of conf/decode.yaml). Each a `nano8k decode` of the
                 set; keyword precision / recall / F1 of the true five (`nano8k score --keywords`'s
                 counting), CER, decoding time (metrics.json's decode_s: the model's load excluded), and for the filter what it kept: how often a true
                 hotword said in an utterance went into its prompt, how many hotwords a prompt got
                 and how many utterances without any true hotword got one; hotwords inserted where
                 the audio has none (a word of the utterance's prompt written more often than its
                 reference says it), and words of the 2,000 distractors written at all, in every
                 run (with or without a prompt that held them: the model writes some on its own)

  --tune-on TRAIN.jsonl  the filter's threshold from training utterances (never the evaluated
                 set): the CTC branch's scores of the true five (of that manifest) and 200
                 distractors on its first --tune-utterances lines, each threshold's F2 (recall
                 weighted twice: a hotword missed costs more than one more in a prompt of at most
                 max_kept) at telling the utterances that hold a hotword from those that do not

usage: scripts/bench_hotwords.py --run RUN --dev DEV.jsonl [--strategy greedy] [--out DIR]
       scripts/bench_hotwords.py --run RUN --tune-on TRAIN.jsonl [--tune-utterances 300]
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

NANO8K = [sys.executable, "-m", "nano8k"]
DIGIT_WORDS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "oh"}
DISTRACTORS = (0, 200, 2000)


def references(manifest: str) -> dict[str, str]:
    from nano8k.decoding import read_input  # decode's own reader of the manifest

    return {item.key: item.ref or "" for item in read_input(manifest)[0]}


def true_hotwords(refs: dict[str, str], n: int = 5) -> list[str]:
    counts = collections.Counter(w for text in refs.values() for w in set(text.lower().split())
                                 if len(w) >= 5 and w.isalpha() and w not in DIGIT_WORDS)
    return [w for w, _ in sorted(counts.items(), key=lambda x: (-x[1], x[0]))[:n]]


CMU_DICT = Path("/usr/share/festival/dicts/cmu/cmudict-0.4.out")  # Debian's festlex-cmu (festival's lexicon)


def distractors(refs: dict[str, str], n: int, seed: int = 0) -> list[str]:
    """English words from the CMU pronouncing dictionary (alphabetic, five letters or more, none in
    the references), a seeded sample."""
    if not CMU_DICT.is_file():
        sys.exit(f"error: {CMU_DICT} is missing (apt-get install festlex-cmu): the distractors are its words")
    said = {w for text in refs.values() for w in text.lower().split()}
    words = set()
    for line in CMU_DICT.read_text(encoding="latin-1").splitlines():
        if line.startswith('("'):
            word = line[2:line.index('"', 2)]
            if len(word) >= 5 and word.isalpha() and word.isascii() and word.islower():
                words.add(word)
    return random.Random(seed).sample(sorted(words - said), n)


def decode(out: Path, run: str, manifest: str, *args: str) -> tuple[list[dict], dict]:
    proc = subprocess.run([*NANO8K, "decode", f"checkpoint={run}", f"input={manifest}", *args,
                           f"hydra.run.dir={out}"], capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        return [], {"refused": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return records, json.loads((out / "metrics.json").read_text())


def measure(records: list[dict], metrics: dict, true: list[str], listed: list[str], pool: list[str]) -> dict:
    from nano8k import score

    if "refused" in metrics:
        return {"refused": metrics["refused"]}
    scored = score.score_records([r for r in records if r["status"] != "failed"], lang="en")
    micro = score.keyword_metrics(scored, true).micro
    false_words = set(pool)  # the same words in every run: what the model writes of them on its own, too
    out = {"keyword_precision": micro.precision, "keyword_recall": micro.recall, "keyword_f1": micro.f1,
           "keyword_tp_fp_fn": [micro.tp, micro.fp, micro.fn], "cer": round(metrics["cer"], 4),
           "decode_s": metrics["decode_s"],
           "distractors_written": sum(w in false_words for r in records for w in (r["hyp"] or "").lower().split()),
           "hotwords_inserted": inserted(records, listed)}
    if any("hotwords" in r for r in records):
        said = [r for r in records if any(w in r["ref"].lower().split() for w in true)]
        kept = [{h["hotword"] for h in r.get("hotwords") or []} for r in said]
        out["filter"] = {
            "true_said_and_kept": sum(w in k for r, k in zip(said, kept) for w in true if w in r["ref"].lower().split()),
            "true_said": sum(w in r["ref"].lower().split() for r in said for w in true),
            "kept_mean": round(sum(len(r.get("hotwords") or []) for r in records) / len(records), 2),
            "utterances_without_true_given_one": sum(
                1 for r in records if not any(w in r["ref"].lower().split() for w in true)
                and any(h["hotword"] in true for h in r.get("hotwords") or [])),
            "utterances": len(records)}
    return out


def inserted(records: list[dict], listed: list[str]) -> int:
    """Hotwords written where the audio has none: the words of a transcript that its prompt held
    (the filter's choice for that utterance, else the whole list), each beyond the times its
    reference says it."""
    count = 0
    for r in records:
        prompt = {h["hotword"].lower() for h in r["hotwords"] or []} if "hotwords" in r else set(listed)
        said = collections.Counter(r["ref"].lower().split())
        written = collections.Counter((r["hyp"] or "").lower().split())
        count += sum(max(0, n - said[w]) for w, n in written.items() if w in prompt)
    return count


def bench(run: str, dev: str, strategy: str, work: Path) -> dict:
    refs = references(dev)
    true = true_hotwords(refs)
    pool = distractors(refs, max(DISTRACTORS))
    result: dict = {"run": run, "dev": dev, "strategy": strategy, "utterances": len(refs), "true_hotwords": true}
    records, metrics = decode(work / "none", run, dev, f"strategy={strategy}")
    result["no_hotwords"] = measure(records, metrics, true, [], pool)
    for n in DISTRACTORS:
        listed = true + pool[:n]
        hotwords = work / f"hotwords-{n}.txt"
        hotwords.write_text("\n".join(listed) + "\n")
        for name, enabled in (("whole_list", "false"), ("filtered", "true")):
            records, metrics = decode(work / f"{name}-{n}", run, dev, f"strategy={strategy}",
                                            f"hotwords_file={hotwords}", f"hotword_filter.enabled={enabled}")
            result[f"{name}_{n}_distractors"] = measure(records, metrics, true, listed, pool)
    return result


def tune(run: str, manifest: str, utterances: int) -> dict:
    """The filter's threshold on training utterances: spotting alone (the CTC branch's scores)."""
    import numpy as np
    import torch

    from nano8k import config, funasr_gaps
    from nano8k.decoding import Decoder, hotword_filter, read_input

    lines = [line for line in Path(manifest).read_text(encoding="utf-8").splitlines() if line.strip()][:utterances]
    part = Path(tempfile.mkdtemp(prefix="bench_hotwords_tune_")) / "part.jsonl"
    part.write_text("\n".join(lines) + "\n", encoding="utf-8")
    refs = references(str(part))
    true = true_hotwords(refs)
    listed = true + distractors(refs, 200)
    decoder = Decoder(config.validate(config.compose("decode", [f"checkpoint={run}", f"input={part}", "device=cpu"]),
                                      app="decode"))
    spelled = hotword_filter.spellings(listed, decoder.model.ctc_tokenizer)
    items, _ = read_input(str(part))
    rows = []
    for start in range(0, len(items), 16):
        batch = items[start:start + 16]
        for item in batch:
            decoder.probe(item)
        inputs = [funasr_gaps.utterance_inputs(decoder.model, decoder.load(i), decoder.prompt, decoder.tokenizer,
                                               decoder.frontend, decoder.funasr_cfg) for i in batch]
        with torch.inference_mode():
            encoder_out, encoder_lens, _, _ = funasr_gaps.encode_batch(decoder.model, [x.speech for x in inputs], "cpu")
            _, log_probs, labels = funasr_gaps.ctc_greedy(decoder.model, encoder_out, encoder_lens)
            rows.append(hotword_filter.scores(log_probs, [len(x) for x in labels], spelled, decoder.model.blank_id))
    table = np.concatenate(rows)  # [utterances, hotwords]
    truth = np.array([[w in refs[i.key].lower().split() for w in listed] for i in items])
    grid = []
    for threshold in (-0.5, -1.0, -1.5, -2.0, -2.5, -3.0, -3.5, -4.0, -5.0):
        chosen = np.zeros_like(truth)
        for u in range(len(items)):
            kept = hotword_filter.kept(listed, table[u], hotword_filter.HotwordFilterSettings(True, threshold, 10))
            chosen[u, [listed.index(w) for w, _ in kept]] = True
        tp, fp, fn = int((chosen & truth).sum()), int((chosen & ~truth).sum()), int((~chosen & truth).sum())
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        f2 = 5 * tp / (5 * tp + 4 * fn + fp) if tp else 0.0  # recall weighted twice precision
        grid.append({"threshold": threshold, "tp": tp, "fp": fp, "fn": fn, "f1": round(f1, 4), "f2": round(f2, 4),
                     "kept_mean": round(float(chosen.sum(1).mean()), 2)})
    return {"benchmark": "hotword filter threshold", "run": run, "manifest": manifest, "utterances": len(items),
            "true_hotwords": true, "distractors": len(listed) - len(true), "best_by_f2": max(grid, key=lambda g: g["f2"]),
            "grid": grid}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--dev")
    ap.add_argument("--strategy", default="greedy")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--tune-on")
    ap.add_argument("--tune-utterances", type=int, default=300)
    args = ap.parse_args()
    if args.tune_on:
        print(json.dumps(tune(args.run, args.tune_on, args.tune_utterances), indent=2))
        return
    if not args.dev:
        ap.error("--dev (or --tune-on) is needed")
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_hotwords_"))
    work.mkdir(parents=True, exist_ok=True)
    print(json.dumps(bench(args.run, args.dev, args.strategy, work), indent=2))


if __name__ == "__main__":
    main()
