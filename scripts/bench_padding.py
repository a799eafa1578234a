#!/usr/bin/env python3
"""Padding share of training batches: the stage configs' batching against length-bucketed batching
(a benchmark printing JSON, not a timed test).

The batches are FunASR's own: its batch-sampler factory (`BatchSampler`, as every stage names
it) over a stand-in dataset that answers `get_source_len` as FunASR's index does for a Nano line
(speech_length + text_length: 100 fbank frames a second, about 3.3 LLM tokens a second of
speech). Utterance lengths follow a call-centre mix: 1-30 s, log-normal (median 4 s), and, as a
second mix, uniform over 1-30 s. For each mix and corpus size:

  stage       the stage configs' dataset_conf (batch_type token, batch_size 6000, sort_size 1024,
              batch_size_sample_max 10, max_token_length 3500): FunASR's buffered sampler sorts
              each shuffled buffer of 1,024 utterances by length, then packs;
  no_sort     the same without the buffer (sort_size -1): shuffled order, packed as it comes;
  bucketed    the whole corpus sorted by length (one buffer of all of it), packed by the same
              rule, the batches shuffled (global length bucketing).

Reported per strategy: padding share (1 - real length / (batch size x longest), summed over an
epoch's batches; the sampler's own length measure), batches per epoch and real tokens per batch.
Also what bucketing saves against the stage: its padding (relative), the batch's tokens (points)
and the optimizer steps of an epoch (at the same token budget, fewer batches).

usage: scripts/bench_padding.py [--utterances 2000,20000] [--epochs 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import sys

FRAMES_PER_S = 100  # fbank frames (10 ms shift): speech_length
TOKENS_PER_S = 3.3  # ~2.5 words a second, ~1.3 Qwen3 tokens a word
STAGE = {"batch_type": "token", "batch_size": 6000, "sort_size": 1024, "batch_size_sample_max": 10,
         "max_token_length": 3500, "shuffle": True}


class Lengths:
    """What FunASR's batch samplers ask of a dataset."""

    def __init__(self, lengths: list[int]):
        self.lengths = lengths

    def __len__(self) -> int:
        return len(self.lengths)

    def get_source_len(self, index: int) -> int:
        return self.lengths[index]


def durations(mix: str, n: int, rng: random.Random) -> list[float]:
    out = []
    while len(out) < n:
        d = rng.lognormvariate(1.386, 0.8) if mix == "lognormal" else rng.uniform(1.0, 30.0)  # e^1.386 = 4 s
        if 1.0 <= d <= 30.0:
            out.append(d)
    return out


def funasr_batches(dataset: Lengths, conf: dict, epoch: int) -> list[list[int]]:
    from funasr.register import tables

    import funasr.datasets.audio_datasets.samplers  # noqa: F401 - registers the samplers

    sampler = tables.batch_sampler_classes.get("BatchSampler")(dataset, **conf)["batch_sampler"]
    sampler.set_epoch(epoch)
    return [list(b) for b in sampler if b]


def bucketed_batches(dataset: Lengths, conf: dict, epoch: int) -> list[list[int]]:
    """Global length bucketing by FunASR's own packing rule: its buffered sampler with one buffer
    holding the whole corpus, the batches then shuffled (else the epoch would run short to long)."""
    batches = funasr_batches(dataset, {**conf, "sort_size": len(dataset)}, epoch)
    random.Random(epoch).shuffle(batches)
    return batches


def measure(dataset: Lengths, batches_of, conf: dict, epochs: int) -> dict:
    real = padded = count = 0
    for epoch in range(epochs):
        batches = batches_of(dataset, conf, epoch)
        count += len(batches)
        for batch in batches:
            lengths = [dataset.get_source_len(i) for i in batch]
            real += sum(lengths)
            padded += max(lengths) * len(lengths)
    return {"padding_share": round(1 - real / padded, 4), "batches_per_epoch": count / epochs,
            "real_tokens_per_batch": round(real / count, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--utterances", default="2000,20000")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from nano8k import funasr_gaps

    funasr_gaps.quiet_funasr_import()
    results = []
    for mix in ("lognormal", "uniform"):
        for n in (int(x) for x in args.utterances.split(",")):
            rng = random.Random(args.seed)
            lengths = [round(d * FRAMES_PER_S) + round(d * TOKENS_PER_S) for d in durations(mix, n, rng)]
            dataset = Lengths(lengths)
            row = {"mix": mix, "utterances": n,
                   "stage": measure(dataset, funasr_batches, STAGE, args.epochs),
                   "no_sort": measure(dataset, funasr_batches, {**STAGE, "sort_size": -1}, args.epochs),
                   "bucketed": measure(dataset, bucketed_batches, STAGE, args.epochs)}
            stage, bucketed = row["stage"]["padding_share"], row["bucketed"]["padding_share"]
            row["bucketing_cuts_padding_by"] = round(1 - bucketed / stage, 3) if stage else 0.0
            row["bucketing_cuts_batch_tokens_by"] = round(stage - bucketed, 4)  # points of each batch
            row["bucketing_cuts_steps_by"] = round(1 - row["bucketed"]["batches_per_epoch"]
                                                   / row["stage"]["batches_per_epoch"], 4)
            results.append(row)
            print(f"[bench_padding] {mix} {n}: stage {stage:.2%}, no_sort {row['no_sort']['padding_share']:.2%}, "
                  f"bucketed {bucketed:.2%}", file=sys.stderr)
    print(json.dumps({"benchmark": "bench_padding", "stage_dataset_conf": STAGE, "epochs": args.epochs,
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
