"""The `nano8k pipeline` Hydra app: a recipe's stages trained one after another.

Each stage is a `nano8k train +stage=NAME` child process in its own run directory under the
pipeline's (PIPELINE/NAME/), started from the previous stage's directory (`init_param`: its
averaged model, else its best, else its latest: checkpoints.choose). A child process, not a
call, so that a stage is exactly the run a user would start by hand: its torchrun re-execution, run
lock, resume, signals and status.json all hold, and pipeline.log lists the commands. Every stage's
config is composed, validated and its data lists checked before the first one trains. A rerun of
the same command goes through the stages again: a finished one says so and is skipped (`nano8k
train` itself decides that), an interrupted one resumes. At the end: pipeline.json and a table.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import hydra
import yaml
from omegaconf import DictConfig

from nano8k import checkpoints, config, data, interrupts, launch, preflight, rundir
from nano8k import model as nano_model
from nano8k.errors import UserError
from nano8k.files import atomic_path, json_safe

log = logging.getLogger(__name__)
launch.register_resolvers()

SUMMARY_FILE = "pipeline.json"
DATA_KEYS = ("train_data_set_list", "valid_data_set_list")


@dataclass
class Stage:
    name: str
    run_dir: Path
    arguments: list[str]  # of `nano8k train`


@dataclass
class StageResult:
    stage: str
    run_dir: str
    outcome: str  # trained, resumed, finished earlier
    trainable: int | None
    steps: int | None
    best_val_loss: float | None
    best_val_cer: float | None
    wall_s: float | None
    averaged_model: str | None


def run(cfg: DictConfig) -> float | None:
    """Train the stages of one pipeline (a job of a sweep, too); returns the last stage's best
    validation loss (for sweepers)."""
    interrupts.install()
    return launch.run_tracked(lambda run_dir, overrides: _run(cfg, run_dir))


def _run(cfg: DictConfig, pipeline_dir: Path) -> float | None:
    settings = config.validate(cfg, app="pipeline")
    rundir.check_writable(pipeline_dir)
    stages = plan(settings, pipeline_dir)
    with ThreadPoolExecutor(max_workers=min(len(stages), 4)) as pool:  # a few seconds each, in parallel
        list(pool.map(check, stages))  # the first stage at fault (in order) raises
    if settings.get("dry_run"):
        for stage in stages:
            log.info("stage %s: %s", stage.name, " ".join(command(stage)))
        log.info("dry run: %d stage(s) are valid; nothing was trained", len(stages))
        return None
    lock = rundir.RunLock(pipeline_dir).acquire()
    try:
        results = [train(stage, number, len(stages)) for number, stage in enumerate(stages, 1)]
    finally:
        lock.release()
    with atomic_path(pipeline_dir / SUMMARY_FILE) as tmp:
        Path(tmp).write_text(json.dumps(json_safe([asdict(r) for r in results]), indent=2, allow_nan=False) + "\n",
                             encoding="utf-8")
    _print_table(results, pipeline_dir)
    return results[-1].best_val_loss


def plan(settings: dict, pipeline_dir: Path) -> list[Stage]:
    """The stages' `nano8k train` arguments, or one line naming the stage and the key at fault."""
    names = list(settings.get("stages") or [])
    if not names:
        raise UserError("stages: empty; name the stages to train, e.g. stages=[stage1_encoder_adapt,stage2_adapter_align]")
    known = config.stage_names()
    for name in names:
        if name not in known:
            raise UserError(f"stages: unknown stage {name!r}; available: {', '.join(known)}")
        if names.count(name) > 1:
            raise UserError(f"stages: {name} is listed twice (each stage has one run directory, PIPELINE/{name})")
    entries = settings.get("stage_conf") or {}
    for name in entries:
        if name not in names:
            log.warning("stage_conf.%s: %s is not among stages (%s); its settings are not used", name, name,
                        ", ".join(names))
    stages, previous = [], None
    for name in names:
        entry = entries.get(name)
        overrides = [*(settings.get("overrides") or []), *((entry or {}).get("overrides") or [])]
        arguments = [f"+stage={name}"]
        if settings.get("model_dir"):
            arguments.append(_override("model_dir", settings["model_dir"]))
        for key in DATA_KEYS:
            value = entry.get(key) if entry is not None else settings.get(key)
            if not value:
                where = f"stage_conf.{name}.{key}" if entry is not None else f"{key} (or stage_conf.{name}.{key})"
                kind = "training" if key.startswith("train") else "validation"
                raise UserError(f"stage {name}: {where} is not set; give the stage's {kind} manifest")
            arguments.append(_override(key, str(value)))
        if previous is not None and not any(_key_of(o) == "init_param" for o in overrides):
            arguments.append(_override("init_param", str(previous)))
        run_dir = pipeline_dir / name
        stages.append(Stage(name, run_dir, [*arguments, *overrides, _override("hydra.run.dir", str(run_dir))]))
        previous = run_dir
    return stages


def command(stage: Stage) -> list[str]:
    return [sys.executable, "-m", "nano8k", "train", *stage.arguments]


