"""Shared fixtures: a migrated MLflow SQLite database, copied into each test's run root.

Creating an MLflow database runs all its Alembic migrations (seconds per test on a busy
machine); copying one migrated file is instant and still gives each test its own real store.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()  # creates + migrates
    return db


@pytest.fixture
def runs_root(tmp_path: Path, mlflow_db_template: Path) -> Path:
    """``<tmp>/runs`` holding a fresh copy of the migrated ``mlflow.db`` (the Tracker default)."""
    root = tmp_path / "runs"
    root.mkdir()
    shutil.copyfile(mlflow_db_template, root / "mlflow.db")
    return root
