"""``python -m kroncl.run [overrides...]`` — the main job, configured by Hydra (configs/).

Examples::

    python -m kroncl.run stream=toy
    python -m kroncl.run stream=arc data.dir=../shared/data model=minilm stream.max_train=256
    python -m kroncl.run stream=arc strategy=per_task adapter=lora quant=int4 tracking=off
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from kroncl.errors import KronclError


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    from omegaconf import OmegaConf

    from kroncl.config import load_settings

    try:
        # Validate before importing the pipeline (avalanche-lib alone takes ~15 s to import),
        # so a bad override is reported at once.
        load_settings(OmegaConf.to_container(cfg, resolve=True))
        from pipelines.continual import run

        run(cfg)
    except KronclError as exc:
        # A user-facing error: its message says what to change; a traceback would bury it.
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
