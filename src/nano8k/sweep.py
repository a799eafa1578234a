"""`nano8k sweep summary`: one row per job of a Hydra multirun directory."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import yaml

from nano8k.errors import UserError
from nano8k.files import atomic_path

COLUMNS = ("job", "status", "overrides", "best_val_loss", "best_val_acc", "cer", "wer", "steps", "wall_s", "error")
# sort keys and whether larger is better
METRICS = {"best_val_loss": False, "best_val_acc": True, "cer": False, "wer": False, "wall_s": False, "steps": True}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """A row per job directory (one with .hydra/overrides.yaml), failed and unfinished ones included."""
    if not sweep_dir.is_dir():
        raise UserError(f"{sweep_dir}: not a directory")
    jobs = sorted((p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")),
                  key=lambda p: (len(p.name), p.name))
    if not jobs:
        raise UserError(f"{sweep_dir}: no sweep jobs here (no */.hydra/overrides.yaml)")
    rows = []
    for job in jobs:
        status, summary = _read_json(job / "status.json"), _read_json(job / "summary.json")
        decoded = _read_json(job / "metrics.json")  # written when the job decoded a test set
        overrides = status.get("overrides") or yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
        rows.append({
            "job": job.name,
            "status": status.get("status", "unfinished"),
            "overrides": " ".join(overrides),
            "best_val_loss": summary.get("best_val_loss"),
            "best_val_acc": summary.get("best_val_acc"),
            "cer": decoded.get("cer"),
            "wer": decoded.get("wer"),
            "steps": summary.get("steps"),
            "wall_s": status.get("wall_s", summary.get("wall_s")),
            "error": status.get("error") or "",
        })
    return rows


def sort_rows(rows: list[dict], metric: str) -> list[dict]:
    if metric not in METRICS:
        raise UserError(f"--sort {metric}: choose one of {', '.join(METRICS)}")
    better_high = METRICS[metric]
    done = [r for r in rows if r.get(metric) is not None]
    rest = [r for r in rows if r.get(metric) is None]
    return sorted(done, key=lambda r: r[metric], reverse=better_high) + rest


def write_csv(rows: list[dict], path: Path) -> None:
    """The summary table, whole or not at all (atomic: a rerun replaces it)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def common_overrides(rows: list[dict]) -> list[str]:
    """Overrides every job shares (shown once, above the table)."""
    sets = [row["overrides"].split() for row in rows]
    return [o for o in sets[0] if all(o in s for s in sets[1:])] if sets else []


def render(rows: list[dict], title: str) -> Any:
    """A rich table: the overrides that vary between jobs, then the metrics."""
    from rich.table import Table

    shared = set(common_overrides(rows))
    table = Table(title=title, caption=f"every job: {' '.join(sorted(shared))}" if shared else None)
    shown = [c for c in COLUMNS if c != "error" and any(r[c] not in (None, "") for r in rows)]
    for column in shown:
        table.add_column(column.replace("best_val_", "val_"), justify="left" if column in ("overrides", "status") else "right",
                         overflow="fold")
    for row in rows:
        cells = []
        for column in shown:
            value = row[column]
            if column == "overrides":
                value = " ".join(o for o in value.split() if o not in shared)
            cells.append("" if value is None else f"{value:.4f}" if isinstance(value, float) and column != "wall_s" else str(value))
        table.add_row(*cells, style="red" if row["status"] == "failed" else None)
    failed = [r for r in rows if r["status"] == "failed"]
    for row in failed:
        table.add_row(row["job"], "error", row["error"], *[""] * (len(shown) - 3), style="red")  # job, status, overrides first
    return table
