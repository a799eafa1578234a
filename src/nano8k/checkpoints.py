"""A run directory's checkpoint files: their names, the one a directory stands for, reading
(weights_only) and writing (atomic), ranking by the run's criterion, pruning and averaging; and
the training state a checkpoint carries (TrainState).

The names and fields are FunASR's, so FunASR's own tools read a nano8k run: `model.pt` (the
latest, resumable: optimizer and scheduler too), `model.pt.epN` and `model.pt.epN.STEP` (each
validation, weights and counters), `model.pt.best`, `model.pt.avgN` (the mean of the N best).
FunASR writes them with torch.save in place (a kill mid-write leaves a torn file) and reads them
with a full unpickler; nano8k writes through a temporary file and reads tensors and plain values
only (funasr_gaps item 7).
"""

from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from nano8k import config
from nano8k.errors import UserError
from nano8k.files import atomic_path

log = logging.getLogger(__name__)

# A model directory's weights and a run's latest checkpoint have FunASR's one name.
LATEST = "model.pt"
BEST = "model.pt.best"
AVERAGED_PREFIX = "model.pt.avg"  # + the number averaged
EPOCH_CHECKPOINT = re.compile(r"^model\.pt\.ep(\d+)(?:\.(\d+))?$")

# Only model.pt, the file a resume reads, carries the optimizer and scheduler state: in the epoch
# checkpoints and model.pt.best it would triple their size (Adam keeps two moments per trained
# weight) for a fall-back that rundir takes only when model.pt is damaged (then the optimizer
# starts afresh, and the trainer says so).
RESUME_ONLY = ("optimizer", "scheduler")


def epoch_name(epoch: int, step_in_epoch: int | None = None) -> str:
    """model.pt.epN (the end of epoch N, counted from 1) or model.pt.epN.STEP (inside it); `epoch`
    counts from 0."""
    return f"model.pt.ep{epoch + 1}" + (f".{step_in_epoch}" if step_in_epoch else "")


def averaged_name(count: int) -> str:
    return f"{AVERAGED_PREFIX}{count}"


def is_averaged(name: str) -> bool:
    return name.startswith(AVERAGED_PREFIX)


def position(name: str) -> tuple[int, float]:
    """(epoch, batch) of an epoch checkpoint's name; an epoch's end sorts after its batches."""
    epoch, step = EPOCH_CHECKPOINT.match(name).groups()
    return int(epoch), int(step) if step else float("inf")


def epoch_checkpoints(run_dir: Path) -> list[Path]:
    """The run's epoch checkpoints, newest first."""
    found = (p for p in Path(run_dir).glob("model.pt.ep*") if EPOCH_CHECKPOINT.match(p.name))
    return sorted(found, key=lambda p: position(p.name), reverse=True)


def holds_checkpoints(names: set[str]) -> bool:
    """Do these file names include a training run's own checkpoints (epoch or averaged)?"""
    return any(EPOCH_CHECKPOINT.match(n) or is_averaged(n) for n in names)


def choose(path: Path, key: str = "init_param") -> Path:
    """A checkpoint file as is; a run directory -> its averaged (the most averaged), else best, else
    latest checkpoint. `key`: the setting the path came from, for the error."""
    if path.is_file():
        return path
    if path.is_dir():
        averaged = sorted(path.glob(f"{AVERAGED_PREFIX}*"),
                          key=lambda p: int(re.sub(r"\D", "", p.name[len(AVERAGED_PREFIX):]) or 0))
        for candidate in [*reversed(averaged), path / BEST, path / LATEST]:
            if candidate.is_file():
                return candidate
        raise UserError(f"{key}: no checkpoint in {path} (looked for {AVERAGED_PREFIX}*, {BEST}, {LATEST})")
    raise UserError(f"{key}: {path} does not exist")


