#!/usr/bin/env python3
"""Whole calls: VAD segmentation vs fixed 30-second chunks, speed and CER (JSON).

A benchmark printing JSON, not a timed test (run it by hand after `make demo`, whose trained
model it decodes with; about 10 minutes on 2 cores with the defaults).

Calls: --calls stereo calls of about --minutes each, built from the held-out utterances of the
learning corpus (data/ivr/dev: the demo model never trained on them) by nano8k.data.assemble:
two channels taking turns, pauses of 0.6-2.5 s, a hold silence every 12 turns. Their truth is
written as a Kaldi directory (wav.scp + reco2file_and_channel: one recording a side; segments +
text), so both systems are scored channel by channel: each channel's transcript (its segments'
or chunks' texts in time order) against its utterances' transcripts in time order.

  vad      `nano8k decode vad=silero` as a library call (decode.decode): silero-vad per channel,
           the segments of all calls batched together.
  chunks   each channel cut into fixed --chunk-s pieces (the last one shorter), decoded by the same
           Decoder in the same batches: what decoding long audio without a VAD does.
  oracle   the truth's own segments decoded as utterances (CER only): what a perfect segmenter gives.

  framing  (--framing) the corpus's utterances decoded with 0, 120, 240 and 360 ms of silence put
           before each (digital zero, as the corpus's own margins): how much the transcript depends
           on where a segment starts, which a VAD's segments cannot hold to the truth's.

Both use one Decoder built once (the model load is not counted). Reported: audio hours per hour
of compute (call audio, not channel audio, over wall time of VAD + decoding), the VAD's share of
the time, RTF, CER (and the CTC branch's) of both, segment and chunk counts, and the process's
peak memory.

usage: scripts/bench_calls.py [--checkpoint runs/demo/stage1] [--corpus data/ivr/dev] [--calls 2]
                              [--minutes 10] [--chunk-s 30] [--batch-size 16] [--strategy greedy]
                              [--lexicon FILE] [--speech-pad-ms MS] [--output FILE] [--framing]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def corpus(kaldi: Path) -> list[tuple[str, str, str]]:
    from nano8k import data

    _, _, entries, _ = data.read_source(kaldi, need_text=True)
    return [(e.key, e.audio, e.text) for e in entries]


def build_calls(utterances: list, folder: Path, calls: int, minutes: float) -> Path:
    """The calls (WAV) and their truth as a Kaldi directory; returns the directory."""
    from nano8k.data.assemble import assemble_call

    kaldi = folder / "kaldi"
    kaldi.mkdir(parents=True)
    scp, sides, segments, text = [], [], [], []
    per_call = len(utterances) // calls
    for n in range(calls):
        name = f"call{n + 1}"
        audio = folder / f"{name}.wav"
        mine = utterances[n * per_call:(n + 1) * per_call]
        turns = assemble_call(mine, audio, seconds=minutes * 60, seed=n)
        for side in "AB":
            scp.append(f"{name}-{side} {audio}")
            sides.append(f"{name}-{side} {name} {side}")
        for i, t in enumerate(turns):
            key = f"{name}-{'AB'[t.channel]}-{i:04d}"
            segments.append(f"{key} {name}-{'AB'[t.channel]} {t.start} {t.end}")
            text.append(f"{key} {t.text}")
    for file, rows in (("wav.scp", scp), ("reco2file_and_channel", sides), ("segments", segments), ("text", text)):
        (kaldi / file).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return kaldi


def chunk_items(kaldi: Path, chunk_s: float) -> tuple[list, dict[str, str]]:
    """Fixed chunks of every channel, and each channel's reference (its utterances in time order)."""
    import soundfile as sf

    from nano8k import data
    from nano8k.decoding import Item

    _, _, entries, _ = data.read_source(kaldi, need_text=True)
    sides = data.read_reco2file_and_channel(kaldi)
    refs: dict[str, list] = {}
    audio: dict[str, str] = {}
    for e in sorted(entries, key=lambda e: float(e.segment[0])):
        call, side = sides[e.recording]
        refs.setdefault(f"{call}-{side}", []).append(e.text)
        audio[call] = e.audio
    items = []
    for call, path in audio.items():
        duration = sf.info(path).duration
        for side in (0, 1):
            start = 0.0
            while start < duration:
                end = min(start + chunk_s, duration)
                items.append(Item(f"{call}-{side}-{round(start * 1000):08d}", path, segment=(start, end), channel=side,
                                  fields={"stream": f"{call}-{side}", "start": start}))
                start = end
    return items, {k: " ".join(v) for k, v in refs.items()}


DELAYS_MS = (0, 120, 240, 360)