def check(stage: Stage) -> None:
    """The stage's composed config validated as `nano8k train` would (schema, refusals of
    preflight.check, the data lists), without training: a mistake in stage 3 is found before
    stage 1 trains for hours."""
    composed = subprocess.run([*command(stage)[:4], "--cfg", "job", "--resolve", *stage.arguments],
                              capture_output=True, text=True, env=_child_environment())
    if composed.returncode != 0:
        lines = [line.removeprefix("error: ") for line in composed.stderr.strip().splitlines() if line.strip()]
        raise UserError("\n".join(f"stage {stage.name}: {line}" for line in lines[-5:] or ["cannot compose its config"]))
    try:
        settings = config.validate(yaml.safe_load(composed.stdout), app="train")
        preflight.check(settings)
        for key in DATA_KEYS:
            data.check_list_file(settings[key], key)
    except UserError as err:
        raise UserError("\n".join(f"stage {stage.name}: {line}" for line in str(err).splitlines())) from None


def train(stage: Stage, number: int, total: int) -> StageResult:
    """Run one stage to its end (or find it finished); a stage that fails or is interrupted stops
    the pipeline, saying which stage and how to go on."""
    finished = launch.read_status(stage.run_dir).get("status") == "completed"
    resumable = (stage.run_dir / checkpoints.LATEST).is_file()
    summary_before = _modified(stage.run_dir / "summary.json")
    if finished:
        log.info("stage %d/%d %s: finished earlier in %s; checking that nothing is left to train", number, total,
                 stage.name, stage.run_dir)
    else:
        log.info("stage %d/%d %s: %s in %s", number, total, stage.name, "resuming" if resumable else "training",
                 stage.run_dir)
    log.info("command: %s", " ".join(command(stage)))
    start = lambda: subprocess.Popen(command(stage), env=_child_environment(), start_new_session=True)  # noqa: E731
    with interrupts.passed_to(start) as child:
        code = child.wait()
    status = launch.read_status(stage.run_dir)
    signum = interrupts.pending()
    if code != 0 and (signum is not None or status.get("status") == "interrupted"):
        signum = signum if signum is not None else _signal_of(status)
        raise interrupts.Interrupted(signum, f"stage {stage.name} was interrupted ({status.get('error') or 'exit ' + str(code)}); "
                                     "rerun the same command to resume it", {"stage": stage.name})
    if code != 0:
        reason = status.get("error") or f"exit status {code}"
        raise UserError(f"stage {stage.name} failed: {reason} (its log: {stage.run_dir / 'train.log'})")
    if signum is not None:
        raise interrupts.Interrupted(signum, f"interrupted by {interrupts.signal_name(signum)} after stage {stage.name} "
                                     "finished; rerun the same command to go on", {"stage": stage.name})
    if finished and _modified(stage.run_dir / "summary.json") == summary_before:
        outcome = "finished earlier"
    else:
        outcome = "resumed" if resumable else "trained"
    return _result(stage, outcome)


def _modified(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _result(stage: Stage, outcome: str) -> StageResult:
    try:
        summary = json.loads((stage.run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {}
    table = nano_model.read_parameter_table(stage.run_dir / "params.tsv")
    return StageResult(stage=stage.name, run_dir=str(stage.run_dir), outcome=outcome,
                       trainable=table["total"][1] if "total" in table else None, steps=summary.get("steps"),
                       best_val_loss=summary.get("best_val_loss"), best_val_cer=summary.get("best_val_cer"),
                       wall_s=summary.get("total_wall_s"), averaged_model=summary.get("averaged_model"))


def _print_table(results: list[StageResult], pipeline_dir: Path) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    if not console.is_terminal:  # a log file: the whole table, not 80 columns of it
        console = Console(stderr=True, width=120)
    table = Table(title=f"pipeline {pipeline_dir}", box=box.SIMPLE_HEAD)
    table.add_column("stage", no_wrap=True)
    for column in ("trainable", "steps", "best val loss", "val CER", "wall"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    for r in results:
        table.add_row(r.stage, _number(r.trainable, "{:,}"), _number(r.steps, "{}"), _number(r.best_val_loss, "{:.4f}"),
                      _number(r.best_val_cer and 100 * r.best_val_cer, "{:.1f}%"), _number(r.wall_s, "{:.0f} s"),
                      r.outcome)
    console.print(table)
    if results[-1].averaged_model:
        console.print(f"the recipe's model: {results[-1].averaged_model} "
                      f"(`nano8k export {results[-1].run_dir} OUT` makes it a model directory)")


def _number(value: Any, form: str) -> str:
    return "-" if value is None else form.format(value)


def _override(key: str, value: str) -> str:
    """key=value for a Hydra command line, the value quoted (paths may hold spaces, `=`, `,`)."""
    return f"{key}='{value.replace(chr(39), chr(92) + chr(39))}'" if value else f"{key}=null"


def _key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _signal_of(status: dict) -> int:
    import signal

    return getattr(signal, str(status.get("signal") or "SIGTERM"), signal.SIGTERM)


def _child_environment() -> dict:
    # the stage finds its own errors' one line without Hydra's traceback, and takes its own run lock
    return {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", rundir.LOCK_ENV)}


main = hydra.main(config_path="pkg://nano8k.conf", config_name="pipeline", version_base="1.3")(run)
