"""nano8k as users install it: a wheel built from a clean copy of the tree, installed into a fresh
virtual environment (no editable path; the dependencies come from the project's environment), and
the command line run from that install: help, a tiny model, data preparation, an epoch of training,
decoding. Every test besides this one runs the editable install, which hides a wheel that lacks a
module or a data file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from helpers import REPO

pytestmark = pytest.mark.funasr  # trains and decodes the tiny model


def tracked_files() -> list[str]:
    """The tree as a clean checkout has it: tracked and new files, not what git ignores."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return [name for name in listed if name and os.path.lexists(REPO / name)]


def clean_copy(target: Path) -> Path:
    for name in tracked_files():
        source, dest = REPO / name, target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            dest.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, dest)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """{"wheel", "venv", "bin"}: the wheel of a clean copy, installed alone into a new venv whose
    dependencies resolve to this environment's site-packages (a .pth line: the editable install's
    own .pth files there are not processed, so only the wheel provides nano8k)."""
    root = tmp_path_factory.mktemp("packaging")
    tree = clean_copy(root / "tree")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(root / "dist"), str(tree)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (root / "dist").glob("nano8k-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "project-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    result = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                             "--no-index", "-q", str(wheel)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return {"wheel": wheel, "venv": venv, "bin": venv / "bin", "site": site}


def run(installed: dict, *args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "PYTHONPATH")}
    env["PATH"] = f"{installed['bin']}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(["nano8k", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_wheel_ships_every_file_of_the_package(installed):
    in_wheel = set(zipfile.ZipFile(installed["wheel"]).namelist())
    package = [name[len("src/"):] for name in tracked_files()
               if name.startswith("src/nano8k/") and "__pycache__" not in name]
    assert package and any(name.startswith("nano8k/conf/stage/") for name in package)
    assert [name for name in package if name not in in_wheel] == []
    # and the install is the wheel's, not the editable source tree
    where = subprocess.run([str(installed["venv"] / "bin" / "python"), "-c", "import nano8k; print(nano8k.__file__)"],
                           capture_output=True, text=True, check=True, cwd=installed["venv"]).stdout.strip()
    assert where.startswith(str(installed["site"])), where


def test_the_installed_command_line_trains_and_decodes(installed, tmp_path):
    assert run(installed, "--help", cwd=tmp_path).returncode == 0
    model = tmp_path / "model"
    made = run(installed, "model", "tiny", str(model), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    demo = REPO / "data" / "demo"
    for split, n in (("train", 8), ("dev", 4)):
        kaldi = tmp_path / split
        kaldi.mkdir()
        scp = [line.split(maxsplit=1) for line in (demo / split / "wav.scp").read_text().splitlines()[:n]]
        (kaldi / "wav.scp").write_text("".join(f"{key} {(demo / split / path).resolve()}\n" for key, path in scp))
        (kaldi / "text").write_text("\n".join((demo / split / "text").read_text().splitlines()[:n]) + "\n")
        prepared = run(installed, "data", "prepare", str(kaldi), str(tmp_path / f"{split}.jsonl"), "--model-dir",
                       str(model), cwd=tmp_path)
        assert prepared.returncode == 0, prepared.stderr
    trained = run(installed, "train", "+stage=stage1", "+preset=tiny", f"model_dir={model}",
                  f"train_data_set_list={tmp_path / 'train.jsonl'}", f"valid_data_set_list={tmp_path / 'dev.jsonl'}",
                  "train_conf.max_epoch=1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs"] == 1
    decoded = run(installed, "decode", f"checkpoint={tmp_path / 'run'}", f"input={tmp_path / 'dev.jsonl'}",
                  f"hydra.run.dir={tmp_path / 'decoded'}", cwd=tmp_path)
    assert decoded.returncode == 0, decoded.stderr[-3000:]
    results = [json.loads(line) for line in (tmp_path / "decoded" / "results.jsonl").read_text().splitlines()]
    assert len(results) == 4 and all("hyp" in r for r in results)
