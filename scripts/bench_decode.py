#!/usr/bin/env python3
"""Decoding throughput: nano8k's batched decoding vs FunASR's AutoModel.generate (JSON).

A benchmark printing JSON, not a timed test (run it by hand; about a minute on 2 cores).

Same model: the tiny Fun-ASR-Nano (nano8k.tiny.write_tiny_model, or --model-dir), on CPU (or
--device cuda: scripts/gpu_check.py runs it on a released-size model), with the thread count its
config sets (ncpu: 1) for both. Same audio: the first N files of the bundled
corpus (data/demo/wav, 8 kHz mu-law, resampled to the model's 16 kHz front end by both).

  funasr   AutoModel(model=DIR, ctc_decoder=None).generate(input=[N paths], batch_size=1,
           max_length=M): FunASR decodes one utterance at a time (inference_prepare refuses more,
           AutoModel forces batch_size 1 on CPU). The CTC branch is removed because FunASR's
           inference with it always runs forced-alignment timestamps, which need torchaudio.
  nano8k   nano8k.decoding.Decoder(...).decode(items, batch_size) for each --batch-sizes, ctc=false
           (the same work as FunASR's), and once more with the CTC greedy hypothesis (`+ctc`).

Both front ends run with dither 0 (FunASR's default 1.0 adds noise; see funasr_gaps 12), so both
see the same features; `agree` counts identical hypotheses. Both systems are built once and
timed in the same process, runs interleaved (funasr, nano8k bs..., repeat), after one warm-up
pass each; per system the median of --runs of wall time and of process CPU time. utt_per_s =
N / median wall; ratio = nano8k utt_per_s / funasr utt_per_s (target >= 3). With random weights
every utterance generates max_new_tokens tokens in both systems (no early end of sequence).

Strategies (--run RUN --dev DEV.jsonl): a trained model (the demo's) decodes the dev set with each
decoding strategy (greedy, joint, ctc; conf/decode.yaml's settings), runs interleaved, median of
--runs: utterances per second, its ratio to greedy's, CER and WER (`nano8k score`'s rules);
speculative's acceptance and passes, and on how many utterances the two heads disagree.

Joint's settings (--run RUN --tune-on TRAIN.jsonl): a grid of ctc_weight x length_bonus, each a
re-ranking of the candidates one joint decode of the first --tune-utterances lines recorded.
--accept-ctc X ...: also joint taking the CTC text without the LLM where every CTC frame is at
least X sure (joint.accept_ctc), each threshold a variant beside the strategies. --lexicon FILE:
also joint with that word list (joint.lexicon, the demo's weights for it); with --tune-on, the
grid ranks its candidates too.

Speculative's ceiling (--run RUN --dev DEV.jsonl --ceiling): per batch, the work before the LLM
(features; encoder, adaptor and CTC branch) and the LLM's part alone for greedy search, for
speculative with the CTC drafts and for speculative with a perfect draft (greedy's own text), all
bounded by max_new_tokens: speculative shortens only the LLM's part, so its perfect-draft speed is
the most any draft can give against greedy on that model and machine.

usage: scripts/bench_decode.py [--utterances 64] [--batch-sizes 8 16] [--runs 3] [--max-new-tokens 32]
                               [--model-dir DIR] [--device cpu|cuda] [--output FILE]
       scripts/bench_decode.py --run RUN --dev DEV.jsonl [--batch-sizes 16] [--runs 3] [--device cpu|cuda]
       scripts/bench_decode.py --run RUN --dev DEV.jsonl --ceiling [--batch-sizes 16] [--runs 3]
       scripts/bench_decode.py --run RUN --tune-on TRAIN.jsonl [--tune-utterances 300] [--lexicon FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 3.0


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def summary(walls: list[float], cpus: list[float], n: int) -> dict:
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    return {"wall_s": [round(w, 3) for w in walls], "cpu_s": [round(c, 3) for c in cpus], "median_wall_s": round(wall, 3),
            "median_cpu_s": round(cpu, 3), "utt_per_s": round(n / wall, 2), "utt_per_cpu_s": round(n / cpu, 2)}


def strategies(run: str, dev: str, batch_size: int, runs: int, device: str, accept_ctc: list[float],
               lexicon: str | None = None) -> dict:
    from nano8k import config
    from nano8k.config import STRATEGIES
    from nano8k.decoding import Decoder, compute_metrics, read_input, speech_gate

    variants = {name: [f"strategy={name}"] for name in STRATEGIES}
    variants.update({f"joint accept_ctc={x}": ["strategy=joint", f"joint.accept_ctc={x}"] for x in accept_ctc})
    if lexicon:  # with the demo's weights for a lexicon
        sys.path.insert(0, str(REPO / "scripts"))
        import demo

        variants["joint+lexicon"] = ["strategy=joint", f"joint.lexicon={lexicon}", *demo.LEXICON_OVERRIDES]
    decoders = {name: Decoder(config.validate(config.compose("decode", [f"checkpoint={run}", f"input={dev}",
                                                                         *overrides, f"device={device}"]),
                                              app="decode"))
                for name, overrides in variants.items()}

    def go(name: str) -> list[dict]:
        items, _ = read_input(dev)
        return decoders[name].decode(items, batch_size, progress=False)

    records = {name: go(name) for name in variants}  # warm-up
    acceptance = decoders["speculative"].acceptance.report()  # of one decode of the set
    walls: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(runs):
        for name in variants:
            walls[name].append(timed(lambda: go(name))[1])
    out: dict = {}
    for name in variants:
        _, metrics = compute_metrics(records[name])
        out[name] = {"utt_per_s": round(len(records[name]) / statistics.median(walls[name]), 2),
                     "cer": round(metrics["cer"], 4), "wer": round(metrics["wer"], 4), "walls": walls[name]}
        if name.startswith("joint accept_ctc"):
            out[name]["ctc_accepted"] = sum("ctc_accepted" in r for r in records[name])
    for name in variants:
        out[name]["speed_vs_greedy"] = round(out[name]["utt_per_s"] / out["greedy"]["utt_per_s"], 2)
    n = len(records["greedy"])
    out["speculative"].update(acceptance=acceptance, passes_per_utterance=round(acceptance["passes"] / n, 2),
                              tokens_per_utterance=round(acceptance["tokens"] / n, 2),
                              same_as_greedy=sum(a["hyp"] == b["hyp"] for a, b in zip(records["greedy"], records["speculative"])))
    disagree = sum(r["hyp"] != speech_gate.spoken_text(r["ctc_hyp"] or "") for r in records["greedy"])
    return {"benchmark": "decode strategies", "run": run, "dev": dev, "utterances": n, "batch_size": batch_size,
            "runs": runs, "device": device, "heads_disagree": disagree, "strategies": out}


def ceiling(run: str, dev: str, batch_size: int, runs: int, device: str) -> dict:
    """Where speculative decoding's time goes, and the most it could save on this model: per batch
    of the dev set, the work before the LLM (features, encoder, adaptor, CTC branch) and the LLM's
    part alone, timed for greedy search, for speculative with the CTC drafts, and for speculative
    with a perfect draft (greedy's own text: every draft token accepted). Speculative can only
    shorten the LLM's part, so (before + greedy's LLM) / (before + the perfect draft's LLM) is the
    fastest it can be against greedy on this model and machine, whatever the draft."""
    import torch

    from nano8k import config, funasr_gaps
    from nano8k.decoding import Decoder, read_input, speculative, speech_gate

    decoder = Decoder(config.validate(config.compose("decode", [f"checkpoint={run}", f"input={dev}", f"device={device}"]),
                                      app="decode"))
    model, tokenizer, limit = decoder.model, decoder.tokenizer, decoder.max_new_tokens
    items = [item for item in read_input(dev)[0] if item.reason is None]
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    walls: dict[str, list[float]] = {name: [] for name in ("features", "before_llm", "greedy", "speculative", "perfect_draft")}
    for repeat in range(runs + 1):  # the first is a warm-up
        totals = dict.fromkeys(walls, 0.0)
        accepted = {name: speculative.Acceptance() for name in ("speculative", "perfect_draft")}
        for batch in batches:
            with torch.inference_mode():
                inputs, wall, _ = timed(lambda: [funasr_gaps.utterance_inputs(
                    model, decoder.load(item), decoder.prompt_for(item.prompt), tokenizer, decoder.frontend,
                    decoder.funasr_cfg) for item in batch])
                totals["features"] += wall

                def before():
                    encoder_out, encoder_lens, adaptor_out, adaptor_lens = funasr_gaps.encode_batch(
                        model, [x.speech for x in inputs], decoder.device)
                    return adaptor_out, adaptor_lens, funasr_gaps.ctc_greedy(model, encoder_out, encoder_lens)[0]
                (adaptor_out, adaptor_lens, ctc_texts), wall, _ = timed(before)
                totals["before_llm"] += wall
                limits = [limit] * len(batch)
                greedy, wall, _ = timed(lambda: funasr_gaps.generate_batch(model, inputs, adaptor_out, adaptor_lens,
                                                                            tokenizer, limit, decoder.dtype, limits=limits))
                totals["greedy"] += wall
                for name, drafts in (("speculative", [speech_gate.spoken_text(t) for t in ctc_texts]),
                                     ("perfect_draft", [text for text, _ in greedy])):
                    (_, stats), wall, _ = timed(lambda: speculative.decode(model, tokenizer, inputs, adaptor_out,
                                                                           adaptor_lens, drafts, limits, decoder.dtype))
                    totals[name] += wall
                    accepted[name].add(stats)
        if repeat:
            for name in walls:
                walls[name].append(totals[name])
    n = len(items)
    ms = {name: round(1000 * statistics.median(w) / n, 3) for name, w in walls.items()}
    front = ms["features"] + ms["before_llm"]
    whole = {name: round(front + ms[name], 3) for name in ("greedy", "speculative", "perfect_draft")}
    return {"benchmark": "speculative ceiling", "run": run, "dev": dev, "utterances": n, "batch_size": batch_size,
            "runs": runs, "device": device, "max_new_tokens": limit, "ms_per_utterance": ms,
            "llm_share_of_greedy": round(ms["greedy"] / whole["greedy"], 3),
            "speed_vs_greedy": {name: round(whole["greedy"] / whole[name], 2) for name in ("speculative", "perfect_draft")},
            "llm_part_speed_vs_greedy": {name: round(ms["greedy"] / ms[name], 2) for name in ("speculative", "perfect_draft")},
            "acceptance": {name: stats.report() for name, stats in accepted.items()}}  # of one pass over the set


def tune(run: str, manifest: str, utterances: int, device: str, lexicon: str | None = None) -> dict:
    """strategy=joint's ctc_weight and length_bonus on a grid, from one decode of the first
    `utterances` lines of `manifest` (training data: the dev set must choose nothing): every
    candidate's scores are in its record, so each setting is a re-ranking of them (with a
    `lexicon`, its candidates among them)."""
    import tempfile

    from nano8k import config, score
    from nano8k.decoding import Decoder, read_input

    lines = [line for line in Path(manifest).read_text(encoding="utf-8").splitlines() if line.strip()][:utterances]
    part = Path(tempfile.mkdtemp(prefix="bench_decode_tune_")) / "part.jsonl"
    part.write_text("\n".join(lines) + "\n", encoding="utf-8")
    decoder = Decoder(config.validate(config.compose("decode", [f"checkpoint={run}", f"input={part}", "strategy=joint",
                                                                f"device={device}", f"joint.lexicon={lexicon or 'null'}"]),
                                      app="decode"))
    records = [r for r in decoder.decode(read_input(str(part))[0], 16, progress=False) if r.get("candidates")]
    refs = {r["key"]: r["ref"] for r in records}
    grid = []
    for weight in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        for bonus in (0.0, 0.5, 1.0, 1.5, 2.0):
            def rank(c: dict, heard: bool) -> float:  # joint.decode's score (a text CTC cannot emit: -inf)
                w = weight if heard else 0.0
                ctc = 0.0 if not w else (-math.inf if c["ctc"] is None else w * c["ctc"])
                return (1 - w) * c["llm"] + ctc + bonus * c["tokens"]
            hyps = {r["key"]: max(r["candidates"], key=lambda c: rank(c, any(x["ctc"] is not None for x in r["candidates"])))["text"]
                    for r in records}
            scores = score.score_texts(refs, hyps)
            grid.append({"ctc_weight": weight, "length_bonus": bonus, "cer": round(scores.cer, 4), "wer": round(scores.wer, 4)})
    return {"benchmark": "joint settings", "run": run, "manifest": manifest, "lexicon": lexicon, "utterances": len(records),
            "best_by_cer": min(grid, key=lambda g: (g["cer"], g["wer"])), "grid": grid}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--model-dir", type=Path, default=None, help="a Fun-ASR-Nano directory (default: a new tiny one)")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="both systems on this device")
    parser.add_argument("--run", help="a trained run: compare the decoding strategies on --dev instead")
    parser.add_argument("--dev", help="the dev manifest the strategies decode (with --run)")
    parser.add_argument("--tune-on", help="with --run: choose joint's settings on this (training) manifest instead")
    parser.add_argument("--tune-utterances", type=int, default=300)
    parser.add_argument("--accept-ctc", type=float, nargs="*", default=[],
                        help="with --run --dev: also joint with joint.accept_ctc at each of these")
    parser.add_argument("--ceiling", action="store_true",
                        help="with --run --dev: where speculative's time goes, and its speed with a perfect draft")
    parser.add_argument("--lexicon", help="with --run: a word list for joint.lexicon (--dev: also joint+lexicon; "
                                          "--tune-on: its candidates in the grid)")
    args = parser.parse_args()
    if args.run and args.tune_on:
        print(json.dumps(tune(args.run, args.tune_on, args.tune_utterances, args.device, args.lexicon), indent=2))
        return
    if args.run and args.ceiling:
        print(json.dumps(ceiling(args.run, args.dev, max(args.batch_sizes), args.runs, args.device), indent=2))
        return
    if args.run:
        report = strategies(args.run, args.dev, max(args.batch_sizes), args.runs, args.device, args.accept_ctc,
                            args.lexicon)
        print(json.dumps(report, indent=2))
        if args.output:
            args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        return

    import torch

    from nano8k import decoding, funasr_gaps
    from nano8k.tiny import write_tiny_model

    workdir = Path(tempfile.mkdtemp(prefix="bench_decode_"))
    model_dir = args.model_dir or write_tiny_model(workdir / "tiny")
    wavs = sorted((REPO / "data" / "demo" / "wav").glob("*.wav"))[: args.utterances]
    if len(wavs) < args.utterances:
        sys.exit(f"only {len(wavs)} files in data/demo/wav")
    listing = workdir / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in wavs), encoding="utf-8")
    paths = [str(p) for p in wavs]
    n = len(paths)

    funasr_gaps.quiet_funasr_import()
    from funasr import AutoModel

    with funasr_gaps.funasr_prints_to_log():
        funasr = AutoModel(model=str(model_dir), device=args.device, disable_update=True, disable_pbar=True, disable_log=True,
                           ctc_decoder=None)
    funasr.kwargs["frontend"].dither = 0.0
    threads = torch.get_num_threads()

    def run_funasr() -> list[str]:
        return [r["text"] for r in funasr.generate(input=paths, batch_size=1, max_length=args.max_new_tokens)]

    base = {"model_dir": str(model_dir), "device": args.device, "max_new_tokens": args.max_new_tokens, "timestamps": False,
            "speech_gate": {"enabled": False}}  # FunASR's work: no CTC pass unless +ctc
    decoders = {"nano8k": decoding.Decoder({**base, "ctc": False}), "nano8k+ctc": decoding.Decoder({**base, "ctc": True})}
    torch.set_num_threads(threads)  # each build sets the config's ncpu; keep all equal

    def run_nano8k(name: str, batch_size: int):
        def go() -> list[str]:
            items, _ = decoding.read_input(str(listing))
            return [r["hyp"] for r in decoders[name].decode(items, batch_size, progress=False)]
        return go

    systems = {"funasr": run_funasr}
    for bs in args.batch_sizes:
        systems[f"nano8k_bs{bs}"] = run_nano8k("nano8k", bs)
    systems[f"nano8k+ctc_bs{max(args.batch_sizes)}"] = run_nano8k("nano8k+ctc", max(args.batch_sizes))

    hyps = {name: fn() for name, fn in systems.items()}  # warm-up
    walls: dict[str, list[float]] = {name: [] for name in systems}
    cpus: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(args.runs):
        for name, fn in systems.items():
            _, wall, cpu = timed(fn)
            walls[name].append(wall)
            cpus[name].append(cpu)

    results = {name: summary(walls[name], cpus[name], n) for name in systems}
    reference = results["funasr"]["utt_per_s"]
    for name, res in results.items():
        if name != "funasr":
            res["ratio"] = round(res["utt_per_s"] / reference, 2)
            res["ratio_cpu"] = round(res["utt_per_cpu_s"] / results["funasr"]["utt_per_cpu_s"], 2)
            res["agree"] = sum(a == b for a, b in zip(hyps[name], hyps["funasr"]))
    best = max((name for name in results if name.startswith("nano8k_bs")), key=lambda k: results[k]["utt_per_s"])
    import soundfile

    report = {
        "benchmark": "decode",
        "model": "tiny Fun-ASR-Nano (random weights)" if args.model_dir is None else str(args.model_dir),
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
        "torch_threads": threads,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "utterances": n,
        "audio_s": round(sum(soundfile.info(p).duration for p in paths), 2),
        "max_new_tokens": args.max_new_tokens,
        "runs": args.runs,
        "funasr_note": "AutoModel.generate, one utterance at a time (batch_size 1), ctc_decoder=None: FunASR's CTC "
                       "timestamps need torchaudio",
        "results": results,
        "agree_note": "agree = hypotheses identical to FunASR's; with the tiny model's random weights most are the "
                      "same filler, so this is a smoke check: tests/test_decode.py compares against FunASR's "
                      "inference on weights that make every hypothesis depend on its audio",
        "best": best,
        "ratio": results[best]["ratio"],
        "target": TARGET,
        "meets_target": results[best]["ratio"] >= TARGET,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
