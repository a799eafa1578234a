"""Signals a training run must survive: SIGTERM (SLURM preemption, `scancel`, torchrun shutting its
workers down), SIGINT (Ctrl-C) and, under submitit, its preemption signal (USR2 unless
SUBMITIT_PREEMPT_SIGNAL says otherwise).

During start-up (until the trainer has built the model and starts touching the run's data) there
is nothing to save: a signal stops the process at once, after the clean-ups registered with
at_once() (status.json, the run directory's lock). Python's default SIGINT handler would raise
KeyboardInterrupt wherever the interpreter is, and `import funasr` loses it (a module it imports
catches every exception: 5 of 5 Ctrl-Cs during the import were lost, and the run trained to the
end). From defer() on, a signal is recorded, not acted on where it lands: the trainer finishes the
step it is in, writes a resumable checkpoint, and the job exits 143 (SIGTERM) or 130 (SIGINT) with
status.json saying `interrupted`; a second SIGINT aborts at once. Under submitit the preemption
signal is then handed to submitit's own handler, which requeues the job; the requeued job resumes
from the checkpoint.

Nothing here imports torch.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal, as a shell reports it

_received: list[int] = []
_previous: dict[int, Any] = {}
_clean_ups: list[Callable[[int], None]] = []
_deferred = False
_holding: list[bool] = []  # one entry per held() block open
_waiting: list[int] = []  # signals that came during a held() block
_stopped = ["during start-up: stopped; nothing was trained"]  # the line a signal before defer() ends with
_stopping = ["stopping after the current step, with a checkpoint"]  # ... and one after defer()


class Interrupted(Exception):
    """A stop the user or the cluster asked for; the run can be resumed."""

    def __init__(self, signum: int, message: str, details: dict | None = None):
        super().__init__(message)
        self.signum = signum
        self.details = {"signal": signal.Signals(signum).name, **(details or {})}

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 128 + int(self.signum))


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def preemption_signal() -> int | None:
    """submitit's preemption/timeout signal, in a job submitit started."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal, name if name.startswith("SIG") else f"SIG{name}", None)


def install(stopped: str = "during start-up: stopped; nothing was trained",
            stopping: str = "stopping after the current step, with a checkpoint") -> None:
    """Record SIGINT, SIGTERM (and submitit's preemption signal) from now on. Idempotent.
    `stopped`, `stopping`: what the one line a signal prints says after its name, before defer()
    (the process ends at once) and after it (the command stops at its next safe point)."""
    _stopped[0], _stopping[0] = stopped, stopping
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread (joblib workers, ...)
    for signum in (signal.SIGINT, signal.SIGTERM, preemption_signal()):
        if signum is not None and signal.getsignal(signum) is not _record:
            _previous[signum] = signal.getsignal(signum)
            signal.signal(signum, _record)


def at_once(clean_up: Callable[[int], None]) -> None:
    """Run clean_up(signum) before a signal ends the process during start-up (until forget())."""
    _clean_ups.append(clean_up)


def forget(clean_up: Callable[[int], None]) -> None:
    if clean_up in _clean_ups:
        _clean_ups.remove(clean_up)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Signals wait until the block ends, then are acted on: for a step that must not be cut in
    two, e.g. a lock file written but not yet registered for clean-up, or an export's swap. Two
    layers: the signals are blocked in this thread, and nano8k's handler only records one that
    comes during the block: blocking alone does not hold once the process has a second thread
    (torch's OpenMP pool, a loader's), since the kernel then delivers the signal there and Python
    still runs the handler in the main thread at once."""
    wanted = {signal.SIGINT, signal.SIGTERM} | ({preemption_signal()} if preemption_signal() else set())
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    _holding.append(True)
    try:
        yield
    finally:
        _holding.pop()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a signal blocked until now is delivered here
        while not _holding and _waiting:
            _record(_waiting.pop(0), None)


@contextlib.contextmanager
def job(clean_up: Callable[[int], None]) -> Iterator[None]:
    """One job (of a run or a sweep): start-up stops at once, with clean_up, until defer()."""
    global _deferred
    _deferred = False
    at_once(clean_up)
    try:
        yield
    finally:
        forget(clean_up)
        _deferred = False


def defer() -> None:
    """From now on a signal is acted on between training steps (the run has state to save)."""
    global _deferred
    _deferred = True


@contextlib.contextmanager
def passed_to(start: Callable[[], Any]) -> Iterator[Any]:
    """Start a child process (start(): a Popen in its own session, so a terminal's Ctrl-C reaches
    this process only) that has the state to save: while the block runs, every signal this process
    gets is passed on to the child and none is acted on here; the first is recorded (pending()).
    A second Ctrl-C passed on aborts the child, as it would a run started by hand."""
    started: list[Any] = []
    early: list[int] = []  # signals that came while the child was being started

    def pass_on(signum: int, frame: Any) -> None:
        if not _received:
            _received.append(signum)
        if not started:
            early.append(signum)
        for child in started:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    wanted = [s for s in (signal.SIGINT, signal.SIGTERM, preemption_signal()) if s is not None]
    saved = {signum: signal.signal(signum, pass_on) for signum in wanted}
    try:
        # (not under held(): a child inherits the blocked signal mask through exec)
        started.append(start())
        for signum in early:
            with contextlib.suppress(ProcessLookupError):
                started[0].send_signal(signum)
        yield started[0]
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _record(signum: int, frame: Any) -> None:
    if _holding:  # inside held(): acted on when the block ends
        _waiting.append(signum)
        return
    name = signal.Signals(signum).name
    if not _deferred and signum != preemption_signal():  # submitit's is left for the requeue after start-up
        _say(f"nano8k: {name} {_stopped[0]}")
        for clean_up in reversed(_clean_ups):
            try:
                clean_up(signum)
            except Exception as err:  # noqa: BLE001 - the process ends either way; say what was left undone
                _say(f"nano8k: {name}: could not finish {getattr(clean_up, '__qualname__', clean_up)} before stopping "
                     f"({type(err).__name__}: {err})")
        os._exit(EXIT_CODES.get(signum, 128 + int(signum)))
    if signum == signal.SIGINT and signal.SIGINT in _received:
        _say(f"nano8k: {name} again: aborted at once (no checkpoint of the last steps)")
        os._exit(EXIT_CODES[signal.SIGINT])
    _received.append(signum)
    again = "; Ctrl-C again aborts at once" if signum == signal.SIGINT else ""
    _say(f"nano8k: {name} received: {_stopping[0]}{again}")


def _say(line: str) -> None:
    """One line to standard error from the signal handler: written to the file descriptor, not
    through sys.stderr, whose buffered writer the interrupted code may be inside (a second write
    there raises "reentrant call", and the signal would be lost)."""
    with contextlib.suppress(Exception):  # what the code wrote before comes first, where it can
        sys.stderr.flush()
    with contextlib.suppress(OSError):
        os.write(2, (line + "\n").encode("utf-8", "replace"))


def pending() -> int | None:
    """The first signal received and not yet acted on, or None."""
    return _received[0] if _received else None


def stop_if_requested(where: str) -> None:
    """Before training starts: nothing to save, stop now."""
    signum = pending()
    if signum is not None:
        raise Interrupted(signum, f"interrupted by {signal.Signals(signum).name} {where}; nothing was trained",
                          {"during": where})


def hand_over(signum: int) -> None:
    """After the checkpoint: the handler that was there before nano8k's gets the signal (submitit's
    requeues the job and exits)."""
    previous = _previous.get(signum)
    if callable(previous) and signum == preemption_signal():
        previous(signum, None)
