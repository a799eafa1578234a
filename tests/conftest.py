"""Shared test helpers: the CLI in-process, the CLI as a subprocess, and the seed spec's location."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
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


def tiny_corpus(root: Path, train: int, dev: int) -> dict:
    """A tiny model (`nano8k model tiny`) and train/dev manifests prepared from the first utterances
    of the bundled demo corpus: {"root", "model_dir", "train", "dev"}."""
    model_dir = root / "model"
    result = run_cli("model", "tiny", str(model_dir))
    assert result.code == 0, result.output
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


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> dict:
    """The tiny model with 12 train and 4 dev utterances, shared by the scale-out tests."""
    return tiny_corpus(tmp_path_factory.mktemp("small"), train=12, dev=4)


@pytest.fixture(autouse=True, scope="session")
def _isolated_check_cache(tmp_path_factory) -> None:
    """`nano8k train` caches its data check; keep the tests' cache out of the user's ~/.cache."""
    os.environ["NANO8K_CACHE_DIR"] = str(tmp_path_factory.mktemp("nano8k-cache"))


@pytest.fixture
def seed_spec() -> Path:
    if not SEED_SPEC.is_file():
        pytest.skip(f"the seed spec is not beside the repository ({SEED_SPEC})")
    return SEED_SPEC


class RunsCode:
    """What a crafted checkpoint can hold: unpickling it calls os.system (here: touch a file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# Test files that train or decode for minutes, started first: with pytest-xdist's --dist loadfile a
# long file that starts last leaves the other worker idle while it runs (make test on 2 cores).
LONG_FILES = ("test_learning.py", "test_faults.py", "test_pipeline.py", "test_trainer.py", "test_lora.py",
              "test_augment.py", "test_calls.py", "test_deepspeed.py", "test_sweep.py", "test_objective.py",
              "test_decode.py")


def pytest_collection_modifyitems(items: list) -> None:
    order = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: order.get(Path(str(item.fspath)).name, len(order)))  # stable: file order kept otherwise
