"""``python -m kroncl.run [overrides...]`` — the main job, configured by Hydra (configs/).

Examples::

    python -m kroncl.run stream=toy
    python -m kroncl.run stream=arc data.dir=../shared/data model=minilm stream.max_train=256
    python -m kroncl.run stream=arc strategy=per_task adapter=lora quant=int4 tracking=off
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from kroncl.errors import KronclError

log = logging.getLogger("kroncl")


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    # Imported here so `--help` and config errors answer before torch is loaded.
    from pipelines.continual import run

    try:
        run(cfg)
    except KronclError as exc:
        # A user-facing error: its message says what to change; a traceback would bury it.
        log.error("%s: %s", type(exc).__name__, exc)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
