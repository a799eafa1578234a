"""The `nano8k decode` Hydra app (composition and validation; decoding lands with the decode issue)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from nano8k import config, launch
from nano8k.errors import UserError, reported

launch.register_resolvers()


def run(cfg: DictConfig) -> None:
    with reported():
        config.validate(cfg, app="decode")
        raise UserError("decoding is not built yet; `nano8k decode --cfg job` shows the composed config")


main = hydra.main(config_path="pkg://nano8k.conf", config_name="decode", version_base="1.3")(run)
