"""Ordered work over threads, and the one progress bar of long work (rich, on stderr)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


R = TypeVar("R")


def map_ordered(fn: Callable[[T], R], items: Sequence[T], workers: int, label: str) -> list[R]:
    """fn over items, results in input order (whatever order the threads finish in); `workers`
    threads, and a rich progress bar on stderr when there are workers or stderr is a terminal."""
    if len(items) < 2 or (workers <= 1 and not sys.stderr.isatty()):
        return [fn(item) for item in items]
    results: list[R] = []
    with progress_bar(label, len(items)) as advance:
        if workers <= 1:
            for item in items:
                results.append(fn(item))
                advance(1)
            return results
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(fn, items):  # map yields in input order
                results.append(result)
                advance(1)
    return results


def progress(fields: str = "", transient: bool = True, enabled: bool = True) -> Any:
    """nano8k's one progress display (a rich Progress), on stderr so that stdout stays the
    command's output: the task's description, the bar, done of total, the time elapsed, then
    `fields` (a format over the task's fields, e.g. the training loop's loss and learning rate) or
    else the time remaining. transient: gone when the work ends."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn(fields) if fields else TimeRemainingColumn(), console=Console(stderr=True),
                    transient=transient, disable=not enabled)


@contextlib.contextmanager
def progress_bar(label: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Long work's progress: LABEL, the bar, done of total, time elapsed and remaining; gone when
    the work ends. Yields advance(n)."""
    bar = progress(transient=True, enabled=enabled)
    with bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
