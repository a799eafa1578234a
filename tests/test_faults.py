"""Fault injection: what a cluster does to a run (kill -9, SIGTERM, SIGINT, preemption with requeue,
damaged and missing checkpoints, a full disk, divergence, a second run in the same directory,
config drift on resume). Real subprocesses and real signals on the tiny model; README, "What a
run survives", is the table these tests check.

One uninterrupted run is the reference: 2 epochs of BATCHES batches (12 utterances), validated (and checkpointed) every
2 batches, every step logged, dither off (kaldi-native-fbank draws it from a generator no
checkpoint can hold).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import NANO8K, RunsCode, run_cli

pytestmark = pytest.mark.funasr
import torch  # noqa: E402

EXACT = ("train_conf.max_epoch=2", "train_conf.validate_interval=2", "++dataset_conf.batch_size_sample_max=2",
         "train_conf.log_interval=1", "+frontend_conf.dither=0.0", "scheduler_conf.warmup_steps=2",
         "train_conf.keep_nbest_models=100")  # every checkpoint stays


@pytest.fixture(scope="module")
def corpus(small_corpus) -> dict:
    return small_corpus


BATCHES = 7  # per epoch: 12 utterances, at most 2 a batch, the preset's token budget splitting one pair


def command(corpus: dict, run: Path, *extra: str) -> list[str]:
    return [str(NANO8K), "train", "+stage=stage1", "+preset=tiny", f"model_dir={corpus['model_dir']}",
            f"train_data_set_list={corpus['train']}", f"valid_data_set_list={corpus['dev']}", *EXACT,
            f"hydra.run.dir={run}", *extra]


def train(corpus: dict, run: Path, *extra: str, **popen):
    return run_cli(*command(corpus, run, *extra)[1:], timeout=300, **popen)


def env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}


def signal_when(corpus: dict, run: Path, signum: int, ready: Callable[[], bool], *extra: str
                ) -> subprocess.CompletedProcess:
    """Start a run and send it `signum` at a moment `ready()` holds: checked while the run is
    stopped (SIGSTOP), so that what the test saw is what the signal finds."""
    proc = subprocess.Popen(command(corpus, run, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env())
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGSTOP)
            fired = ready()
            if fired:
                proc.send_signal(signum)
            proc.send_signal(signal.SIGCONT)
            if fired:
                break
        time.sleep(0.002)
    out, err = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def after(run: Path, name: str, inside_epoch: int | None = None) -> Callable[[], bool]:
    """Ready once checkpoint `name` exists and model.pt was written after it; with inside_epoch,
    once moreover model.pt is inside that epoch and metrics.jsonl holds a step trained after it."""
    trigger, latest = run / name, run / "model.pt"

    def ready() -> bool:
        if not (trigger.exists() and latest.exists() and latest.stat().st_mtime_ns >= trigger.stat().st_mtime_ns):
            return False
        if inside_epoch is None:
            return True
        try:
            state, logged = checkpoint(latest), records(run)
        except (RuntimeError, ValueError, OSError):  # a line being written, a file being replaced
            return False
        return state["epoch"] == inside_epoch - 1 and state["step_in_epoch"] > 0 and any(
            r[0] == "train" and r[2] > state["step"] for r in logged)

    return ready


def checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def records(run: Path) -> list[tuple]:
    return [(r["split"], r["epoch"], r["step"], r.get("loss", r.get("val_loss")))
            for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def same_weights(a: Path, b: Path) -> bool:
    first, second = checkpoint(a)["state_dict"], checkpoint(b)["state_dict"]
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("reference") / "run"
    result = train(corpus, run)
    assert result.code == 0, result.output
    assert sum(r[0] == "train" for r in records(run)) == 2 * BATCHES  # each batch logged
    return run


def test_sigterm_then_kill_9_mid_epoch_resume_bit_exact(corpus, reference, tmp_path):
    run = tmp_path / "run"
    # SIGTERM (SLURM's preemption notice) in epoch 1: the step finishes, a checkpoint, exit 143
    stopped = signal_when(corpus, run, signal.SIGTERM, after(run, "model.pt.ep1.2"))
    assert stopped.returncode == 143, stopped.stderr
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted" and status["signal"] == "SIGTERM"
    latest = checkpoint(run / "model.pt")
    assert latest["epoch"] == 0 and latest["step_in_epoch"] == status["step_in_epoch"] > 0  # inside epoch 1
    assert status["step"] == latest["step"] and status["checkpoint"] == str(run / "model.pt")
    assert stopped.stderr.splitlines()[-1].startswith(f"interrupted by SIGTERM at epoch 1, batch {status['step_in_epoch']}")
    assert not (run / ".nano8k.lock").exists() and "Traceback" not in stopped.stderr

    # resumed, then kill -9 inside epoch 2 after a batch past its checkpoint: its lock, whatever
    # it was writing and the metrics of the batches after the checkpoint are left behind
    killed = signal_when(corpus, run, signal.SIGKILL, after(run, "model.pt.ep2.2", inside_epoch=2))
    assert killed.returncode == -signal.SIGKILL
    latest = checkpoint(run / "model.pt")
    assert latest["epoch"] == 1 and latest["step_in_epoch"] > 0, "the kill came after another checkpoint"
    assert (run / ".nano8k.lock").exists() and records(run)[-1][2] > latest["step"]
    (run / ".model.pt.ep2.4.k3j_x9q2.tmp").write_bytes(b"torn")  # writes a kill cut short: files.atomic_path's
    (run / ".model.pt.ep2.3.tmp-999999").write_bytes(b"torn")  # name, and older versions'

    resumed = train(corpus, run)
    assert resumed.code == 0, resumed.output
    log = (run / "train.log").read_text()
    assert f"resumed from {run / 'model.pt'} at epoch 2, batch {latest['step_in_epoch'] + 1}" in log
    assert "removing the lock of a run that is gone" in log and "removed 2 temporary file(s)" in log
    assert not list(run.glob(".*.tmp*"))
    # bit for bit the uninterrupted run: every logged loss (no step twice), the weights, the history
    assert records(run) == records(reference)
    assert same_weights(run / "model.pt", reference / "model.pt")
    mine, theirs = (json.loads((r / "summary.json").read_text()) for r in (run, reference))
    assert mine["resumes"] == 2 and mine["steps"] == theirs["steps"] == 2 * BATCHES
    assert mine["loss_curve"] == theirs["loss_curve"] and mine["epochs_log"] == theirs["epochs_log"]


def test_only_model_pt_carries_the_optimizer_state(reference):
    names = sorted(p.name for p in reference.glob("model.pt*"))
    assert {"model.pt", "model.pt.best", "model.pt.ep1", "model.pt.ep2"} <= set(names)
    for name in names:
        held = checkpoint(reference / name)
        assert ("optimizer" in held and "scheduler" in held) == (name == "model.pt"), name
        assert held["state_dict"].keys() == checkpoint(reference / "model.pt")["state_dict"].keys(), name
    assert same_weights(reference / "model.pt", reference / "model.pt.ep2")


def test_damaged_or_missing_model_pt_falls_back_to_the_newest_epoch_checkpoint(reference, tmp_path):
    from nano8k import rundir

    last_inside = BATCHES - 1 - (BATCHES - 1) % 2  # the last validation inside an epoch
    good = {name: reference / name for name in ("model.pt.ep2", f"model.pt.ep2.{last_inside}", f"model.pt.ep1.{last_inside}")}
    marker = tmp_path / "pwned"
    damages = {"truncated": (reference / "model.pt").read_bytes()[:1000], "garbage": os.urandom(4096), "empty": b"",
               "foreign": {"weights": torch.zeros(3)}, "crafted": {**checkpoint(reference / "model.pt"),
                                                                  "payload": RunsCode(marker)}}
    for kind, content in damages.items():
        run = tmp_path / kind
        run.mkdir()
        for name, path in good.items():
            shutil.copy(path, run / name)
        if isinstance(content, dict):
            torch.save(content, run / "model.pt")
        else:
            (run / "model.pt").write_bytes(content)
        point = rundir.resume_point(run)
        assert point.path == run / "model.pt.ep2" and (point.epoch, point.step_in_epoch, point.step) == (2, 0, 2 * BATCHES), kind
    assert not marker.exists()  # the crafted model.pt was refused (weights_only), not run ...
    torch.load(tmp_path / "crafted" / "model.pt", weights_only=False)
    assert marker.exists()  # ... though it would have run
    # missing (a kill between the first epoch checkpoint and model.pt): never a silent restart
    (tmp_path / "truncated" / "model.pt").unlink()
    (tmp_path / "truncated" / "model.pt.ep2").unlink()
    point = rundir.resume_point(tmp_path / "truncated")
    assert point.path.name == f"model.pt.ep2.{last_inside}" and (point.epoch, point.step_in_epoch) == (1, last_inside)
    # nothing intact: one line naming the file, no restart
    for path in (tmp_path / "empty").glob("model.pt.ep*"):
        path.write_bytes(b"")
    with pytest.raises(rundir.UserError) as err:
        rundir.resume_point(tmp_path / "empty")
    assert str(err.value).startswith(f"{tmp_path / 'empty' / 'model.pt'}: not a readable checkpoint")
    assert "no intact checkpoint" in str(err.value) and "\n" not in str(err.value)


def test_a_damaged_model_pt_is_named_and_training_goes_on_from_the_epoch_checkpoint(corpus, reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    finished = train(corpus, run)
    assert finished.code == 0 and "finished: it trained 2 of train_conf.max_epoch=2 epochs; nothing to do" in finished.stdout
    assert (run / "summary.json").read_text() == (reference / "summary.json").read_text()
    (run / "model.pt").write_bytes((reference / "model.pt").read_bytes()[:1000])  # torn by a crash of old
    result = train(corpus, run, "train_conf.max_epoch=3")
    assert result.code == 0, result.output
    log = (run / "train.log").read_text()
    assert f"{run / 'model.pt'}: not a readable checkpoint" in log
    assert f"{run / 'model.pt'} is damaged: resuming from model.pt.ep2 (epoch 2, step {2 * BATCHES}) instead" in log
    assert (f"model.pt.ep2 holds no optimizer state (only model.pt does): the optimizer's moments start afresh at step "
            f"{2 * BATCHES} and the learning-rate schedule goes on from there") in log
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["steps"] == 3 * BATCHES and [e["epoch"] for e in summary["epochs_log"]] == [1, 2, 3]
    assert records(run)[: len(records(reference))] == records(reference)  # the history kept, nothing twice


def test_resuming_with_changed_values_is_refused_unless_they_should_apply(corpus, reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    refused = train(corpus, run, "train_conf.max_epoch=3", "optim_conf.lr=1e-3", "++dataset_conf.batch_size_sample_max=3")
    assert refused.code == 2
    assert refused.stderr.splitlines() == [
        f"error: {run}: resuming with values that differ from its config.yaml: dataset_conf.batch_size_sample_max: "
        "2 -> 3; optim_conf.lr: 0.0001 -> 0.001; pass resume_with_changes=true to apply them from here on, or train in "
        "a new directory"]
    assert (run / "config.yaml").read_text() == (reference / "config.yaml").read_text()
    applied = train(corpus, run, "train_conf.max_epoch=3", "optim_conf.lr=1e-3", "resume_with_changes=true")
    assert applied.code == 0, applied.output
    epoch3 = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["split"] == "train" and json.loads(line)["epoch"] == 3]
    # warmuplr after step s: lr * warmup**0.5 * (s + 1)**-0.5 (warmup 2), from the new base rate
    steps = range(2 * BATCHES + 1, 3 * BATCHES + 1)
    assert [r["lr"] for r in epoch3] == pytest.approx([1e-3 * 2 ** 0.5 * (s + 1) ** -0.5 for s in steps])


def test_a_diverging_run_stops_and_saves_nothing_diverged(corpus, tmp_path):
    run = tmp_path / "run"
    result = train(corpus, run, "optim_conf.lr=1e6", "train_conf.max_epoch=20", "max_nonfinite_steps=5")
    assert result.code == 2
    (line,) = result.stderr.splitlines()[-1:]
    assert line.startswith("error: 6 batches had a non-finite loss or gradient (max_nonfinite_steps=5)")
    assert line.endswith("the run diverged; lower optim_conf.lr (now 1000000.0) or raise max_nonfinite_steps")
    summary, status = (json.loads((run / name).read_text()) for name in ("summary.json", "status.json"))
    assert summary["diverged"] is True and summary["nonfinite_steps"] == status["nonfinite_steps"] == 6
    assert status["status"] == "failed" and summary["averaged_model"] is None
    assert not list(run.glob("model.pt.avg*")) and not (run / "model.pt.best").exists()
    for path in run.glob("model.pt*"):  # whatever was written holds finite weights
        assert all(torch.isfinite(t).all() for t in checkpoint(path)["state_dict"].values() if t.is_floating_point())



def test_non_finite_numbers_are_null_in_every_json_output(corpus, tmp_path):
    """A learning rate that blows the weights up: the run ends with a non-finite validation loss,
    written as null (a bare NaN is not JSON: readers other than Python's reject the file)."""
    overflow = train(corpus, tmp_path / "overflow", "optim_conf.lr=1e39")  # past float32: one line, not a traceback
    assert overflow.code == 2 and overflow.stderr.splitlines() == [
        "error: optim_conf.lr: 1e+39 is out of range: must be below 3.40282e+38"]
    run = tmp_path / "run"
    result = train(corpus, run, "optim_conf.lr=1e30", "train_conf.max_epoch=1")
    assert result.code == 0, result.output

    def strict(text: str) -> dict:
        return json.loads(text, parse_constant=lambda constant: pytest.fail(f"{constant} in a JSON output"))

    for name in ("summary.json", "status.json"):
        strict((run / name).read_text())
    records = [strict(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r["split"] == "valid" and r["val_loss"] is None for r in records)  # non-finite: null


def test_a_full_disk_is_one_line_and_the_earlier_checkpoints_stay(corpus, reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    before = checkpoint(run / "model.pt")

    def small_files():  # writes over 1 MB fail (EFBIG) as on a full disk (ENOSPC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    proc = subprocess.run(command(corpus, run, "train_conf.max_epoch=3"), capture_output=True, text=True, env=env(),
                          preexec_fn=small_files, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.splitlines()[-1]
    assert line.startswith(f"error: {run / 'model.pt.ep3.2'}: cannot write the checkpoint (")
    assert line.endswith("disk full, or a quota?); the checkpoints written before it are intact")
    assert json.loads((run / "status.json").read_text())["error"] == line[len("error: "):]
    assert not list(run.glob(".*.tmp*")) and not (run / "model.pt.ep3.2").exists()
    after = checkpoint(run / "model.pt")
    assert after["step"] == before["step"] and all(torch.equal(after["state_dict"][k], v) for k, v in before["state_dict"].items())


def test_sigint_during_start_up_stops_at_once(corpus, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(command(corpus, run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    while not (run / ".nano8k.lock").exists() and proc.poll() is None:  # the job has started: funasr is loading
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    assert err.splitlines()[-1] == "nano8k: SIGINT during start-up: stopped; nothing was trained"
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted" and status["signal"] == "SIGINT"
    assert not (run / ".nano8k.lock").exists() and not (run / "metrics.jsonl").exists()


def test_a_clean_up_that_fails_at_a_start_up_signal_is_named_and_the_others_still_run(tmp_path):
    """The clean-ups a start-up signal runs (the lock, status.json) each run even when one fails,
    and a failure is one line, not silence: a run directory left locked would otherwise be a mystery."""
    done = tmp_path / "done"
    script = f"""
import os, signal, time
from nano8k import interrupts
interrupts.install()
def status_written(signum): open({str(done)!r}, "w").write(signal.Signals(signum).name)
def lock_released(signum): raise OSError("read-only file system")
interrupts.at_once(status_written)
interrupts.at_once(lock_released)
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(30)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 143 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        "nano8k: SIGTERM during start-up: stopped; nothing was trained",
        "nano8k: SIGTERM: could not finish lock_released before stopping (OSError: read-only file system)"]
    assert done.read_text() == "SIGTERM"


def test_a_start_up_signal_that_lands_inside_an_import_still_leaves_status_json(tmp_path):
    """Start-up's signal handler runs wherever the main thread is: here inside the first import of
    a codec (funasr's import reads files too). status.json is still written (it once read the
    umask through that very codec: "unknown encoding: ascii", no status.json, 1 run in 30)."""
    script = f"""
import os, signal, sys, time
from pathlib import Path
from nano8k import interrupts, launch
interrupts.install()
interrupts.at_once(lambda signum: launch.write_status(Path({str(tmp_path)!r}), "interrupted", time.time(), [],
                                                     signal=interrupts.signal_name(signum)))
armed = []
def land_inside_the_import(event, args):  # encodings.ascii imported, its code not yet run
    if event == "import" and args[0] == "encodings.ascii" and not armed:
        armed.append("import")
    elif event == "exec" and armed == ["import"]:
        armed.append("exec")
        os.kill(os.getpid(), signal.SIGINT)
sys.addaudithook(land_inside_the_import)
open({str(tmp_path / "plain.txt")!r}, "w", encoding="ascii").close()
time.sleep(30)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130 and proc.stderr.splitlines() == ["nano8k: SIGINT during start-up: stopped; nothing was trained"]
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "interrupted" and status["signal"] == "SIGINT"


def test_a_held_step_is_not_cut_in_two_when_the_process_has_a_second_thread(tmp_path):
    """interrupts.held() (the run lock written and registered, an export's swap): with a second
    thread (torch's OpenMP pool is one) the kernel delivers the signal there, and Python ran the
    handler in the main thread at once, inside the block. Now it waits for the block's end."""
    done = tmp_path / "swapped"
    script = f"""
import os, signal, threading, time
from nano8k import interrupts
interrupts.install()
threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
with interrupts.held():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.3)
    open({str(done)!r}, "w").write("both renames")
time.sleep(30)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 143 and proc.stderr.splitlines() == ["nano8k: SIGTERM during start-up: stopped; nothing was trained"]
    assert done.read_text() == "both renames"


def test_a_start_up_signal_is_acted_on_while_sys_stderr_is_busy(tmp_path):
    """The handler's line goes to the file descriptor: a signal landing while the interrupted code
    is inside sys.stderr's writer (a blocked write to a full pipe checks for signals there) made
    print() raise "reentrant call", out of the handler, and the process trained on."""
    done = tmp_path / "status"
    script = f"""
import sys, time, signal, os
from nano8k import interrupts
interrupts.install()
interrupts.at_once(lambda signum: open({str(done)!r}, "w").write("interrupted"))
class Busy:  # sys.stderr as the interrupted code leaves it: inside its own write
    def write(self, text): raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stderr>'>")
    def flush(self): raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stderr>'>")
sys.stderr = Busy()
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(5)
open({str(done)!r}, "w").write("trained on")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 143 and proc.stderr.splitlines() == ["nano8k: SIGTERM during start-up: stopped; nothing was trained"]
    assert done.read_text() == "interrupted"


def test_a_second_sigint_aborts_a_long_step_at_once(corpus, tmp_path):
    run = tmp_path / "run"
    # validation decodes up to 1,000 tokens per utterance with the tiny model's random LLM: seconds
    proc = subprocess.Popen(command(corpus, run, "valid_decode.max_new_tokens=1000"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env())
    metrics = run / "metrics.jsonl"
    while proc.poll() is None and not (metrics.exists() and '"step": 2,' in metrics.read_text()):
        time.sleep(0.01)  # step 2 is logged: its validation has begun
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    assert "nano8k: SIGINT received: stopping after the current step, with a checkpoint; Ctrl-C again aborts at once" in err
    assert err.splitlines()[-1] == "nano8k: SIGINT again: aborted at once (no checkpoint of the last steps)"
    assert not (run / "model.pt").exists()  # the validation's checkpoint was never written


def test_a_second_run_in_a_directory_in_use_is_refused_before_it_touches_anything(corpus, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"pid": holder.pid, "host": socket.gethostname(), "since": "2026-12-01 08:00:00", "token": "x"}
        (run / ".nano8k.lock").write_text(json.dumps(lock))
        result = train(corpus, run)
        assert result.code == 2
        assert result.stderr.splitlines() == [
            f"error: run directory {run} is in use by another nano8k run (pid {holder.pid} on {socket.gethostname()}, "
            f"since 2026-12-01 08:00:00); wait for it or choose another hydra.run.dir (if that run is gone, delete "
            f"{run / '.nano8k.lock'})"]
        assert sorted(p.name for p in run.iterdir()) == [".nano8k.lock"]  # no .hydra, no log, no status.json
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("where", ["file", "under_a_file", "proc"])
def test_a_run_directory_that_cannot_be_one_is_a_line_before_anything_runs(tmp_path, where):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    run_dir = {"file": a_file, "under_a_file": a_file / "run", "proc": Path("/proc/nano8k-run")}[where]
    result = run_cli("train", "+stage=stage1", "dry_run=true", f"hydra.run.dir={run_dir}")
    assert result.code == 2 and "Traceback" not in result.output
    expected = f"{a_file} is not a directory" if where != "proc" else "cannot write there"
    assert result.stderr.splitlines() == [f"error: run directory {run_dir}: {expected}" +
                                          (" (No such file or directory)" if where == "proc" else "")]


def test_a_preempted_submitit_job_is_requeued_and_resumes(corpus, reference, tmp_path):
    sweep = tmp_path / "sweep"
    args = [a for a in command(corpus, tmp_path, "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}")
            if not a.startswith("hydra.run.dir")]
    proc = subprocess.Popen([args[0], "train", "-m", *args[2:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env())
    job = sweep / "0"
    deadline = time.monotonic() + 240
    while proc.poll() is None and not (job / "model.pt.ep1.2").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    # submitit's preemption signal (SLURM sends it before the job's time is up or it is preempted)
    os.kill(json.loads((job / ".nano8k.lock").read_text())["pid"], signal.SIGUSR2)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    log = (job / "train.log").read_text()
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log and "resumed from" in log and json.loads((job / "status.json").read_text())["status"] == "completed"
    assert records(job) == records(reference) and same_weights(job / "model.pt", reference / "model.pt")
