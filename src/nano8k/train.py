"""The `nano8k train` Hydra app: validate the composed config, then hand it to the trainer.

The task function is a plain module-level function so that launchers (joblib, submitit, ray) can
pickle it by reference; heavy imports (torch, funasr) happen only inside it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import yaml
from omegaconf import DictConfig

from nano8k import checkpoints, config, data, deepspeed_support, devices, interrupts, launch, preflight, rundir
from nano8k.errors import UserError
from nano8k.files import atomic_path

log = logging.getLogger(__name__)
launch.register_resolvers()


def run(cfg: DictConfig) -> float | None:
    """Train one job of a run or a sweep; returns the best validation loss (for sweepers).

    Every job leaves status.json; a failed job in a sweep does not stop the others (launch.run_tracked).
    """
    interrupts.install()
    return launch.run_tracked(lambda run_dir, overrides: _run(cfg, run_dir, overrides))


def _run(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> float | None:
    launch.export_slurm_environment()
    settings = config.validate(cfg, app="train")
    if deepspeed_support.enabled(settings):  # the JSON's errors once, before any process starts (dry runs too)
        deepspeed_support.engine_config(settings, on_cuda=False, bf16_supported=False, announce=False)
    preflight.check(settings)
    run_dir = Path(settings.get("output_dir") or run_dir)
    main_rank = devices.ranks()[0] == 0
    if main_rank:
        rundir.check_writable(run_dir)
        rundir.check_not_a_model(run_dir, settings.get("model_dir"))
    if settings.get("dry_run"):
        _write_config(settings, run_dir)
        _warn(settings)
        log.info("dry run: the config is valid; resolved config written to %s", run_dir / "config.yaml")
        return None
    config.require(settings, ("train_data_set_list", "valid_data_set_list"), action="training")
    for key in ("train_data_set_list", "valid_data_set_list"):
        data.check_list_file(settings[key], key)
    lock = rundir.RunLock(run_dir).acquire() if main_rank else None
    try:
        if main_rank:
            rundir.remove_temporaries(run_dir)
        resume_from, changes = _resume_point(settings, run_dir)
        if resume_from is not None:
            done = rundir.finished(resume_from, int(config.setting(settings, "train_conf.max_epoch")))
            missing = rundir.unfinished_parts(run_dir) if done else []
            if done and not missing:
                raise launch.NothingToDo(f"{run_dir}: finished: {done}; nothing to do (raise train_conf.max_epoch "
                                         "to train on)", _previous_result(run_dir))
            if missing:  # killed while finishing: the trainer trains no epoch and finishes
                log.warning("%s: %s, but it was stopped while finishing: %s missing; completing it", run_dir, done,
                            ", ".join(missing))
        nproc = int(settings.get("nproc_per_node") or 1)
        reexecute = nproc > 1 and not launch.under_torchrun()
        if main_rank and not reexecute:  # under torchrun, rank 0 writes it (after its own resume check)
            _write_config(settings, run_dir)
        if main_rank:
            _warn(settings)
        interrupts.stop_if_requested("during start-up")
        if reexecute:
            launch.check_processes(nproc, settings.get("device"))
            status = launch.reexec_under_torchrun(nproc, overrides, run_dir)
            if interrupts.pending() is not None:  # rank 0 wrote the checkpoint and status.json: say the same
                ranks = launch.read_status(run_dir)
                raise interrupts.Interrupted(interrupts.pending(), ranks.get("error") or "interrupted while torchrun ran",
                                             {k: ranks[k] for k in ("epoch", "step", "step_in_epoch", "checkpoint") if k in ranks})
            if status != 0:
                raise UserError(f"torchrun exited with status {status}; see {run_dir / 'train.log'}")
            return json.loads((run_dir / "summary.json").read_text())["best_val_loss"]
        from nano8k import trainer  # torch and funasr load here, not before

        return trainer.fit(settings, run_dir, resume_from, changes)
    finally:
        if lock is not None:
            lock.release()


def _resume_point(settings: dict, run_dir: Path) -> tuple[rundir.ResumePoint | None, list[str]]:
    """Where this run continues from (None: from the start), and the resume-sensitive values the
    command changes against the run's config.yaml (an error unless resume_with_changes=true)."""
    if not (settings.get("train_conf") or {}).get("resume", True):
        if any(run_dir.glob(f"{checkpoints.LATEST}*")):
            log.warning("train_conf.resume=false: %s holds checkpoints; this run starts over and replaces them", run_dir)
        return None, []
    point = rundir.resume_point(run_dir)
    if point is None:
        return None, []
    if point.deepspeed != deepspeed_support.enabled(settings):
        raise UserError(f"{point.path}: written {'with' if point.deepspeed else 'without'} DeepSpeed, so it resumes only "
                        f"with use_deepspeed={str(point.deepspeed).lower()}; or set train_conf.resume=false, or use a new "
                        "run directory")
    changes = rundir.config_changes(run_dir, settings)
    if changes and not settings.get("resume_with_changes"):
        raise UserError(f"{run_dir}: resuming with values that differ from its config.yaml: {'; '.join(changes)}; "
                        "pass resume_with_changes=true to apply them from here on, or train in a new directory")
    return point, changes


def _write_config(settings: dict, run_dir: Path) -> None:
    """config.yaml, whole or not at all (a resume compares the next command with it)."""
    with atomic_path(run_dir / "config.yaml") as tmp:
        Path(tmp).write_text(yaml.safe_dump(settings, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _warn(settings: dict) -> None:
    for warning in preflight.warnings(settings):
        log.warning("this run cannot learn as configured: %s", warning)


def _previous_result(run_dir: Path) -> float | None:
    try:
        return json.loads((run_dir / "summary.json").read_text())["best_val_loss"]
    except (OSError, ValueError, KeyError):
        return None


main = hydra.main(config_path="pkg://nano8k.conf", config_name="train", version_base="1.3")(run)
