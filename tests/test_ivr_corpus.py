"""The bundled many-voice corpus (data/ivr, scripts/make_demo_corpus.py --corpus ivr): its files are
the ones its checksums name, its splits hold out what they say they hold out, and the script
refuses to regenerate it without an engine."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from helpers import REPO

IVR = REPO / "data" / "ivr"


def voices(split: str) -> set[tuple[str, str]]:
    """(engine, voice) of each utterance of a split, from utterances.tsv."""
    rows = [line.split("\t") for line in (IVR / "utterances.tsv").read_text().splitlines()[1:]]
    return {(engine, voice) for utt, engine, voice, *_ in rows if utt.rsplit("-", 1)[0] == split}


def test_every_file_is_the_one_its_checksum_names():
    listed = dict(reversed(line.split("  ", 1)) for line in (IVR / "SHA256SUMS").read_text().splitlines())
    present = {p.relative_to(IVR).as_posix() for p in IVR.rglob("*") if p.is_file() and p.name != "SHA256SUMS"}
    assert set(listed) == present
    for name in sorted(present)[::25]:
        assert hashlib.sha256((IVR / name).read_bytes()).hexdigest() == listed[name], name


def test_the_splits_hold_out_voices_and_an_engine():
    train = voices("train")
    engines = {engine for engine, _ in train}
    assert len(engines) >= 5 and len(train) >= 40
    assert voices("voices") and not voices("voices") & train
    assert {engine for engine, _ in voices("voices")} <= engines  # the training engines' other voices
    assert voices("test") and not {engine for engine, _ in voices("test")} & engines
    assert voices("dev") <= train and voices("pauses") <= train
    for split in ("train", "dev", "voices", "test", "pauses"):
        scp = [line.split(" ", 1)[0] for line in (IVR / split / "wav.scp").read_text().splitlines()]
        spk = dict(line.split(" ", 1) for line in (IVR / split / "utt2spk").read_text().splitlines())
        assert scp == sorted(spk), split


def test_regenerating_without_an_engine_is_refused(tmp_path):
    out = tmp_path / "ivr"
    env = {**os.environ, "PATH": str(tmp_path)}  # no TTS engine on it
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "make_demo_corpus.py"), "--corpus", "ivr", "--out",
                           str(out)], capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode != 0 and not out.exists()
    assert "the TTS engine espeak-ng is not installed" in proc.stderr and "apt-get install espeak-ng" in proc.stderr
    assert "Traceback" not in proc.stderr
