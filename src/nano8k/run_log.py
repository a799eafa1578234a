"""Where a training run's numbers go (rank 0): metrics.jsonl, TensorBoard, Weights & Biases, the
console's tables and summary.json (written atomically)."""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nano8k import checkpoints
from nano8k.errors import UserError
from nano8k.files import atomic_path, json_safe

log = logging.getLogger(__name__)


@dataclass
class Summary:
    run_dir: str
    steps: int = 0
    epochs: int = 0
    wall_s: float = 0.0
    final_train_loss: float | None = None
    best_val_loss: float | None = None
    best_val_acc: float | None = None
    best_val_cer: float | None = None  # the best checkpoint's, by best_criterion
    best_criterion: str = "acc"  # train_conf.avg_keep_nbest_models_type: acc, loss, cer or wer
    best_step_or_epoch: str | None = None
    best_checkpoint: str | None = None
    averaged_model: str | None = None
    stopped_early: bool = False  # train_conf.early_stopping_patience
    nonfinite_steps: int = 0  # batches skipped for a non-finite loss or gradient (max_nonfinite_steps)
    diverged: bool = False
    interrupted: bool = False  # by a signal; the run resumes from model.pt
    resumes: int = 0  # times this run was resumed
    total_wall_s: float = 0.0  # over every resume (wall_s: this process)
    loss_curve: list[dict] = field(default_factory=list)  # every log_interval steps, over every resume
    epochs_log: list[dict] = field(default_factory=list)  # per epoch: mean train loss, validation

    @classmethod
    def of(cls, run_dir: Path, state: checkpoints.TrainState, criterion: str, wall_s: float,
           averaged_model: str | None = None, diverged: bool = False, interrupted: bool = False) -> "Summary":
        """The run's whole life (the state's history covers every resume); wall_s: this process's."""
        history = state.history
        best = run_dir / checkpoints.BEST
        return cls(run_dir=str(run_dir), steps=state.step, epochs=state.epoch, wall_s=round(wall_s, 2),
                   final_train_loss=history.epochs_log[-1]["train_loss"] if history.epochs_log else None,
                   best_val_loss=state.best_val_loss, best_val_acc=state.best_val_acc,
                   best_val_cer=state.best_metrics.get("val_cer"), best_criterion=criterion,
                   best_step_or_epoch=state.best_step_or_epoch, best_checkpoint=str(best) if best.exists() else None,
                   averaged_model=averaged_model, stopped_early=history.stopped_early,
                   nonfinite_steps=history.nonfinite_steps, diverged=diverged, interrupted=interrupted,
                   resumes=history.resumes, total_wall_s=round(history.wall_s + wall_s, 2),
                   loss_curve=history.loss_curve, epochs_log=history.epochs_log)

    def write(self) -> None:
        with atomic_path(Path(self.run_dir) / "summary.json") as tmp:
            Path(tmp).write_text(json.dumps(json_safe(asdict(self)), indent=2, allow_nan=False) + "\n",
                                 encoding="utf-8")

    def print(self) -> None:
        from rich.console import Console

        console = Console(stderr=True)
        stopped = " (stopped early: no validation improvement)" if self.stopped_early else ""
        console.print(f"[bold]done[/] in {self.wall_s:.1f}s: {self.epochs} epochs, {self.steps} steps{stopped}")
        for row in self.epochs_log:
            train = f"{row['train_loss']:.4f}" if row["train_loss"] is not None else "-"
            rates = "".join(f", {label} {100 * row[key]:.1f}%" for key, label in
                            (("val_cer", "CER"), ("val_wer", "WER"), ("val_ctc_cer", "CTC CER")) if row.get(key) is not None)
            console.print(f"  epoch {row['epoch']}: train loss {train}, validation loss {row['val_loss']:.4f}, "
                          f"accuracy {row['val_acc']:.4f}{rates}")
        console.print(f"best checkpoint by validation {self.best_criterion}: {self.best_step_or_epoch}")
        console.print(f"run directory: {self.run_dir}")
        if self.averaged_model:
            console.print(f"averaged model: {self.averaged_model}")


