"""Every command of the README's data and scoring sections, run as written (MODEL: the tiny model)
as a real subprocess, in a directory holding the files the commands name."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import REPO, run_cli

pytestmark = pytest.mark.funasr  # `nano8k model tiny`, a real tokenizer: not in `make test-fast`

DEMO = REPO / "data" / "demo" / "train"
SECTIONS = ("## Data", "## Scoring")


def readme_commands(section: str) -> list[str]:
    """The `nano8k ...` lines of the bash blocks of one README section (comments dropped)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    body = text.split(f"\n{section}", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", body, re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("nano8k "):
                commands.append(line)
    return commands


def demo_utterances(n: int) -> list[tuple[str, Path, str]]:
    scp = [line.split() for line in (DEMO / "wav.scp").read_text().splitlines()[:n]]
    text = dict(line.split(maxsplit=1) for line in (DEMO / "text").read_text().splitlines())
    return [(key, (DEMO / path).resolve(), text[key]) for key, path in scp]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """calls/ (Kaldi, paths relative to itself), prompts/ (Asterisk raw files + .txt), recipe/
    (Kaldi paths relative to the recipe root), clean_16k/ (a folder of 16 kHz audio + .txt), and the
    scoring inputs: ref.txt, hyp.txt, results.jsonl, keywords.txt, baseline/ and candidate/."""
    root = tmp_path_factory.mktemp("readme")
    utts = demo_utterances(6)
    (root / "audio").mkdir()
    for key, path, _ in utts:
        shutil.copy(path, root / "audio" / f"{key}.wav")
    calls = root / "calls"
    calls.mkdir()
    (calls / "wav.scp").write_text("".join(f"{k} ../audio/{k}.wav\n" for k, _, _ in utts))
    (calls / "text").write_text("".join(f"{k} {t}\n" for k, _, t in utts))
    prompts = root / "prompts"
    prompts.mkdir()
    for (key, path, text), (suffix, subtype) in zip(utts, (("gsm", "GSM610"), ("ulaw", "ULAW"), ("alaw", "ALAW"),
                                                           ("sln", "PCM_16"), ("raw", "PCM_16"))):
        samples, rate = sf.read(path, dtype="float32")
        sf.write(prompts / f"{key}.{suffix}", samples, rate, format="RAW", subtype=subtype)
        (prompts / f"{key}.txt").write_text(text + "\n")
    train = root / "recipe" / "data" / "train"
    train.mkdir(parents=True)
    (root / "recipe" / "audio").symlink_to(root / "audio")
    (train / "wav.scp").write_text("".join(f"{k} audio/{k}.wav\n" for k, _, _ in utts))
    (train / "text").write_text("".join(f"{k} {t}\n" for k, _, t in utts))
    clean = root / "clean_16k"
    clean.mkdir()
    for key, path, text in utts[:3]:
        samples, rate = sf.read(path, dtype="float32")
        sf.write(clean / f"{key}.flac", np.repeat(samples, 2), 16000)
        (clean / f"{key}.txt").write_text(text + "\n")

    (root / "ref.txt").write_text("".join(f"{k} {t}\n" for k, _, t in utts))
    (root / "hyp.txt").write_text("".join(f"{k} {t if i % 2 else t.split(' ', 1)[-1]}\n"
                                          for i, (k, _, t) in enumerate(utts)))
    (root / "keywords.txt").write_text("# account words\naccount\npassword\n")
    for name, damage in (("baseline", 0), ("candidate", 1)):
        (root / name).mkdir()
        rows = []
        for i, (key, _, text) in enumerate(utts):
            hyp = text.split(" ", 1)[-1] if (i + damage) % 3 == 0 else text
            rows.append({"key": key, "ref": text, "hyp": hyp, "duration": 1.0 + i,
                         "channel": {"codec": "mulaw" if i % 2 else "alaw", "snr_db": 5.0 + 4 * i}})
        (root / name / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.copy(root / "baseline" / "results.jsonl", root / "results.jsonl")
    model = root / "model"
    result = run_cli("model", "tiny", str(model))
    assert result.code == 0, result.output
    return root


@pytest.mark.parametrize("section", SECTIONS)
def test_every_readme_example_runs_as_written(workdir, section):
    commands = readme_commands(section)
    assert len(commands) >= 3, f"{section}: no examples found"
    for command in commands:
        args = [str(workdir / "model") if a == "MODEL" else a for a in shlex.split(command)[1:]]
        result = run_cli(*args, cwd=workdir, timeout=300)
        assert result.code == 0, f"{command}\n{result.output}"
        assert "Traceback" not in result.output, command
    if section == "## Data":
        # what the examples promise: raw prompts read, recipe paths found, channel parameters carried
        prompts = [json.loads(line) for line in (workdir / "prompts.jsonl").read_text().splitlines()]
        assert len(prompts) == 5
        assert len((workdir / "recipe.jsonl").read_text().splitlines()) == 6
        tel = [json.loads(line) for line in (workdir / "tel.jsonl").read_text().splitlines()]
        assert len(tel) == 3 and all(r["channel"]["codec"] == "mulaw" for r in tel)
        assert (workdir / "train.check.notes.jsonl").is_file()
    else:
        assert json.loads((workdir / "report.json").read_text())["keywords"]