def read(path: Path, mmap: bool = False) -> Any:
    """The object a checkpoint file holds, unpickled with weights_only=True: tensors and plain
    values only, so a crafted file cannot run code (nano8k's own checkpoints, random states
    included, need nothing more). One-line error when unreadable or refused. mmap: tensors stay
    on disk until read (looking at a multi-GB checkpoint's fields costs next to nothing)."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError as err:
        if mmap and "_use_new_zipfile_serialization" in str(err):  # torch's legacy format cannot be mapped
            return read(path)
        reason = str(err).strip().split(". ")[0].splitlines()[0][:120] if str(err).strip() else "empty"
        raise UserError(f"{path}: not a readable checkpoint ({type(err).__name__}: {reason})") from None
    except pickle.UnpicklingError as err:
        what = str(err).split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0][:120]
        raise UserError(f"{path}: refused: it holds Python objects beyond tensors and plain values, and loading it "
                        f"could run code ({what}); nano8k loads checkpoints with weights_only=True") from None
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint gets the same one-liner
        reason = str(err).strip().split(". ")[0].splitlines()[0][:120] if str(err).strip() else "empty"
        raise UserError(f"{path}: not a readable checkpoint ({type(err).__name__}: {reason})") from None


def save(obj: Any, path: Path) -> None:
    """torch.save through a temporary file and a rename: the file is whole or not there, and the
    one it replaces stays intact when the write fails (a one-line error saying how much space is
    left)."""
    import shutil

    import torch

    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except (OSError, RuntimeError) as err:  # torch's zip writer reports ENOSPC as a RuntimeError
        log.debug("writing %s failed: %s", path, err)
        reason = (err.strerror if isinstance(err, OSError) else None) or "the write failed"
        try:
            free = f"{shutil.disk_usage(path.parent).free / 1e9:.2f} GB free on that file system"
        except OSError:
            free = "free space unknown"
        raise UserError(f"{path}: cannot write the checkpoint ({reason}; {free}: disk full, or a quota?); the "
                        "checkpoints written before it are intact") from None


def weights_in(checkpoint: Any) -> dict:
    """The state dict of a checkpoint object (FunASR's, nano8k's or a bare one), `module.` stripped."""
    state = checkpoint
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def weights_only(checkpoint: dict) -> dict:
    """A checkpoint without the optimizer and scheduler state (weights, counters, history)."""
    return {k: v for k, v in checkpoint.items() if k not in RESUME_ONLY}


def rank_key(criterion: str, metrics: dict) -> tuple[float, ...]:
    """Higher is better: the criterion first (in its direction, config.CRITERIA: accuracy up, loss
    and error rates down), then the others as tie-breakers. A metric not computed ranks last."""
    def up(name: str) -> float:
        value = metrics.get(f"val_{name}")
        if value is None or not math.isfinite(value):
            return -math.inf
        return config.CRITERIA[name] * value

    order = [criterion, *(c for c in (*config.DECODED_CRITERIA, "acc", "loss") if c != criterion)]
    return tuple(up(name) for name in order)


def average(run_dir: Path, names: list[str], count: int, fields_kept: dict) -> Path:
    """model.pt.avg{count} (train_conf.avg_nbest_model, even when fewer checkpoints exist): the mean
    of the named checkpoints, tensor by tensor from memory-mapped files (one state in memory, not
    N stacked: at the released size each checkpoint is a GB, read while the model and optimizer
    are still held). `fields_kept`: written beside the weights."""
    import torch

    states = [weights_in(read(run_dir / name, mmap=True)) for name in names]
    averaged = OrderedDict()
    for key in states[0]:
        tensors = [s[key] for s in states]
        if tensors[0].is_floating_point():
            total = tensors[0].to(torch.float32, copy=True)
            for tensor in tensors[1:]:
                total += tensor
            averaged[key] = total.div_(len(tensors)).to(tensors[0].dtype)
        else:
            averaged[key] = tensors[0]
    path = run_dir / averaged_name(count)
    save({"state_dict": averaged, "averaged": list(names), **fields_kept}, path)
    return path


# -- the training state a checkpoint carries ---------------------------------------------------


@dataclass
class History:
    """What summary.json reports over a run's whole life; checkpoints carry it across resumes."""
    loss_curve: list[dict] = field(default_factory=list)  # every log_interval steps
    epochs_log: list[dict] = field(default_factory=list)  # per epoch: mean train loss, validation
    epoch_losses: list[float] = field(default_factory=list)  # the unfinished epoch's (a mid-epoch resume)
    nonfinite_steps: int = 0  # batches skipped for a non-finite loss or gradient
    stopped_early: bool = False  # train_conf.early_stopping_patience
    resumes: int = 0
    wall_s: float = 0.0  # training time of the processes before this one
    metrics_lines: int | None = None  # metrics.jsonl's length when the checkpoint was written

    @classmethod
    def of(cls, saved: dict | None) -> "History":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (saved or {}).items() if k in known})


