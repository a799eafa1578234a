"""Fixtures and hooks (shared helpers: tests/helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import SEED_SPEC, tiny_corpus


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The default tiny model (`nano8k model tiny`, seed 0), written once per test process and
    shared by every fixture that only reads it (nano8k never writes into a model directory)."""
    from nano8k import tiny

    return tiny.write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory, tiny_model) -> dict:
    """The tiny model with 12 train and 4 dev utterances, shared by the scale-out tests."""
    return tiny_corpus(tmp_path_factory.mktemp("small"), train=12, dev=4, model_dir=tiny_model)


@pytest.fixture(autouse=True, scope="session")
def _isolated_check_cache(tmp_path_factory) -> None:
    """`nano8k train` caches its data check; keep the tests' cache out of the user's ~/.cache."""
    os.environ["NANO8K_CACHE_DIR"] = str(tmp_path_factory.mktemp("nano8k-cache"))


@pytest.fixture
def seed_spec() -> Path:
    if not SEED_SPEC.is_file():
        pytest.skip(f"the seed spec is not beside the repository ({SEED_SPEC})")
    return SEED_SPEC


# Test files that train or decode for minutes, started first: with pytest-xdist's --dist loadfile a
# long file that starts last leaves the other worker idle while it runs (make test on 2 cores).
LONG_FILES = ("test_learning.py", "test_faults.py", "test_pipeline.py", "test_trainer.py", "test_lora.py", "test_export.py",
              "test_augment.py", "test_calls.py", "test_deepspeed.py", "test_sweep.py", "test_objective.py",
              "test_decode.py")


def pytest_collection_modifyitems(items: list) -> None:
    order = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: order.get(Path(str(item.fspath)).name, len(order)))  # stable: file order kept otherwise
