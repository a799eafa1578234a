"""A training run's directory, before anything is built: can it be written, is another run using
it, where does training resume from, has it finished, and does the command agree with the run's
config.yaml.

The rules (README, "What a run survives"):
- a run directory that cannot be created or written is a one-line error; a lock file
  (`.nano8k.lock`: pid, host, start time) keeps a second run out while one is training there;
- temporary files of writes that were killed (`.model.pt*.tmp-PID`) are removed;
- training resumes from `model.pt`, or, when it is missing or damaged, from the newest intact
  epoch checkpoint (`model.pt.epN` or `model.pt.epN.STEP`), saying so; never silently from scratch;
- a finished run (max_epoch reached, or stopped early) is left as it is;
- resuming with other optimizer, scheduler, batching or data values than config.yaml is an error
  unless `resume_with_changes=true`.

Nothing here imports funasr; reading a checkpoint imports torch (memory-mapped, weights_only).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path



from nano8k import checkpoints, config, interrupts
from nano8k.errors import UserError
from nano8k.files import read_yaml

log = logging.getLogger(__name__)

LOCK_FILE = ".nano8k.lock"
LOCK_ENV = "NANO8K_RUN_LOCK"  # processes a locked run starts (torchrun ranks) inherit the lock
# the temporary names of files.atomic_path (`.NAME.XXXXXXXX.tmp`), which every write of a run goes
# through, and `.NAME.tmp-PID` (nano8k before 2026-12-07): what a killed write leaves
TEMPORARY = re.compile(r"^\..+\.tmp(-\d+)?$")

# What a resumed run must not change silently: the optimizer and its schedule, how batches are
# formed, and what they are formed from (a changed value means the run is no longer the one its
# checkpoints and config.yaml describe).
RESUME_SENSITIVE = ("optim", "optim_conf", "scheduler", "scheduler_conf", "dataset_conf", "train_data_set_list",
                    "valid_data_set_list", "train_conf.accum_grad", "train_conf.grad_clip", "train_conf.grad_clip_type",
                    "seed", "augment")
# ... except how the batches are loaded, which a new machine may well change
LOADING_ONLY = ("dataset_conf.num_workers", "dataset_conf.pin_memory", "dataset_conf.persistent_workers",
                "dataset_conf.prefetch_factor")


class InUse(UserError):
    """The run directory is another run's (or a model's): nothing of it may be touched (status.json
    neither)."""

    leaves_run_dir_alone = True


def check_writable(run_dir: Path) -> None:
    """One line, before anything is built, when the run directory cannot hold a run."""
    run_dir = Path(run_dir)
    for parent in (run_dir, *run_dir.parents):
        if parent.exists() and not parent.is_dir():
            raise UserError(f"run directory {run_dir}: {parent} is not a directory")
        if parent.exists():
            break
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".nano8k-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(f"run directory {run_dir}: cannot write there ({err.strerror or err})") from None


# What a directory holds, by the files nano8k's commands leave there (kind_of).
TRAINING_RUN_FILES = ("train.log", "params.tsv", "summary.json")
DECODE_FILES = ("decode.log", "results.jsonl")


def kind_of(directory: Path) -> str | None:
    """"training run", "model directory", "decode directory", "empty", None (absent) or "other"."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    names = {p.name for p in directory.iterdir()}
    if names & set(TRAINING_RUN_FILES) or checkpoints.holds_checkpoints(names):
        return "training run"
    if checkpoints.LATEST in names or ("config.yaml" in names and "configuration.json" in names):
        return "model directory"
    if names & set(DECODE_FILES):
        return "decode directory"
    return "empty" if not names - {".hydra", LOCK_FILE} else "other"


def requested_run_dir(argv: list[str]) -> tuple[str | None, bool]:
    """(the run or sweep directory a command line names, multirun), or (None, _) when it names
    none, or the command only shows something (--cfg, --help, ...)."""
    from hydra._internal.utils import get_args_parser

    try:
        args = get_args_parser().parse_args(list(argv))
    except SystemExit:
        return None, False
    if args.cfg or args.help or args.hydra_help or args.info or args.shell_completion:
        return None, False
    key = "hydra.sweep.dir=" if args.multirun else "hydra.run.dir="
    given = [a.split("=", 1)[1] for a in args.overrides if a.lstrip("+").startswith(key)]
    return (given[-1].strip("'\"") if given else None), bool(args.multirun)


def check_requested(argv: list[str], app: str = "train") -> None:
    """The run (or sweep) directory a command line names, checked before Hydra creates it (Hydra
    answers a path under a file, or one it cannot create, with a traceback, and writes .hydra/
    there before nano8k runs). A directory that still holds interpolations (`outputs/${now:...}`)
    is checked from its literal start. A decode never writes into a training run or a model
    directory, whose config.yaml and status.json it would replace."""
    value, multirun = requested_run_dir(argv)
    if not value:
        return
    literal = value.split("${", 1)[0]
    if literal:
        check_writable(Path(literal) if literal == value or literal.endswith("/") else Path(literal).parent)
    if literal != value or multirun:
        return
    if app == "decode":
        check_decode_dir(Path(value))
    else:
        check_not_a_model(Path(value))
    RunLock(Path(value)).check()


