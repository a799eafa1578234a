"""The `nano8k train` Hydra app: validate the composed config, then hand it to the trainer.

The task function is a plain module-level function so that launchers (joblib, submitit, ray) can
pickle it by reference; heavy imports (torch, funasr) happen only inside it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from nano8k import config
from nano8k.errors import reported

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> float | None:
    """Train one job of a run or a sweep; returns the best validation loss (for sweepers)."""
    with reported():
        settings = config.validate(cfg, app="train")
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        resolved = run_dir / "config.yaml"
        resolved.write_text(yaml.safe_dump(settings, sort_keys=False, allow_unicode=True), encoding="utf-8")
        if settings.get("dry_run"):
            log.info("dry run: the config is valid; resolved config written to %s", resolved)
            return None
        config.require(settings, ("train_data_set_list", "valid_data_set_list"), action="training")
        from nano8k import trainer  # torch and funasr load here, not before

        return trainer.fit(cfg, run_dir)


main = hydra.main(config_path="pkg://nano8k.conf", config_name="train", version_base="1.3")(run)
