"""The `nano8k train` Hydra app: validate the composed config, then hand it to the trainer.

The task function is a plain module-level function so that launchers (joblib, submitit, ray) can
pickle it by reference; heavy imports (torch, funasr) happen only inside it.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from nano8k import config
from nano8k.errors import UserError, reported


def run(cfg: DictConfig) -> float | None:
    """Train one job of a run or a sweep; returns the best validation loss (for sweepers)."""
    with reported():
        settings = config.validate(cfg, app="train")
        config.require(settings, ("train_data_set_list", "valid_data_set_list"), action="training")
        try:
            from nano8k import trainer
        except ImportError as err:
            raise UserError(f"the trainer is not available in this build ({err})") from None
        return trainer.fit(cfg)


main = hydra.main(config_path="pkg://nano8k.conf", config_name="train", version_base="1.3")(run)