class Metrics:
    """Where rank 0's numbers go: metrics.jsonl, TensorBoard (RUN/tensorboard) and, with
    train_conf.use_wandb, Weights & Biases (FunASR's keys: wandb_project, wandb_team,
    wandb_exp_name, wandb_token; WANDB_MODE=offline writes RUN/wandb without a network)."""

    def __init__(self, run_dir: Path, settings: dict, purge_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        path = run_dir / "metrics.jsonl"
        self.lines = sum(1 for _ in path.open("rb")) if path.is_file() else 0  # checkpoints record it
        self.file = path.open("a", encoding="utf-8")
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step)
        self.wandb = _wandb_run(run_dir, settings) if (settings.get("train_conf") or {}).get("use_wandb") else None

    def emit(self, record: dict, split: str, step: int) -> None:
        self.file.write(json.dumps(json_safe({"split": split, **record}), allow_nan=False) + "\n")
        self.file.flush()
        self.lines += 1
        scalars = {f"{split}/{key}": float(value) for key, value in record.items()
                   if key not in ("epoch", "step", "checkpoint", "wall_s") and is_number(value)}
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)
        if self.wandb is not None:
            self.wandb.log({**scalars, "epoch": record["epoch"]}, step=step)
        if split == "valid":
            rates = "".join(f" {key[4:]} {record[key]:.4f}" for key in ("val_cer", "val_wer", "val_ctc_cer")
                            if record.get(key) is not None)
            parts = "".join(f" ({key[4:]} {record[key]:.4f})" for key in ("val_loss_llm", "val_loss_ctc") if key in record)
            log.info("validation at step %d: loss %.4f%s acc %.4f%s (%s)", step, record["val_loss"], parts,
                     record["val_acc"], rates, record["checkpoint"])

    def close(self) -> None:
        self.file.close()
        self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def truncate_metrics(path: Path, lines: int | None) -> None:
    """metrics.jsonl as it was when the resumed checkpoint was written (lines: 0 for a run that
    starts over): the records of steps trained again would otherwise appear twice."""
    if lines is None or not path.is_file():
        return
    with path.open("rb") as f:
        kept = [line for _, line in zip(range(lines), f)]
        dropped = sum(1 for _ in f)
    if dropped:
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(b"".join(kept))
        log.info("metrics.jsonl: %d record(s) after the checkpoint this run starts from removed (those steps are "
                 "trained again)", dropped)


def brief(result: dict) -> str:
    """The last validation, for the progress bar."""
    parts = [f"val loss {result['val_loss']:.3f}"]
    parts += [f"{label} {100 * result[key]:.1f}%" for key, label in (("val_cer", "CER"), ("val_ctc_cer", "CTC CER"))
              if result.get(key) is not None]
    return "| " + " ".join(parts)


def print_parameter_table(rows: list[tuple[str, int, int]], policy: dict, model_dir: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Parameters ({model_dir})")
    table.add_column("module")
    table.add_column("total", justify="right")
    table.add_column("trainable", justify="right")
    table.add_column("policy")
    for module, total, trainable in rows:
        table.add_row(module, f"{total:,}", f"{trainable:,}", "frozen" if policy.get(module) else "trains")
    table.add_row("total", f"{sum(r[1] for r in rows):,}", f"{sum(r[2] for r in rows):,}", "", style="bold")
    Console(stderr=True).print(table)
    log.info("parameters: %s", "; ".join(f"{m} {t}/{tr}" for m, t, tr in rows))


def is_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def require_wandb() -> Any:
    try:
        import wandb
    except ImportError:
        raise UserError("train_conf.use_wandb: true needs Weights & Biases: pip install 'nano8k[wandb]'") from None
    return wandb


def _wandb_run(run_dir: Path, settings: dict) -> Any:
    wandb = require_wandb()
    train_conf = settings.get("train_conf") or {}
    if train_conf.get("wandb_token"):
        wandb.login(key=train_conf["wandb_token"])
    # Never upload the key: not in the config, and not in the command line W&B records (sys.argv).
    shown = {**settings, "train_conf": {k: v for k, v in train_conf.items() if k != "wandb_token"}}
    argv = sys.argv
    sys.argv = [re.sub(r"(wandb_token=).*", r"\1<redacted>", arg) for arg in argv]
    try:
        return wandb.init(project=train_conf.get("wandb_project") or "nano8k", entity=train_conf.get("wandb_team"),
                          name=train_conf.get("wandb_exp_name") or run_dir.name, dir=str(run_dir), config=shown,
                          job_type="training")
    finally:
        sys.argv = argv
