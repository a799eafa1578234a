"""Ordered work over threads, with a rich progress bar on stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


R = TypeVar("R")


def map_ordered(fn: Callable[[T], R], items: Sequence[T], workers: int, label: str) -> list[R]:
    """fn over items, results in input order (whatever order the threads finish in); `workers`
    threads, and a rich progress bar on stderr when there are workers or stderr is a terminal."""
    if len(items) < 2 or (workers <= 1 and not sys.stderr.isatty()):
        return [fn(item) for item in items]
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    results: list[R] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(label, total=len(items))
        if workers <= 1:
            for item in items:
                results.append(fn(item))
                progress.advance(task)
            return results
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(fn, items):  # map yields in input order
                results.append(result)
                progress.advance(task)
    return results
