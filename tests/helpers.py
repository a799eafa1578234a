"""Helpers shared by test files (conftest.py keeps the fixtures and hooks)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable


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
