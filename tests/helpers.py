"""Helpers shared by test files (conftest.py keeps the fixtures and hooks): where things are, the
CLI in-process and as a subprocess, a tiny corpus, a crafted checkpoint, commands stopped at a
state, a sharpened tiny model."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from nano8k.cli import app

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SEED_SPEC = SHARED / "spec" / "config-alignment.md"
NANO8K = Path(sys.executable).with_name("nano8k")


class Result:
    def __init__(self, code: int, stdout: str, stderr: str):
        self.code, self.stdout, self.stderr = code, stdout, stderr

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def invoke(*args: str) -> Result:
    """Run `nano8k ARGS` in-process (Typer's CliRunner), with stdout and stderr kept apart."""
    try:
        result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    finally:
        _forget_closed_log_streams()
    return Result(result.exit_code, result.stdout, result.stderr)


def _forget_closed_log_streams() -> None:
    """A Hydra app run in-process (e.g. `--info`) configures logging onto CliRunner's captured
    streams, which close when the invocation ends; a later in-process run would log into them
    (`--- Logging error ---` on stderr). A real process runs one command: only tests need this."""
    import logging

    loggers = [logging.getLogger()] + [v for v in logging.Logger.manager.loggerDict.values()
                                       if isinstance(v, logging.Logger)]
    for logger in loggers:
        for handler in list(logger.handlers):
            stream = getattr(handler, "stream", None)
            if stream is not None and getattr(stream, "closed", False):
                logger.removeHandler(handler)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 120) -> Result:
    """Run the installed `nano8k` console script as a real subprocess."""
    base = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}  # `import funasr` sets it
    proc = subprocess.run([str(NANO8K), *args], capture_output=True, text=True, cwd=cwd or REPO,
                          env={**base, **(env or {})}, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def tiny_corpus(root: Path, train: int, dev: int, model_dir: Path) -> dict:
    """Train/dev manifests prepared for `model_dir` (conftest's tiny_model: the tests' one default
    tiny model, never written to) from the first utterances of the bundled demo corpus:
    {"root", "model_dir", "train", "dev"}."""
    out = {"root": root, "model_dir": model_dir}
    for split, n in (("train", train), ("dev", dev)):
        kaldi = root / f"kaldi_{split}"
        kaldi.mkdir(parents=True)
        demo = REPO / "data" / "demo" / split
        scp = [line.split(maxsplit=1) for line in (demo / "wav.scp").read_text().splitlines()[:n]]
        (kaldi / "wav.scp").write_text("".join(f"{key} {(demo / path).resolve()}\n" for key, path in scp))
        (kaldi / "text").write_text("\n".join((demo / "text").read_text().splitlines()[:n]) + "\n")
        result = run_cli("data", "prepare", str(kaldi), str(root / f"{split}.jsonl"), "--model-dir", str(model_dir))
        assert result.code == 0, result.output
        out[split] = root / f"{split}.jsonl"
    return out


LORA_STAGE = "stage3_lora_domain"


def train_lora(corpus: dict, run_dir: Path, *extra: str) -> Result:
    """One epoch of stage 3 (LoRA, bf16 LLM) on a tiny_corpus, no validation decoding."""
    return run_cli("train", f"+stage={LORA_STAGE}", "+preset=tiny", f"model_dir={corpus['model_dir']}",
                   f"train_data_set_list={corpus['train']}", f"valid_data_set_list={corpus['dev']}",
                   "train_conf.max_epoch=1", "scheduler_conf.warmup_steps=2", "train_conf.accum_grad=1",
                   "llm_conf.llm_dtype=bf16", "valid_decode.max_utterances=0", f"hydra.run.dir={run_dir}", *extra,
                   timeout=600)


def weights_in(path: Path) -> dict:
    """A checkpoint file's tensors, read as a user's file is (weights_only)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state)


class RunsCode:
    """What a crafted checkpoint can hold: unpickling it calls os.system (here: touch a file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def stopped_when(command: list[str], ready: Callable[[], bool], timeout: float = 300) -> subprocess.Popen:
    """Starts `command` and stops it (SIGSTOP) as soon as `ready()` holds, or it ended, or
    `timeout` passed, so that what the test does next (a signal, a second command) meets the
    state the test saw, however fast the command runs. Resume it with `resume`."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGSTOP)
    return proc


def resume(proc: subprocess.Popen, signum: int | None = None) -> None:
    """Sends `signum` (if any) to a process `stopped_when` stopped, then lets it go on: the signal
    is handled as it resumes."""
    if signum is not None:
        proc.send_signal(signum)
    proc.send_signal(signal.SIGCONT)


def sharpen(src: Path, dst: Path) -> Path:
    """A copy of the tiny model whose LLM and adaptor have large random weights. The tiny model's
    0.02-scale LLM answers every utterance with the same token, which would hide a padding bug;
    these weights make each hypothesis depend on its audio and on its position ids."""
    import torch

    shutil.copytree(src, dst)
    state = torch.load(dst / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    generator = torch.Generator().manual_seed(0)
    for name, value in state.items():
        if name.startswith(("llm.", "audio_adaptor.")) and value.is_floating_point() and value.ndim >= 2:
            state[name] = torch.randn(value.shape, generator=generator) * 0.3
    if "llm.lm_head.weight" in state:  # tied to the embeddings, as in the model
        state["llm.lm_head.weight"] = state["llm.model.embed_tokens.weight"]
    torch.save({"state_dict": state}, dst / "model.pt")
    return dst