def framing(decoder, utterances: list, folder: Path, batch_size: int) -> dict:
    """CER of the utterances with each of DELAYS_MS of silence before them, and on how many the
    transcript is the same at every delay."""
    import numpy as np
    import soundfile as sf

    from nano8k import score as scoring
    from nano8k.decoding import Item

    refs = {key: text for key, _, text in utterances}
    hyps: dict[int, dict[str, str]] = {}
    for delay in DELAYS_MS:
        items = []
        for key, audio, text in utterances:
            x, rate = sf.read(audio, dtype="float32")
            path = folder / f"{delay}-{key}.wav"
            sf.write(path, np.concatenate([np.zeros(rate * delay // 1000, np.float32), x]), rate)
            items.append(Item(key, str(path), ref=text))
        hyps[delay] = {r["key"]: r["hyp"] or "" for r in decoder.decode(items, batch_size, progress=False)}
    return {"delays_ms": list(DELAYS_MS), "utterances": len(refs),
            "cer": [round(scoring.score_texts(refs, hyps[d]).cer, 4) for d in DELAYS_MS],
            "same_text_at_every_delay": sum(len({hyps[d][k] for d in DELAYS_MS}) == 1 for k in refs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=REPO / "runs" / "demo" / "stage1")
    parser.add_argument("--corpus", type=Path, default=REPO / "data" / "ivr" / "dev")
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--chunk-s", type=float, default=30.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--strategy", default="greedy", help="decode's strategy (greedy, speculative, joint, ctc)")
    parser.add_argument("--lexicon", type=Path, help="with --strategy joint: this word list as joint.lexicon, with the "
                                                     "demo's weights for it")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--speech-pad-ms", type=int, help="the VAD's padding of each segment (default: conf/vad/silero.yaml's)")
    parser.add_argument("--framing", action="store_true", help="also decode the corpus's utterances with silence put "
                                                                "before them (0-360 ms): the transcript's dependence on framing")
    args = parser.parse_args()
    if not (args.checkpoint / "summary.json").is_file():
        sys.exit(f"{args.checkpoint}: no trained run there; run `make demo` first (or give --checkpoint RUN)")

    import torch

    from nano8k import config, score as scoring
    from nano8k import vad
    from nano8k.decode import decode
    from nano8k.decoding import Decoder

    with tempfile.TemporaryDirectory(prefix="nano8k-bench-calls-") as tmp:
        folder = Path(tmp)
        kaldi = build_calls(corpus(args.corpus), folder, args.calls, args.minutes)
        vad_settings = config.shipped_defaults(vad.CONF)
        if args.speech_pad_ms is not None:
            vad_settings["speech_pad_ms"] = args.speech_pad_ms
        settings = {"checkpoint": str(args.checkpoint), "input": str(kaldi), "device": "cpu",
                    "batch_size": args.batch_size, "max_new_tokens": 64, "vad": vad_settings, "timestamps": False,
                    "strategy": args.strategy}
        if args.lexicon:
            sys.path.insert(0, str(REPO / "scripts"))
            import demo

            settings["joint"] = {**demo.LEXICON_JOINT, "lexicon": str(args.lexicon)}
        decoder = Decoder(settings)

        tick = time.perf_counter()
        outcome = decode(settings, folder / "vad-run", progress=False, decoder=decoder)
        vad_wall = time.perf_counter() - tick
        m = outcome.metrics

        # the truth's own segments, decoded as utterances: what a perfect segmenter would give
        oracle = decode({**settings, "vad": None}, folder / "oracle-run", progress=False, decoder=decoder).metrics

        items, refs = chunk_items(kaldi, args.chunk_s)
        tick = time.perf_counter()
        records = decoder.decode(items, args.batch_size, progress=False)
        chunk_wall = time.perf_counter() - tick
        by_stream: dict[str, list] = {}
        for r in sorted(records, key=lambda r: r["start"]):
            by_stream.setdefault(r["stream"], []).append(r)
        hyps = {s: " ".join(r["hyp"] or "" for r in rs) for s, rs in by_stream.items()}
        ctc_hyps = {s: " ".join(r.get("ctc_hyp") or "" for r in rs) for s, rs in by_stream.items()}
        chunk_scores = scoring.score_texts(refs, hyps).metrics()
        chunk_ctc = scoring.score_texts(refs, ctc_hyps).metrics()
        vad_ctc = scoring.score_records([{"key": c["call"], "ref": c["ref"], "hyp": " ".join(
            t.get("ctc_text") or "" for t in sorted(c["turns"], key=lambda t: (t["channel"], t["start"])))}
            for c in outcome.calls if "ref" in c]).metrics()
        delayed = None
        if args.framing:
            (folder / "framing").mkdir()
            delayed = framing(decoder, corpus(args.corpus), folder / "framing", args.batch_size)

    audio_h = m["audio_hours"]
    report = {
        "benchmark": "calls", "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                                          "torch": torch.__version__},
        "calls": args.calls, "minutes_per_call": args.minutes, "audio_hours": round(audio_h, 4),
        "channel_hours": round(m["channel_hours"], 4), "speech_ratio": round(m["speech_ratio"], 4),
        "checkpoint": str(args.checkpoint), "strategy": args.strategy, "lexicon": str(args.lexicon) if args.lexicon else None,
        "speech_pad_ms": vad_settings["speech_pad_ms"],
        "vad": {"segments": m["segments"], "wall_s": round(vad_wall, 2), "vad_s": m["vad_s"], "decode_s": m["decode_s"],
                "vad_share": round(m["vad_share"], 4), "audio_hours_per_compute_hour": round(audio_h * 3600 / vad_wall, 1),
                "rtf": round(vad_wall / (audio_h * 3600), 5), "cer": m.get("cer"), "ctc_cer": vad_ctc.get("cer"),
                "reference_segments_cer": (m.get("reference_segments") or {}).get("cer")},
        "chunks": {"chunk_s": args.chunk_s, "chunks": len(items), "wall_s": round(chunk_wall, 2),
                   "audio_hours_per_compute_hour": round(audio_h * 3600 / chunk_wall, 1),
                   "rtf": round(chunk_wall / (audio_h * 3600), 5), "cer": chunk_scores.get("cer"),
                   "ctc_cer": chunk_ctc.get("cer")},
        "oracle_segments": {"segments": oracle["utterances"], "cer": oracle.get("cer"),
                            "ctc_cer": (oracle.get("ctc") or {}).get("cer")},
        "speed_ratio_vad_over_chunks": round(chunk_wall / vad_wall, 3),
        "framing": delayed,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