@dataclass
class TrainState:
    """Where a run is: counters, FunASR's validation tables and best checkpoint, the history."""
    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps
    step_in_epoch: int = 0  # batches of the next epoch trained (a mid-epoch checkpoint)
    saved_ckpts: dict[str, float] = field(default_factory=dict)  # FunASR's: checkpoint kept -> validation loss
    # FunASR's val_loss_step_or_epoch, val_acc_step_or_epoch (and nano8k's val_cer_..., ...):
    # metric -> checkpoint name -> value
    validation: dict[str, dict[str, float]] = field(default_factory=lambda: {"val_acc": {}, "val_loss": {}})
    best_step_or_epoch: str | None = None
    best_metrics: dict = field(default_factory=dict)
    history: History = field(default_factory=History)
    rng_states: list | None = None  # a mid-epoch resume's, put back once the epoch's batches exist

    @property
    def best_val_loss(self) -> float | None:
        return self.best_metrics.get("val_loss")

    @property
    def best_val_acc(self) -> float | None:
        return self.best_metrics.get("val_acc")

    def record(self, name: str, result: dict[str, float]) -> None:
        """One validation's metrics, under the checkpoint name it is saved as."""
        for metric, value in result.items():
            self.validation.setdefault(metric, {})[name] = value

    def metrics_of(self, name: str | None) -> dict:
        """One checkpoint's validation metrics."""
        if not name:
            return {}
        return {metric: table[name] for metric, table in self.validation.items() if name in table}

    def is_better(self, result: dict, criterion: str) -> bool:
        return not self.best_step_or_epoch or rank_key(criterion, result) > rank_key(criterion, self.best_metrics)

    def ranked(self, run_dir: Path, criterion: str) -> list[str]:
        """The checkpoints still on disk, best first by the criterion (ties broken by the others)."""
        names = [n for n in self.validation["val_loss"] if (run_dir / n).exists()]
        return sorted(names, key=lambda n: rank_key(criterion, self.metrics_of(n)), reverse=True)

    def prune(self, run_dir: Path, criterion: str, keep: int) -> None:
        """Delete all but the `keep` best checkpoints (train_conf.keep_nbest_models)."""
        for name in self.ranked(run_dir, criterion)[keep:]:
            (run_dir / name).unlink(missing_ok=True)
            self.saved_ckpts.pop(name, None)

    def epochs_without_improvement(self) -> int:
        """Epochs since the best end-of-epoch validation loss (FunASR's early stopping counts these;
        mid-epoch validations, `model.pt.epN.STEP`, do not count)."""
        epochs = sorted((int(name.rsplit("ep", 1)[1]), loss) for name, loss in self.validation["val_loss"].items()
                        if name.rsplit("ep", 1)[-1].isdigit())
        best, stale = math.inf, 0
        for _, loss in epochs:
            best, stale = (loss, 0) if loss < best else (best, stale + 1)
        return stale

    def checkpoint_fields(self, epoch: int, step_in_epoch: int | None) -> dict:
        """FunASR's checkpoint fields for this state, saved at `epoch` (from 0) and `step_in_epoch`
        (None: the epoch's end), and nano8k's history."""
        return {
            "epoch": epoch + 1 if step_in_epoch is None else epoch, "step": self.step,
            "step_in_epoch": step_in_epoch or 0, "saved_ckpts": dict(self.saved_ckpts),
            **{f"{metric}_step_or_epoch": dict(table) for metric, table in self.validation.items()},
            "best_step_or_epoch": self.best_step_or_epoch or "", "data_split_i": 0, "data_split_num": 1,
            "batch_total": self.step, "best_val_loss": self.best_val_loss, "best_val_acc": self.best_val_acc,
            "best_metrics": self.best_metrics or None, "history": asdict(self.history),
        }

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "TrainState":
        validation = {key[: -len("_step_or_epoch")]: dict(table or {}) for key, table in checkpoint.items()
                      if key.endswith("_step_or_epoch") and key != "best_step_or_epoch"}
        state = cls(epoch=int(checkpoint.get("epoch", 0)), step=int(checkpoint.get("step", 0)),
                    step_in_epoch=int(checkpoint.get("step_in_epoch") or 0),
                    saved_ckpts=dict(checkpoint.get("saved_ckpts") or {}),
                    validation={"val_acc": {}, "val_loss": {}, **validation},
                    best_step_or_epoch=checkpoint.get("best_step_or_epoch") or None,
                    history=History.of(checkpoint.get("history")), rng_states=checkpoint.get("rng_states"))
        state.best_metrics = dict(checkpoint.get("best_metrics") or state.metrics_of(state.best_step_or_epoch))
        return state