def check_not_a_model(run_dir: Path, model_dir: str | Path | None = None) -> None:
    """A training run never writes into a model directory (the base model's model.pt and
    config.yaml would be replaced by the run's): one line, whatever train_conf.resume says."""
    if kind_of(run_dir) == "model directory" or (
            model_dir is not None and Path(str(model_dir)).expanduser().resolve() == Path(run_dir).resolve()):
        raise UserError(f"hydra.run.dir={run_dir}: is a model directory (model.pt, config.yaml): training there would "
                        f"replace them; train into a new directory (e.g. hydra.run.dir={run_dir.with_name(run_dir.name + '-run')})")


def check_decode_dir(run_dir: Path) -> None:
    """A decode's run directory is new, empty or a decode's: refuse a training run, a model
    directory and a directory of other files (one line naming it and what it is)."""
    kind = kind_of(run_dir)
    if kind in (None, "empty", "decode directory"):
        return
    what = {"training run": "a training run (train.log, checkpoints): decoding there would replace its config.yaml and "
                            "status.json, and the run could no longer be resumed or decoded",
            "model directory": "a model directory (model.pt): decoding there would replace its config.yaml",
            "other": "a directory of other files, not a decode's (decode.log, results.jsonl)"}[kind]
    example = run_dir / "decode" if kind == "training run" else run_dir.with_name(f"{run_dir.name}-decode")
    raise InUse(f"hydra.run.dir={run_dir}: is {what}; decode into a new directory (e.g. hydra.run.dir={example})")


class RunLock:
    """`.nano8k.lock` in the run directory while a run trains (or a decode writes) there (rank 0
    of a job). `target`: a directory that does not exist yet (an export's OUT) is locked by
    `.OUT.nano8k.lock` beside it."""

    def __init__(self, run_dir: Path, target: Path | None = None):
        self.path = Path(target).parent / f".{Path(target).name}{LOCK_FILE}" if target else Path(run_dir) / LOCK_FILE
        self.what, self.other = (str(target), "OUT") if target else (f"run directory {run_dir}", "hydra.run.dir")
        self.token = f"{socket.gethostname()}:{os.getpid()}:{time.time():.0f}"
        self.owned = False

    def check(self) -> None:
        """Refuse now if a live run holds the directory (before Hydra writes .hydra/ and its log)."""
        if self.path.exists() and not self._inherited():
            holder = self._holder()
            if not self._stale(holder):
                raise self._in_use(holder)

    def _inherited(self) -> bool:
        return bool(os.environ.get(LOCK_ENV)) and self._holder().get("token") == os.environ[LOCK_ENV]

    def _in_use(self, holder: dict) -> UserError:
        return InUse(f"{self.what} is in use by another nano8k run (pid {holder.get('pid', '?')} "
                     f"on {holder.get('host', '?')}, since {holder.get('since', '?')}); wait for it or choose another "
                     f"{self.other} (if that run is gone, delete {self.path})")

    def acquire(self) -> "RunLock":
        if self._inherited():
            return self  # our parent process (the job that re-executed itself under torchrun) holds it
        for _ in range(2):
            with interrupts.held():  # a signal never finds the lock on disk but not yet released at once
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    fd = None
                if fd is not None:
                    with os.fdopen(fd, "w", encoding="utf-8") as f:
                        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                                   "since": time.strftime("%Y-%m-%d %H:%M:%S"), "token": self.token}, f)
                    self.owned = True
                    os.environ[LOCK_ENV] = self.token
                    interrupts.at_once(self._released_at_once)
                    return self
            holder = self._holder()
            if self._stale(holder):
                log.warning("%s: removing the lock of a run that is gone (pid %s on %s)", self.path,
                            holder.get("pid"), holder.get("host"))
                self.path.unlink(missing_ok=True)
                continue
            raise self._in_use(holder) from None
        raise UserError(f"{self.path}: cannot take the run directory's lock")

    def _released_at_once(self, signum: int) -> None:
        self.release()

    def release(self) -> None:
        interrupts.forget(self._released_at_once)
        if self.owned and self._holder().get("token") == self.token:
            self.path.unlink(missing_ok=True)
        self.owned = False
        if os.environ.get(LOCK_ENV) == self.token:
            del os.environ[LOCK_ENV]

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _stale(self, holder: dict) -> bool:
        """A lock left by a killed run on this host (its pid is gone). A lock from another host is
        never taken over: nano8k cannot tell whether that run is alive."""
        if not holder:  # empty or unreadable: being written this instant, or by a run killed doing it
            try:
                return time.time() - self.path.stat().st_mtime > 10
            except OSError:
                return True
        if holder.get("host") != socket.gethostname() or not str(holder.get("pid", "")).isdigit():
            return False
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def remove_temporaries(run_dir: Path) -> None:
    """Temporary files of checkpoint writes that were killed (the lock says nobody else writes)."""
    found = [p for p in Path(run_dir).iterdir() if TEMPORARY.match(p.name) and p.is_file()]
    if found:
        size = sum(p.stat().st_size for p in found)
        for p in found:
            p.unlink(missing_ok=True)
        log.info("removed %d temporary file(s) of interrupted writes (%.1f MB): %s", len(found), size / 1e6,
                 ", ".join(p.name for p in found))


