"""Real end-to-end runs of the main job, shared by the tests of tests/pipeline.

Each run composes the shipped Hydra configs (``kroncl/configs/``) with the compose API, exactly as
``python -m kroncl.run`` would, and calls :func:`pipelines.continual.run` in-process on the
tiny random model and the generated toy stream (48 train / 24 test rows per task, 1 epoch):
seconds per run. Runs are session-scoped: several test files read the same run back.

* ``int4_run``: ``strategy=sequential quant=int4``, embedded MLflow store and SQLite registry
  under its own ``paths.runs``.
* ``offline_int8_run``: ``strategy=per_task quant=int8`` with ``tracking.uri`` pointing at a
  closed loopback port (MLflow unreachable for the whole run), registry on.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "kroncl" / "configs"
SMALL = (
    "stream=toy",
    "model=tiny",
    "stream.max_train=48",
    "stream.max_test=24",
    "train.epochs=1",
    "train.progress=false",
    "train.threads=1",
)
"""Overrides every test run uses: a run takes seconds on a CPU."""


def compose(overrides: Sequence[str]) -> DictConfig:
    """The config ``python -m kroncl.run <overrides>`` would get (Hydra compose API)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


@dataclass
class PipelineRun:
    """One finished in-process run and where it wrote."""

    result: Any  # pipelines.continual.RunResult
    cfg: DictConfig
    resolved: dict[str, Any]
    runs_root: Path
    printed: str
    seconds: float

    @property
    def run_dir(self) -> Path:
        return self.result.run_dir

    @property
    def tracking_uri(self) -> str:
        return self.resolved["tracking"]["uri"] or f"sqlite:///{(self.runs_root / 'mlflow.db').resolve()}"

    @property
    def registry_url(self) -> str:
        return f"sqlite:///{(self.runs_root / 'registry.db').resolve()}"

    @property
    def registry_artifacts(self) -> Path:
        return (self.runs_root / "registry_artifacts").resolve()


def run_pipeline(runs_root: Path, overrides: Sequence[str], name: str) -> PipelineRun:
    """Compose ``SMALL + overrides`` with ``paths.runs=runs_root`` and run the job in-process."""
    from pipelines.continual import run

    cfg = compose([*SMALL, f"paths.runs={runs_root}", *overrides])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        result = run(cfg, run_dir=runs_root / "toy" / name)
    return PipelineRun(result, cfg, resolved, runs_root, out.getvalue(), time.perf_counter() - started)


def unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op thread while these tests run (restored afterwards).

    The tiny model's matrices are far too small to gain from threads, and on a loaded shared
    CPU two spinning OpenMP threads make each forward pass ~50x slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def compose_config() -> Callable[[Sequence[str]], DictConfig]:
    """:func:`compose` (conftest functions are not importable under ``--import-mode=importlib``)."""
    return compose


@pytest.fixture(scope="session")
def pipeline_runner() -> Callable[[Path, Sequence[str], str], PipelineRun]:
    """:func:`run_pipeline`, for tests that need a run of their own."""
    return run_pipeline


@pytest.fixture(scope="session")
def int4_run(tmp_path_factory: pytest.TempPathFactory, mlflow_db_template: Path) -> PipelineRun:
    root = tmp_path_factory.mktemp("int4-run") / "runs"
    root.mkdir()
    shutil.copyfile(mlflow_db_template, root / "mlflow.db")  # skip MLflow's migrations
    return run_pipeline(root, ["strategy=sequential", "quant=int4"], "int4-sequential")


@pytest.fixture(scope="session")
def offline_int8_run(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    root = tmp_path_factory.mktemp("offline-run") / "runs"
    uri = f"http://127.0.0.1:{unused_port()}"
    return run_pipeline(root, ["strategy=per_task", "quant=int8", f"tracking.uri={uri}"], "int8-per-task")
