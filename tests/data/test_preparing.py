"""nano8k.data.preparing: `nano8k data prepare` as a whole (workers, options, errors, the CLI, file modes)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from nano8k import data
from nano8k.errors import UserError

from corpus_helpers import CONF, pcm, read_jsonl, wav, write_lines
from helpers import REPO

pytestmark = pytest.mark.funasr  # runs FunASR's own code (front end, index, dataset): not in `make test-fast`


def _cli_app():
    from nano8k.cli import app

    return app


def _invoke(*args: str):
    from typer.testing import CliRunner

    result = CliRunner().invoke(_cli_app(), list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_workers_do_not_change_the_output(corpus, tokenizer_dir):
    for n in range(4, 40):
        wav(corpus / "audio" / f"b{n:02d}.wav", 8000 + 97 * n, 8000, seed=n)
    write_lines(corpus / "many" / "wav.scp", [f"b{n:02d} ../audio/b{n:02d}.wav" for n in range(4, 40)] + ["zz missing.wav"])
    write_lines(corpus / "many" / "text", [f"b{n:02d} number {n}" for n in range(4, 40)] + ["zz gone"])
    serial = data.prepare(Path("many"), corpus / "s.jsonl", tokenizer_dir, workers=1)
    parallel = data.prepare(Path("many"), corpus / "p.jsonl", tokenizer_dir, workers=4)
    assert serial.output.read_bytes() == parallel.output.read_bytes()
    assert serial.rejects_file.read_bytes() == parallel.rejects_file.read_bytes()
    assert [r["key"] for r in read_jsonl(serial.output)] == [f"b{n:02d}" for n in range(4, 40)]


def test_user_errors(corpus, tokenizer_dir):
    cases = {
        Path("nowhere"): "no such file",
        write_lines(corpus / "empty_dir" / "README", ["x"]).parent: "neither a Kaldi data directory",
        write_lines(corpus / "notes.txt", ["a01 ../audio/a01.wav"]): "neither a Kaldi data directory",
        write_lines(corpus / "notext" / "wav.scp", ["a01 ../audio/a01.wav"]).parent: "without a text file",
    }
    for source, message in cases.items():
        with pytest.raises(UserError, match=message):
            data.prepare(source, corpus / "o.jsonl", tokenizer_dir)
    with pytest.raises(UserError, match="tokenizer directory not found"):
        data.prepare(Path("kaldi"), corpus / "o.jsonl", corpus / "no-tokenizer")
    manifest = data.prepare(Path("kaldi"), corpus / "m.jsonl", tokenizer_dir).output
    with pytest.raises(UserError, match="already a Nano manifest"):
        data.prepare(manifest, corpus / "o.jsonl", tokenizer_dir)
    with pytest.raises(UserError, match="manifest not found"):
        data.check(corpus / "none.jsonl", {})


def test_model_dir_is_accepted_for_the_tokenizer(corpus, tokenizer_dir):
    import shutil

    shutil.copytree(tokenizer_dir, corpus / "model" / "Qwen3-0.6B")
    report = data.prepare(Path("kaldi"), corpus / "o.jsonl", corpus / "model")
    assert report.written == 3


def test_demo_corpus(tmp_path, tokenizer_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)  # wav.scp paths are relative to the data directory, wherever prepare runs
    report = data.prepare(REPO / "data/demo/train", tmp_path / "train.jsonl", tokenizer_dir, workers=2)
    assert report.rejected == 0 and report.written == len((REPO / "data/demo/train/wav.scp").read_text().splitlines())
    assert set(report.sample_rates) == {8000}
    checked = data.check(report.output, {**CONF, "max_token_length": 1024, "batch_size": 6000}, expected_fs=8000)
    assert checked.ok and checked.survivors == report.written


def test_prompt_and_language_options(corpus, tokenizer_dir):
    report = data.prepare(Path("kaldi"), corpus / "en.jsonl", tokenizer_dir, language="en")
    users = [r["messages"][1]["content"] for r in read_jsonl(report.output)]
    assert all(u.startswith("语音转写成英文：<|startofspeech|>!") for u in users)
    literal = data.prepare(Path("kaldi"), corpus / "lit.jsonl", tokenizer_dir, prompt="Speech transcription:")
    assert read_jsonl(literal.output)[0]["messages"][1]["content"].startswith("Speech transcription:<|startofspeech|>")
    with pytest.raises(UserError, match="not both"):
        data.prepare(Path("kaldi"), corpus / "x.jsonl", tokenizer_dir, prompt="p", language="en")


def test_cli_prepare_then_check(stereo, corpus, tokenizer_dir):
    import shutil

    shutil.copytree(tokenizer_dir, corpus / "model" / "Qwen3-0.6B")
    pcm(corpus / "st" / "loud.wav", np.full(8000, 32767, np.int16), 8000)
    write_lines(corpus / "k" / "wav.scp", ["call ../st/call.wav", "loud ../st/loud.wav", "bad ../audio/none.wav"])
    write_lines(corpus / "k" / "segments", ["c1 call 0 1.5", "l1 loud 0 1", "b1 bad 0 1"])
    write_lines(corpus / "k" / "text", ["c1-A hello there", "c1-B thank you", "l1 loud", "b1 gone"])
    code, out, err = _invoke("data", "prepare", "k", "out/train.jsonl", "--model-dir", str(corpus / "model"),
                             "--channel", "split", "--language", "en", "-j", "2")
    assert code == 1, err  # one line rejected; the rest written
    assert "3 of 4 lines written" in out and "missing_audio 1" in out
    records = read_jsonl(corpus / "out" / "train.jsonl")
    assert [r["key"] for r in records] == ["c1-A", "c1-B", "l1"]
    assert records[0]["messages"][1]["content"].startswith("语音转写成英文：")
    (reject,) = read_jsonl(corpus / "out" / "train.rejects.jsonl")
    assert (reject["line"], reject["key"], reject["reason"], reject["input"]) == (3, "b1", "missing_audio", "b1 bad 0 1")

    code, out, err = _invoke("data", "check", "out/train.jsonl", "+stage=stage1")
    assert code == 0, out + err  # the clipped file is a note
    assert "note: clipped 1" in out and (corpus / "out" / "train.check.rejects.jsonl").read_text() == ""
    manifest = corpus / "out" / "train.jsonl"
    manifest.write_text(manifest.read_text(encoding="utf-8").replace("hello there", " "), encoding="utf-8")
    code, out, err = _invoke("data", "check", "out/train.jsonl", "+stage=stage1")
    assert code == 0 and "note: non_speech 1" in out, out + err  # an empty transcript is a non-speech segment
    manifest.write_text(manifest.read_text(encoding="utf-8").replace('"content": " "', '"content": "caf\\ufffd"'),
                        encoding="utf-8")
    code, out, err = _invoke("data", "check", "out/train.jsonl", "+stage=stage1")
    assert code == 1 and "data: undecodable_text 1" in out
    assert [(r["line"], r["key"], r["reason"]) for r in read_jsonl(corpus / "out" / "train.check.rejects.jsonl")] == [
        (1, "c1-A", "undecodable_text")]
    assert _invoke("data", "check", "out/train.jsonl", "+stage=stage1", "--allow-drops")[0] == 0
    code, out, _ = _invoke("data", "check", "out/train.jsonl", "+stage=stage1", "--expected-fs", "16000", "--allow-drops")
    assert code == 0 and "sample_rate_differs 3" in out


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_outputs_honour_the_umask(corpus, tokenizer_dir, umask, mode):
    old = os.umask(umask)
    try:
        report = data.prepare(Path("kaldi"), corpus / f"u{umask:o}" / "train.jsonl", tokenizer_dir)
    finally:
        os.umask(old)
    for path in (report.output, report.rejects_file):
        assert path.stat().st_mode & 0o777 == mode, path

