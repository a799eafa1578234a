"""Errors meant for users: printed as one line, never as a traceback."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class UserError(Exception):
    """An expected failure (bad config, missing file, no GPU). Its message is the whole report."""


@contextlib.contextmanager
def reported(exit_code: int = 2) -> Iterator[None]:
    """Turn a UserError into `error: <message>` on stderr and a non-zero exit status."""
    try:
        yield
    except UserError as err:
        for line in str(err).splitlines():
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(exit_code) from None


def one_line(err: BaseException | str, limit: int = 300) -> str:
    """An exception's message on one line, cut to `limit` characters (for one-line reports)."""
    text = " ".join(str(err).split())
    return text[:limit] + ("…" if len(text) > limit else "")