@dataclass
class ResumePoint:
    path: Path
    epoch: int  # epochs completed
    step_in_epoch: int  # batches of the next epoch already trained (0: at an epoch boundary)
    step: int
    stopped_early: bool
    deepspeed: bool  # written under DeepSpeed: its optimizer state is a DeepSpeed directory


def _resumable(path: Path) -> tuple[ResumePoint | None, str]:
    """(the point a checkpoint resumes at, "") or (None, why it cannot be resumed from)."""
    try:
        checkpoint = checkpoints.read(path, mmap=True)
    except UserError as err:
        return None, str(err)
    # model.pt holds the optimizer state; an epoch checkpoint of nano8k's holds the weights and the
    # run's counters (checkpoints.RESUME_ONLY), enough to go on with a fresh optimizer
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or not (
            "optimizer" in checkpoint or "deepspeed_state" in checkpoint or checkpoint.get("nano8k")):
        return None, f"{path}: not a training checkpoint (no weights and optimizer state)"
    return ResumePoint(path, int(checkpoint.get("epoch", 0)), int(checkpoint.get("step_in_epoch") or 0),
                       int(checkpoint.get("step", 0)), bool((checkpoint.get("history") or {}).get("stopped_early")),
                       bool(checkpoint.get("deepspeed_state"))), ""


def resume_point(run_dir: Path) -> ResumePoint | None:
    """Where training resumes: model.pt, else the newest intact epoch checkpoint; None for a
    directory without checkpoints. A damaged model.pt is named, and the fallback too."""
    run_dir = Path(run_dir)
    epochs = checkpoints.epoch_checkpoints(run_dir)
    latest = run_dir / checkpoints.LATEST
    candidates = ([latest] if latest.exists() else []) + epochs
    problems = []
    for path in candidates:
        point, problem = _resumable(path)
        if point is None:
            problems.append(problem)
            continue
        for problem in problems:
            log.error("%s", problem)
        if path != latest:
            why = "is damaged" if latest.exists() else "is missing"
            log.warning("%s %s: resuming from %s (epoch %d, step %d) instead", latest, why, path.name,
                        point.epoch + (1 if point.step_in_epoch else 0), point.step)
        return point
    if problems:
        raise UserError(f"{problems[0]}; no intact checkpoint in {run_dir} to resume from (train_conf.resume=false "
                        "starts over, overwriting it)")
    return None


def unfinished_parts(run_dir: Path) -> list[str]:
    """What a run that trained all its epochs still lacks of its finishing (a kill in that window):
    summary.json, the averaged model it names, a completed status.json; [] for a finished run."""
    run_dir = Path(run_dir)
    missing = []
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = None
        missing.append("summary.json")
    averaged = (summary or {}).get("averaged_model")
    if summary is None or (averaged and not Path(averaged).is_file() and not (run_dir / Path(averaged).name).is_file()):
        missing.append(Path(averaged).name if averaged else "the averaged model")
    try:
        if json.loads((run_dir / "status.json").read_text(encoding="utf-8")).get("status") != "completed":
            missing.append("a completed status.json")
    except (OSError, ValueError):
        missing.append("status.json")
    return missing


def finished(point: ResumePoint, max_epoch: int) -> str | None:
    """Why a run needs no more training, or None."""
    if point.stopped_early:
        return f"it stopped early after epoch {point.epoch} (train_conf.early_stopping_patience)"
    if point.step_in_epoch == 0 and point.epoch >= max_epoch:
        return f"it trained {point.epoch} of train_conf.max_epoch={max_epoch} epochs"
    return None


def config_changes(run_dir: Path, settings: dict) -> list[str]:
    """`key: old -> new` for each resume-sensitive value that differs from the run's config.yaml."""
    saved_file = Path(run_dir) / "config.yaml"
    if not saved_file.is_file():
        return []
    saved = config.flatten(read_yaml(saved_file, "run config"))
    new = config.flatten(settings)
    sensitive = lambda key: key not in LOADING_ONLY and any(key == s or key.startswith(s + ".")  # noqa: E731
                                                            for s in RESUME_SENSITIVE)
    keys = sorted(k for k in set(saved) | set(new) if sensitive(k) and saved.get(k) != new.get(k))
    return [f"{k}: {saved.get(k)!r} -> {new.get(k)!r}" for k in keys]
