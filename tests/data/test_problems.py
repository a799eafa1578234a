"""The reason tables are the checked source of the reasons: every reason prepare and simulate
can give a line has a meaning there, and their summaries print it."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

from nano8k import data, simulate

SOURCE = REPO / "src" / "nano8k"


def reasons_given(*modules: Path) -> set[str]:
    """The reason names (snake_case string constants) passed to Problem, AudioProblem, Rejected
    (the telephone line's) or simulate's _problem in the modules, and the (reason, detail) pairs
    they build as tuples."""
    found: set[str] = set()
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                    "Problem", "AudioProblem", "Rejected", "_problem"):
                args = node.args
            elif isinstance(node, ast.Tuple) and len(node.elts) == 2:
                args = node.elts[:1]
            else:
                continue
            found |= {a.value for a in args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                      and a.value.replace("_", "").isalpha() and a.value.islower() and "_" in a.value}
    return found


def test_every_reason_prepare_gives_has_a_meaning():
    given = reasons_given(*(SOURCE / "data" / f"{m}.py" for m in ("sources", "preparing", "audio")))
    assert {"duplicate_key", "segment_out_of_range", "no_recording"} <= given  # the scan finds them
    # a Nano line with several audio files: only simulate reads Nano lines (prepare writes them)
    assert given - set(data.PREPARE_REASONS) == {"multiple_audio"}


def test_every_reason_simulate_gives_has_a_meaning():
    given = reasons_given(SOURCE / "simulate.py", SOURCE / "telephone_line.py",
                          *(SOURCE / "data" / f"{m}.py" for m in ("sources", "audio")))
    assert {"bad_key", "silent_audio"} <= given
    assert given - set(simulate.REASONS) == set()


def test_the_summary_says_what_each_reason_means(tmp_path):
    problems = [data.Problem("in.jsonl", 3, "a", "duplicate_key", "first at in.jsonl:1"),
                data.Problem("in.jsonl", 4, "b", "missing_audio", "x.wav")]
    report = data.PrepareReport(tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "out.rejects.jsonl", "jsonl",
                                written=5, rejects=problems)
    lines = report.summary().splitlines()
    assert f"2 rejected, listed in {tmp_path / 'out.rejects.jsonl'}:" in lines
    assert f"  duplicate_key 1: {data.PREPARE_REASONS['duplicate_key']}" in lines
    assert f"  missing_audio 1: {data.PREPARE_REASONS['missing_audio']}" in lines
