"""``python -m kroncl.run [overrides...]`` — the main job, configured by Hydra (kroncl/configs/).

Examples::

    python -m kroncl.run stream=toy
    python -m kroncl.run stream=arc data.dir=../shared/data model=minilm stream.max_train=256
    python -m kroncl.run stream=arc strategy=per_task adapter=lora quant=int4 tracking=off
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from kroncl.config import load_settings  # also registers the kroncl_default_lr resolver train.lr uses
from kroncl.errors import KronclError

_SUFFIX = secrets.token_hex(3)
# One value per process: Hydra may resolve hydra.run.dir more than once, and every resolution
# must name the same folder. Separate processes (parallel launchers) get separate folders.
OmegaConf.register_new_resolver("kroncl_run_suffix", lambda: _SUFFIX, replace=True)


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    hydra_dir = Path(hydra.runtime.output_dir)
    try:
        # Validate before importing the pipeline (avalanche-lib alone takes ~15 s to import),
        # so a bad override is reported at once.
        load_settings(OmegaConf.to_container(cfg, resolve=True))
        from pipelines.continual import run

        run(cfg, hydra_dir=hydra_dir, overrides=list(hydra.overrides.task))
    except KronclError as exc:
        # A user-facing error: its message says what to change; a traceback would bury it.
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    finally:
        remove_if_empty(hydra_dir)


def remove_if_empty(path: Path) -> None:
    """Hydra creates its output folder before the job starts; a job that did not use it (a
    resume of another folder, a config error) must not leave it behind empty."""
    try:
        path.rmdir()  # removes only an empty folder
    except OSError:
        pass


def cli() -> None:
    """Entry point: overrides Hydra would reject with its own message (an unknown group value)
    or trip over before ``main`` (an unusable ``paths.runs``) are reported here, one line."""
    from kroncl.preflight import argv_problem

    problem = argv_problem(sys.argv[1:])
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
