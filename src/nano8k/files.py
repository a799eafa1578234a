"""Files nano8k writes: atomically (readers see the old file or the new one, never half of one),
with the mode a plain open() gives (the umask honoured)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from nano8k.errors import UserError, one_line


def json_safe(obj: Any) -> Any:
    """`obj` with every non-finite float as None (strict JSON has no NaN: a diverged loss, a rate
    over an empty set, and readers other than Python's reject a bare NaN) and numpy scalars as
    Python numbers."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and type(obj).__module__ == "numpy":
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json_atomic(path: Path, obj: Any) -> None:
    """Strict JSON (UTF-8, indented, non-finite numbers as null), written atomically; a failed
    write is one line."""
    text = json.dumps(json_safe(obj), ensure_ascii=False, indent=2, allow_nan=False) + "\n"
    try:
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
    except OSError as err:
        raise UserError(f"{path}: cannot write ({err.strerror or one_line(err)})") from None


def write_jsonl_atomic(path: Path, records: Iterable[dict]) -> None:
    """Write JSON lines to a temporary file beside `path`, then rename it into place."""
    write_lines_atomic(path, (json.dumps(record, ensure_ascii=False) for record in records))


def write_lines_atomic(path: Path, lines: Iterable[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[str]:
    """A temporary path beside `path` to write to, renamed over `path` when the block succeeds
    (readers see the old file or the new one, never half of one) and removed when it fails. The
    file gets the mode a plain open() would give it: mkstemp's 0600 would ignore the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process's umask, read without setting it (os.umask sets it, racing other threads).
    Read as bytes: a start-up signal's clean-up writes status.json through here, possibly while
    the code it interrupted is itself importing a codec, and a second lookup of that codec then
    fails (test_faults: a clean-up interrupting the first lookup of ascii)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_yaml(path: Path, what: str = "YAML file") -> dict:
    """A YAML mapping from `path` ({} for an empty file); one line naming the file when it cannot
    be read, is not YAML, or holds something other than a mapping."""
    import yaml

    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read the {what} ({one_line(err)})") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({one_line(err, 200)})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: a {what} holds a mapping of keys, not a {type(loaded).__name__}")
    return loaded
