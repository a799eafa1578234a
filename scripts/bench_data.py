#!/usr/bin/env python3
"""Data throughput (a benchmark printing JSON, not a timed test).

1. `nano8k data simulate` (nano8k.simulate.simulate_corpus) against a sox command chain doing the
   same steps on the same files in the same run: 16 kHz speech-like WAVs -> 8 kHz -> band-pass
   300-3400 Hz -> + white noise -> G.711 mu-law WAV. Targets: >= 300x real time per core, and not
   slower than sox.
2. `nano8k data prepare` (nano8k.data.prepare) on 10,000 utterances (a Kaldi dir of short 8 kHz
   WAVs, the tiny model's tokenizer), in a fresh Python process, imports included. Target: <= 30 s.

"x real time per core" = seconds of audio / CPU seconds (user + system) spent on them, with one
worker: nano8k's own process time for nano8k (plus its sox children for the gsm preset); for sox, the getrusage(RUSAGE_CHILDREN) of every sox
process (and of the noise generators sox itself starts), which the script waits for. Wall-clock
figures are given beside: audio seconds / (wall seconds x workers). Both sides read the same input
files and write their outputs to the same disk; files are written fresh (new names) each run.

The sox chains (per file; DUR = the file's duration, the noise gain gives about 25 dB SNR):

    pipeline (the same order as nano8k: noise after the band-pass, at 8 kHz; 3 sox processes)
      sox IN -t sox - rate 8k sinc 300-3400 |
      sox -m -v 1 -t sox - -v G "|sox -n -r 8000 -c 1 -t sox - synth DUR whitenoise" -e u-law -b 8 OUT
    mixed-first (sox's usual one-liner: noise mixed at the input rate, then filtered; 2 processes)
      sox -m -v 1 IN -v G "|sox -n -r 16000 -c 1 -t sox - synth DUR whitenoise" -e u-law -b 8 OUT rate 8k sinc 300-3400

The ratio is taken against the faster of the two. sox is needed for part 1 (Debian/Ubuntu:
`apt-get install sox`, used for this benchmark and for the gsm/amr-nb codecs only); without it the
sox side is reported as missing.

usage: scripts/bench_data.py [--files 150] [--prepare-utterances 10000] [--workers N] [--no-sox]
                             [--no-prepare] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from nano8k import data
from nano8k import telephone_line as telephone
from nano8k import simulate as sim

NOISE_GAIN = 0.01  # sox whitenoise is ~uniform full scale: ~ -35 dBFS, speech here ~ -12 dBFS active


def speechlike(fs: int, seconds: float, seed: int) -> np.ndarray:
    """A gliding-pitch harmonic complex with syllable-rate modulation and a little noise."""
    rng = np.random.default_rng(seed)
    n = int(fs * seconds)
    t = np.arange(n) / fs
    f0 = 110 + 60 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / fs
    x = sum(np.sin(k * phase) / k for k in range(1, 30) if k * 170 < fs / 2)
    x = x * (0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)) + 0.005 * rng.standard_normal(n)
    return (0.25 * x / np.max(np.abs(x))).astype(np.float32)


def make_sim_corpus(root: Path, files: int, rate: int = 16000) -> tuple[Path, float]:
    kaldi = root / "kaldi"
    (root / "in").mkdir(parents=True)
    kaldi.mkdir()
    rng = np.random.default_rng(0)
    total = 0.0
    rows = []
    for i in range(files):
        seconds = float(rng.uniform(3.0, 9.0))
        path = root / "in" / f"u{i:05d}.wav"
        x = speechlike(rate, seconds, i)
        sf.write(path, x, rate, subtype="PCM_16")
        total += len(x) / rate
        rows.append(data.KaldiRow(f"u{i:05d}", str(path), "some words"))
    data.write_kaldi(kaldi, rows)
    return kaldi, total


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bench_nano8k(kaldi: Path, out: Path, settings: telephone.SimulationSettings, audio_s: float, workers: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    wall0, cpu0 = time.perf_counter(), self_cpu() + children_cpu()
    report = sim.simulate_corpus(kaldi, out, settings, workers=workers, seed=0, progress=False)
    wall, cpu = time.perf_counter() - wall0, self_cpu() + children_cpu() - cpu0
    if report.rejected:
        raise SystemExit(f"nano8k simulate rejected {report.rejected} files: {report.summary()}")
    result = {"workers": workers, "wall_s": round(wall, 3), "x_rt_per_core_wall": round(audio_s / (wall * workers), 1)}
    if workers == 1:  # in-process: our CPU time (and that of the sox codec processes we wait for) is all of it
        result.update(cpu_s=round(cpu, 3), x_rt_per_core_cpu=round(audio_s / cpu, 1))
    return result


def sox_pipeline(inp: Path, out: Path, seconds: float) -> None:
    first = subprocess.Popen(["sox", "-V1", str(inp), "-t", "sox", "-", "rate", "8k", "sinc", "300-3400"],
                             stdout=subprocess.PIPE)
    noise = f"|sox -n -r 8000 -c 1 -t sox - synth {seconds:.4f} whitenoise"
    second = subprocess.run(["sox", "-V1", "-m", "-v", "1", "-t", "sox", "-", "-v", str(NOISE_GAIN), noise,
                             "-e", "u-law", "-b", "8", str(out)], stdin=first.stdout)
    first.stdout.close()
    if first.wait() != 0 or second.returncode != 0:
        raise SystemExit(f"sox pipeline failed on {inp}")


def sox_mixed_first(inp: Path, out: Path, seconds: float, rate: int = 16000) -> None:
    noise = f"|sox -n -r {rate} -c 1 -t sox - synth {seconds:.4f} whitenoise"
    subprocess.run(["sox", "-V1", "-m", "-v", "1", str(inp), "-v", str(NOISE_GAIN), noise, "-e", "u-law", "-b", "8",
                    str(out), "rate", "8k", "sinc", "300-3400"], check=True)


def bench_sox(kaldi: Path, out: Path, audio_s: float, chain) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    items = [(key, found.value) for key, found in data.read_keyed(kaldi / "wav.scp", [], "audio path").items()]
    wall0, cpu0 = time.perf_counter(), children_cpu()
    for key, path in items:
        chain(Path(path), out / f"{key}.wav", sf.info(path).duration)
    wall, cpu = time.perf_counter() - wall0, children_cpu() - cpu0
    return {"workers": 1, "wall_s": round(wall, 3), "x_rt_per_core_wall": round(audio_s / wall, 1),
            "cpu_s": round(cpu, 3), "x_rt_per_core_cpu": round(audio_s / cpu, 1), "processes_per_file":
            3 if chain is sox_pipeline else 2}


def check_outputs_match(nano: Path, sox: Path) -> dict:
    """Sanity: both sides wrote 8 kHz mu-law files of the same lengths."""
    names = sorted(p.name for p in (sox).iterdir())
    a = [sf.info(nano / "wav" / n) for n in names]
    b = [sf.info(sox / n) for n in names]
    return {"files": len(names), "same_lengths": all(x.frames == y.frames for x, y in zip(a, b)),
            "formats": sorted({f"{x.samplerate} Hz {x.subtype}" for x in a + b})}


PREPARE_CODE = """
import json, sys, time
t0 = time.perf_counter()
from nano8k import data
report = data.prepare(sys.argv[1], sys.argv[2], sys.argv[3], workers=int(sys.argv[4]))
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": round(wall, 3), "written": report.written, "rejected": report.rejected}))
"""


def make_prepare_corpus(root: Path, n: int) -> Path:
    """n short 8 kHz WAVs (0.5-2 s: 4 distinct files' bytes, written raw) + a Kaldi dir."""
    kaldi = root / "kaldi"
    (root / "wav").mkdir(parents=True)
    kaldi.mkdir()
    blobs = []
    for i, seconds in enumerate((0.5, 1.0, 1.5, 2.0)):
        buf = io.BytesIO()
        sf.write(buf, speechlike(8000, seconds, i), 8000, subtype="PCM_16", format="WAV")
        blobs.append(buf.getvalue())
    words = "hello thank you for calling customer support my card was blocked please hold".split()
    rows = []
    for i in range(n):
        path = root / "wav" / f"utt{i:06d}.wav"
        path.write_bytes(blobs[i % len(blobs)])
        rows.append(data.KaldiRow(f"utt{i:06d}", str(path), " ".join(words[(i + k) % len(words)] for k in range(3 + i % 7))))
    data.write_kaldi(kaldi, rows)
    return kaldi


def bench_prepare(root: Path, n: int, workers_list: list[int]) -> dict:
    from nano8k.tiny import write_tokenizer

    t0 = time.perf_counter()
    kaldi = make_prepare_corpus(root, n)
    tokenizer = root / "tokenizer"
    write_tokenizer(tokenizer)
    result = {"utterances": n, "corpus_build_s": round(time.perf_counter() - t0, 2), "target_s": 30.0, "runs": []}
    for workers in workers_list:
        out = root / f"train{workers}.jsonl"
        proc = subprocess.run([sys.executable, "-c", PREPARE_CODE, str(kaldi), str(out), str(tokenizer), str(workers)],
                              capture_output=True, text=True)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"prepare failed: {proc.stderr[-2000:]}")
        run = json.loads(proc.stdout.strip().splitlines()[-1])
        run["workers"] = workers
        result["runs"].append(run)
    best = min(r["wall_s"] for r in result["runs"])
    result["best_wall_s"] = best
    result["meets_target"] = best <= result["target_s"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=150, help="simulate: 16 kHz files of 3-9 s")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="simulate: also run with this many")
    ap.add_argument("--prepare-utterances", type=int, default=10000)
    ap.add_argument("--no-sox", action="store_true")
    ap.add_argument("--no-prepare", action="store_true")
    ap.add_argument("--keep", type=Path, help="work here (kept) instead of a temporary directory")
    args = ap.parse_args()

    import scipy
    import soxr

    have_sox = shutil.which("sox") is not None and not args.no_sox
    sox_version = subprocess.run(["sox", "--version"], capture_output=True, text=True).stdout.strip() if have_sox else None
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "numpy": np.__version__, "scipy": scipy.__version__, "soxr": soxr.__version__,
                    "soundfile": sf.__version__, "sox": sox_version},
        "definition": "x_rt_per_core_cpu = audio seconds / CPU seconds (user+sys) with 1 worker; "
                      "x_rt_per_core_wall = audio seconds / (wall seconds x workers)",
    }
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="bench_data."))
    try:
        kaldi, audio_s = make_sim_corpus(tmp / "sim", args.files)
        matched = telephone.SimulationSettings(codec="mulaw", level_db=None, line_snr_db=(20.0, 30.0))
        part: dict = {"files": args.files, "audio_s": round(audio_s, 1), "input": "16 kHz PCM16 WAV",
                      "chain": "resample 8 kHz, band-pass 300-3400 Hz, white noise, G.711 mu-law WAV",
                      "target_x_rt_per_core": 300.0}
        bench_nano8k(kaldi, tmp / "warmup", matched, audio_s, 1)  # page cache, imports
        part["nano8k"] = bench_nano8k(kaldi, tmp / "nano8k", matched, audio_s, 1)
        if args.workers > 1:  # the first pool starts the forkserver (imports numpy/scipy once): timed apart
            part["nano8k_parallel_first_call"] = bench_nano8k(kaldi, tmp / "nano8k_par0", matched, audio_s, args.workers)
            part["nano8k_parallel"] = bench_nano8k(kaldi, tmp / "nano8k_par", matched, audio_s, args.workers)
        part["nano8k_presets"] = {name: bench_nano8k(kaldi, tmp / f"p_{name}", telephone.PRESETS[name], audio_s, 1)
                                  ["x_rt_per_core_cpu"] for name in ("clean_g711", "noisy_call", "lossy_voip",
                                                                     "seed_like")}
        if have_sox:
            part["sox_pipeline"] = bench_sox(kaldi, tmp / "sox_pipe", audio_s, sox_pipeline)
            part["sox_mixed_first"] = bench_sox(kaldi, tmp / "sox_mix", audio_s, sox_mixed_first)
            best = max(part["sox_pipeline"]["x_rt_per_core_cpu"], part["sox_mixed_first"]["x_rt_per_core_cpu"])
            best_wall = max(part["sox_pipeline"]["x_rt_per_core_wall"], part["sox_mixed_first"]["x_rt_per_core_wall"])
            part["ratio_vs_fastest_sox_cpu"] = round(part["nano8k"]["x_rt_per_core_cpu"] / best, 2)
            part["ratio_vs_fastest_sox_wall"] = round(part["nano8k"]["x_rt_per_core_wall"] / best_wall, 2)
            part["outputs"] = check_outputs_match(tmp / "nano8k", tmp / "sox_pipe")
            part["meets_target"] = (part["nano8k"]["x_rt_per_core_cpu"] >= 300 and part["ratio_vs_fastest_sox_cpu"] >= 1)
            if telephone.sox_formats() and "gsm" in telephone.sox_formats():
                part["nano8k_presets"]["gsm"] = bench_nano8k(
                    kaldi, tmp / "p_gsm", telephone.PRESETS["gsm"], audio_s, 1)["x_rt_per_core_cpu"]
        else:
            part["sox"] = "not measured: --no-sox, or sox not installed (apt-get install sox)"
            part["meets_target"] = part["nano8k"]["x_rt_per_core_cpu"] >= 300
        results["simulate"] = part
        if not args.no_prepare:
            results["prepare"] = bench_prepare(tmp / "prep", args.prepare_utterances,
                                               sorted({1, args.workers}))
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
