"""Every command as safe as training: decode, export and prepare never write over what they read,
keep finished work through signals, and take one writer per directory. Real processes, real
signals, the tiny model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import NANO8K, REPO, resume, run_cli, stopped_when, tiny_corpus

pytestmark = pytest.mark.funasr  # trains and decodes the tiny model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_model) -> dict:
    """The tiny model, a trained run of it, and `many`: 40 utterances to decode."""
    out = tiny_corpus(tmp_path_factory.mktemp("safety"), train=40, dev=4, model_dir=tiny_model)
    run = out["root"] / "run"
    trained = run_cli("train", "+stage=stage1", "+preset=tiny", f"model_dir={out['model_dir']}",
                      f"train_data_set_list={out['train']}", f"valid_data_set_list={out['dev']}",
                      "train_conf.max_epoch=1", f"hydra.run.dir={run}", timeout=300)
    assert trained.code == 0, trained.output
    return {**out, "run": run, "many": out["train"]}


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def decode_command(corpus: dict, run_dir: Path, *extra: str) -> list[str]:
    return [str(NANO8K), "decode", f"checkpoint={corpus['run']}", f"input={corpus['many']}", "batch_size=2",
            f"hydra.run.dir={run_dir}", *extra]


def comparable(path: Path) -> list[dict]:
    """results.jsonl without the timings (they differ between any two runs)."""
    return [{k: v for k, v in json.loads(line).items() if k != "decode_time"} for line in path.read_text().splitlines()]


def test_decode_never_writes_into_a_training_run_or_a_model_directory(corpus):
    for target, what in ((corpus["run"], "is a training run"), (corpus["model_dir"], "is a model directory")):
        before = snapshot(target)
        result = run_cli("decode", f"checkpoint={corpus['run']}", f"input={corpus['many']}", f"hydra.run.dir={target}")
        assert result.code == 2 and len(result.stderr.splitlines()) == 1, result.output
        assert result.stderr.startswith(f"error: hydra.run.dir={target}: {what}")
        assert snapshot(target) == before  # not even Hydra's .hydra/ was written
    # a run directory the command line does not spell out (here an interpolation; or a config file's) is
    # checked when the job starts: Hydra has written its .hydra/ and log, but the run's own files stay
    kept = {name: (corpus["run"] / name).read_bytes() for name in ("config.yaml", "status.json", "summary.json")}
    result = run_cli("decode", f"checkpoint={corpus['run']}", f"input={corpus['many']}",
                     "hydra.run.dir=${oc.env:NANO8K_TEST_RUN}", env={"NANO8K_TEST_RUN": str(corpus["run"])})
    assert result.code == 2 and result.stderr.startswith(f"error: hydra.run.dir={corpus['run']}: is a training run")
    assert {name: (corpus["run"] / name).read_bytes() for name in kept} == kept
    # the run still decodes (its config.yaml is its own)
    assert "model_dir" in (corpus["run"] / "config.yaml").read_text()


def test_decode_stops_at_sigterm_with_its_results_and_the_rerun_decodes_the_rest(corpus, tmp_path):
    reference = subprocess.run(decode_command(corpus, tmp_path / "reference"), capture_output=True, text=True,
                               timeout=300)
    assert reference.returncode == 0, reference.stderr[-2000:]
    run_dir = tmp_path / "interrupted"
    results = run_dir / "results.jsonl"
    proc = stopped_when(decode_command(corpus, run_dir), lambda: results.exists() and results.stat().st_size > 0)
    resume(proc, signal.SIGTERM)  # after a first batch was written, before the last
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "interrupted" and status["signal"] == "SIGTERM"
    kept = len(results.read_text().splitlines())
    assert 0 < status["decoded"] == kept < 40 and status["utterances"] == 40
    assert err.splitlines()[-1] == (f"interrupted by SIGTERM after {kept} of 40 utterances, kept in {results}; rerun "
                                    "the same command to decode the rest")
    before = {r["key"]: r["decode_time"] for r in map(json.loads, results.read_text().splitlines())}
    again = subprocess.run(decode_command(corpus, run_dir), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming: {kept} of 40 utterances were decoded before" in (run_dir / "decode.log").read_text()
    after = {r["key"]: r["decode_time"] for r in map(json.loads, results.read_text().splitlines())}
    assert {key: after[key] for key in before} == before  # taken as they were, not decoded again
    assert comparable(results) == comparable(tmp_path / "reference" / "results.jsonl")
    timing = ("decode_s", "rtf", "utterances_per_s", "load_s")
    mine, theirs = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, tmp_path / "reference"))
    assert {k: v for k, v in mine.items() if k not in timing} == {k: v for k, v in theirs.items() if k not in timing}
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"


def test_one_decode_per_directory_and_no_mixing_of_settings(corpus, tmp_path):
    run_dir = tmp_path / "decode"
    first = stopped_holding_its_lock(decode_command(corpus, run_dir), run_dir / ".nano8k.lock", run_dir)
    try:
        hydra_before = snapshot(run_dir / ".hydra")
        second = subprocess.run(decode_command(corpus, run_dir), capture_output=True, text=True, timeout=120)
    finally:
        resume(first)
    assert second.returncode == 2 and "is in use by another nano8k run (pid" in second.stderr
    assert snapshot(run_dir / ".hydra") == hydra_before  # the refused command wrote nothing there
    first.communicate(timeout=300)
    assert first.returncode == 0
    other = run_cli("decode", f"checkpoint={corpus['run']}", f"input={corpus['dev']}", "batch_size=2",
                    f"hydra.run.dir={run_dir}")
    assert other.code == 2 and other.stderr.startswith(
        f"error: {run_dir}: holds the results of a decode with other settings (input: ")
    assert len((run_dir / "results.jsonl").read_text().splitlines()) == 40


def test_export_is_all_or_nothing_and_never_lands_on_its_inputs(corpus, tmp_path):
    run, model = corpus["run"], corpus["model_dir"]
    before = {d: snapshot(d) for d in (run, model)}
    for out, force in ((run, True), (run / "export", False), (model, True), (model / "sub", False)):
        result = run_cli("export", str(run), str(out), *(["--force"] if force else []))
        assert result.code == 2 and len(result.stderr.splitlines()) == 1, result.output
        assert str(out) in result.stderr and ("training run" in result.stderr or "model directory" in result.stderr)
    assert {d: snapshot(d) for d in (run, model)} == before
    not_a_run = run_cli("export", str(tmp_path), str(tmp_path / "out"))
    assert not_a_run.code == 2 and "not a nano8k training run" in not_a_run.stderr
    # interrupted while OUT is being written: nothing of it is left, and the rerun is not refused
    out = tmp_path / "out"
    err = interrupt_export(run, out)
    assert err.splitlines()[-1] == f"nano8k: SIGINT received: stopped; the export was not written ({out} is as it was)"
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
    done = run_cli("export", str(run), str(out), timeout=300)
    assert done.code == 0, done.output
    assert json.loads((out / "export.json").read_text())["exported_from"] == str(run.resolve())
    refused = run_cli("export", str(run), str(out))
    assert refused.code == 2 and "pass --force to replace a previous export" in refused.stderr
    replaced = run_cli("export", str(run), str(out), "--force", timeout=300)
    assert replaced.code == 0 and (out / "model.pt").is_file() and not list(tmp_path.glob(".out.*"))
    # one export into a directory at a time: the second is refused, naming the holder
    other = tmp_path / "other"
    first = stopped_holding_its_lock([str(NANO8K), "export", str(run), str(other)], tmp_path / ".other.nano8k.lock",
                                     other)
    try:
        second = run_cli("export", str(run), str(other), "--force")
    finally:
        resume(first)
    assert second.code == 2 and f"{other} is in use by another nano8k run (pid {first.pid}" in second.stderr
    first.communicate(timeout=300)
    assert first.returncode == 0 and (other / "export.json").is_file()


def stopped_holding_its_lock(command: list[str], lock: Path, writes: Path) -> subprocess.Popen:
    """`command` (which writes the directory `writes`) stopped while `lock` names it, so that a
    second command meets a live holder however fast the first one is; tried again where the first
    one finished before its lock was seen. The caller resumes it."""
    def held() -> bool:  # the lock's holder written (a lock file created but not yet written names nobody)
        try:
            return "pid" in json.loads(lock.read_text())
        except (OSError, ValueError):
            return False

    for _ in range(5):
        proc = stopped_when(command, held)
        if held():
            return proc
        resume(proc)
        proc.communicate(timeout=300)
        shutil.rmtree(writes, ignore_errors=True)
    pytest.fail(f"never caught {command[1]} holding {lock}")


def interrupt_export(run: Path, out: Path) -> str:
    """SIGINT to `nano8k export RUN OUT` while its files are being written (seen in the stopped
    process, so what the test saw is what the signal finds); returns its stderr."""
    def writing() -> bool:
        return bool(list(out.parent.glob(f".{out.name}.export-*")))

    for _ in range(5):
        proc = stopped_when([str(NANO8K), "export", str(run), str(out)], writing)
        if writing():
            resume(proc, signal.SIGINT)
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 130, err[-2000:]
            return err
        resume(proc)
        proc.communicate(timeout=120)
        shutil.rmtree(out, ignore_errors=True)
    pytest.fail("never caught the export while it wrote its files")


def demo_kaldi(kaldi: Path, n: int, texts: list[str] | None = None) -> Path:
    """A Kaldi directory of the first n utterances of the bundled corpus (absolute paths); `texts`
    replaces their transcripts."""
    kaldi.mkdir()
    demo = REPO / "data" / "demo" / "train"
    scp = [line.split(maxsplit=1) for line in (demo / "wav.scp").read_text().splitlines()[:n]]
    (kaldi / "wav.scp").write_text("".join(f"{key} {(demo / path).resolve()}\n" for key, path in scp))
    lines = (demo / "text").read_text().splitlines()[:n] if texts is None else \
        [f"{key} {text}" for (key, _), text in zip(scp, texts)]
    (kaldi / "text").write_text("\n".join(lines) + "\n")
    return kaldi


def test_prepare_never_writes_over_its_input_and_refuses_an_empty_one(corpus, tmp_path):
    kaldi = demo_kaldi(tmp_path / "kaldi", 3)
    before = snapshot(kaldi)
    for name in ("text", "wav.scp"):
        result = run_cli("data", "prepare", str(kaldi), str(kaldi / name), "--model-dir", str(corpus["model_dir"]))
        assert result.code == 2 and result.stderr.splitlines() == [
            f"error: {kaldi / name}: is a file of the input {kaldi}; writing there would overwrite it: choose another "
            "output"]
    assert snapshot(kaldi) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "wav.scp").write_bytes(b"")
    (empty / "text").write_bytes(b"")
    for command in (("data", "prepare", str(empty), str(tmp_path / "e.jsonl"), "--model-dir", str(corpus["model_dir"])),
                    ("data", "simulate", str(empty), str(tmp_path / "sim"))):
        result = run_cli(*command)
        assert result.code == 2 and result.stderr.splitlines() == [
            f"error: {empty}: holds no utterances (an empty Kaldi directory); nothing to do"], result.output


def test_a_run_killed_while_finishing_is_completed_by_the_rerun_and_decode_never_falls_back_silently(corpus, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(corpus["run"], run)
    averaged = sorted(p.name for p in run.glob("model.pt.avg*"))
    assert averaged and (run / "summary.json").is_file()
    # killed while averaging: no averaged model; summary.json (written before, by an older
    # finishing) names it: decoding the run is an error, not a quiet fall-back to model.pt.best
    (run / averaged[0]).unlink()
    refused = run_cli("decode", f"checkpoint={run}", f"input={corpus['dev']}", f"hydra.run.dir={tmp_path / 'd'}")
    assert refused.code == 2 and refused.stderr.startswith(
        f"error: checkpoint: {run}: its averaged model {averaged[0]} is missing")
    (run / "summary.json").unlink()
    (run / "status.json").unlink()
    command = ("train", "+stage=stage1", "+preset=tiny", f"model_dir={corpus['model_dir']}",
               f"train_data_set_list={corpus['train']}", f"valid_data_set_list={corpus['dev']}",
               "train_conf.max_epoch=1", f"hydra.run.dir={run}")
    completed = run_cli(*command, timeout=300)
    assert completed.code == 0, completed.output
    log = (run / "train.log").read_text()
    assert (f"{run}: it trained 1 of train_conf.max_epoch=1 epochs, but it was stopped while finishing: summary.json, "
            f"the averaged model, status.json missing; completing it") in log
    assert (run / averaged[0]).is_file() and json.loads((run / "status.json").read_text())["status"] == "completed"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["averaged_model"] == str(run / averaged[0])
    again = run_cli(*command, timeout=300)
    assert again.code == 0 and "nothing to do" in again.output


def test_score_and_decode_agree_on_the_same_results(corpus, tmp_path):
    """A decode with failed rows: `nano8k score results.jsonl` counts them apart, as decode does."""
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    demo = REPO / "data" / "demo" / "train"
    scp = [line.split(maxsplit=1) for line in (demo / "wav.scp").read_text().splitlines()[:6]]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    lines = [f"{key} {(demo / path).resolve() if i % 3 else broken}\n" for i, (key, path) in enumerate(scp)]
    (kaldi / "wav.scp").write_text("".join(lines))
    (kaldi / "text").write_text("\n".join((demo / "text").read_text().splitlines()[:6]) + "\n")
    run_dir = tmp_path / "decoded"
    decoded = run_cli("decode", f"checkpoint={corpus['run']}", f"input={kaldi}", f"hydra.run.dir={run_dir}")
    assert decoded.code == 1, decoded.output  # some utterances failed
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["failed"] == 2 and metrics["scored"] == 4
    scored = run_cli("score", str(run_dir / "results.jsonl"), "--json", str(tmp_path / "score.json"))
    assert scored.code == 0, scored.output
    assert "failed in decoding: 2 (not scored" in scored.stdout
    report = json.loads((tmp_path / "score.json").read_text())["metrics"]
    assert report["utterances"] == metrics["scored"] and report["failed"] == metrics["failed"]
    assert {k: report[k] for k in ("cer", "wer", "ser", "counts")} == {k: metrics[k] for k in ("cer", "wer", "ser", "counts")}
    results = run_dir / "results.jsonl"
    before = results.read_bytes()
    over = run_cli("score", str(results), "--json", str(results))
    assert over.code == 2 and over.stderr.splitlines() == [
        f"error: --json {results}: is the input {results}; writing there would overwrite it: choose another file"]
    assert results.read_bytes() == before


def test_special_files_and_unbounded_hotword_lists_are_one_line(corpus, tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    direct = run_cli("decode", f"checkpoint={corpus['run']}", f"input={fifo}", f"hydra.run.dir={tmp_path / 'a'}",
                     timeout=120)
    assert direct.code == 2 and direct.stderr.splitlines() == [
        f"error: input: {fifo}: is a FIFO, not a file or directory nano8k can read"]
    listing = tmp_path / "list.txt"
    listing.write_text(f"{fifo}\n{(REPO / 'data' / 'demo' / 'wav' / 'utt001.wav').resolve()}\n")
    listed = run_cli("decode", f"checkpoint={corpus['run']}", f"input={listing}", f"hydra.run.dir={tmp_path / 'b'}",
                     timeout=120)
    assert listed.code == 1, listed.output  # the FIFO's row failed, the other decoded
    rows = [json.loads(line) for line in (tmp_path / "b" / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["failed", "ok"] and rows[0]["reason"] == f"{fifo} is a FIFO"
    hotwords = tmp_path / "hotwords.txt"
    hotwords.write_text("".join(f"word{i}\n" for i in range(100_000)))
    bounded = run_cli("decode", f"checkpoint={corpus['run']}", f"input={corpus['dev']}", f"hotwords_file={hotwords}",
                      f"hydra.run.dir={tmp_path / 'c'}", timeout=120)
    assert bounded.code == 2 and bounded.stderr.splitlines() == [
        "error: hotwords: 100000 entries (hotwords and hotwords_file together); the limit is 20000 with "
        "hotword_filter: the CTC branch spots every entry in every utterance, in time that grows with the list; keep "
        "the ones this audio may hold"]


def test_transcripts_with_no_words_are_kept_and_flagged(corpus, tmp_path):
    texts = ["hello there", "\u200b\u200b", "?!"]
    kaldi = demo_kaldi(tmp_path / "kaldi", 3, texts)
    scp = [line.split(maxsplit=1) for line in (kaldi / "wav.scp").read_text().splitlines()]
    out = tmp_path / "prepared.jsonl"
    prepared = run_cli("data", "prepare", str(kaldi), str(out), "--model-dir", str(corpus["model_dir"]))
    assert prepared.code == 0, prepared.output
    assert len(out.read_text().splitlines()) == 3
    assert (f"note: 2 transcripts have no letter or digit (only punctuation, zero-width characters or a BOM; empty "
            f"once normalised), kept: e.g. {scp[1][0]}") in prepared.stdout
    checked = run_cli("data", "check", str(out), "+stage=stage1", "+preset=tiny", f"model_dir={corpus['model_dir']}",
                      "--notes", "--expected-fs", "0")
    assert "no_words" in checked.stdout and f"{scp[2][0]}" in checked.stdout, checked.output


def test_training_never_writes_into_a_model_directory(corpus):
    before = snapshot(corpus["model_dir"])
    for extra in ((), ("train_conf.resume=false",)):
        result = run_cli("train", "+stage=stage1", "+preset=tiny", f"model_dir={corpus['model_dir']}",
                         f"train_data_set_list={corpus['train']}", f"valid_data_set_list={corpus['dev']}",
                         f"hydra.run.dir={corpus['model_dir']}", *extra)
        assert result.code == 2 and result.stderr.splitlines() == [
            f"error: hydra.run.dir={corpus['model_dir']}: is a model directory (model.pt, config.yaml): training there "
            f"would replace them; train into a new directory (e.g. hydra.run.dir={corpus['model_dir']}-run)"]
    assert snapshot(corpus["model_dir"]) == before


@pytest.mark.parametrize("delay", [0.0, 0.3])
def test_a_signal_during_start_up_stops_decode_and_export_at_once(corpus, tmp_path, delay):
    """Python's KeyboardInterrupt is swallowed by `import funasr`: decode and export take signals
    from their first moment, as train does (a Ctrl-C is never lost and the command never runs on).
    The signal is sent once the command has begun (decode: Hydra made its .hydra/; export: its
    lock is there), `delay` seconds later, while the model is being built."""
    for name, command, begun, line in (
            ("decode", [str(NANO8K), "decode", f"checkpoint={corpus['run']}", f"input={corpus['dev']}",
                        f"hydra.run.dir={tmp_path / 'decode'}"], tmp_path / "decode" / ".hydra",
             "during start-up: stopped; nothing was decoded"),
            ("export", [str(NANO8K), "export", str(corpus["run"]), str(tmp_path / "export")],
             tmp_path / ".export.nano8k.lock",
             f"received: stopped; the export was not written ({tmp_path / 'export'} is as it was)")):
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not begun.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, (name, err[-1500:])
        assert err.splitlines()[-1] == f"nano8k: SIGINT {line}", name
    assert not (tmp_path / "export").exists() and not (tmp_path / "decode" / "results.jsonl").exists()
