"""Helpers shared by test files (conftest.py keeps the fixtures and hooks)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


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
