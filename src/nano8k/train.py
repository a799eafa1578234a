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

from nano8k import config, deepspeed_support, launch, preflight
from nano8k.errors import UserError

log = logging.getLogger(__name__)
launch.register_resolvers()


def run(cfg: DictConfig) -> float | None:
    """Train one job of a run or a sweep; returns the best validation loss (for sweepers).

    Every job leaves status.json; a failed job in a sweep does not stop the others (launch.run_tracked).
    """
    return launch.run_tracked(lambda run_dir, overrides: _run(cfg, run_dir, overrides))


def _run(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> float | None:
    launch.export_slurm_environment()
    settings = config.validate(cfg, app="train")
    if launch.rank() == 0:
        resolved = run_dir / "config.yaml"
        resolved.write_text(yaml.safe_dump(settings, sort_keys=False, allow_unicode=True), encoding="utf-8")
    if deepspeed_support.enabled(settings):  # the JSON's errors once, before any process starts (dry runs too)
        deepspeed_support.engine_config(settings, on_cuda=False, bf16_supported=False, announce=False)
    preflight.check(settings)
    if launch.rank() == 0:
        for warning in preflight.warnings(settings):
            log.warning("this run cannot learn as configured: %s", warning)
    if settings.get("dry_run"):
        log.info("dry run: the config is valid; resolved config written to %s", run_dir / "config.yaml")
        return None
    config.require(settings, ("train_data_set_list", "valid_data_set_list"), action="training")
    nproc = int(settings.get("nproc_per_node") or 1)
    if nproc > 1 and not launch.under_torchrun():
        launch.check_processes(nproc, settings.get("device"))
        status = launch.reexec_under_torchrun(nproc, overrides, run_dir)
        if status != 0:
            raise UserError(f"torchrun exited with status {status}; see {run_dir / 'train.log'}")
        return json.loads((run_dir / "summary.json").read_text())["best_val_loss"]
    from nano8k import trainer  # torch and funasr load here, not before

    return trainer.fit(cfg, run_dir)


main = hydra.main(config_path="pkg://nano8k.conf", config_name="train", version_base="1.3")(run)
