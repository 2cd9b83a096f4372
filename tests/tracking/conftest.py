"""Tracking fixtures: each test's run root holds a copy of the migrated MLflow database.

``mlflow_db_template`` (a migrated MLflow SQLite file, made once per session) lives in
tests/conftest.py; copying it is instant and still gives each test its own real store.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def runs_root(tmp_path: Path, mlflow_db_template: Path) -> Path:
    """``<tmp>/runs`` holding a fresh copy of the migrated ``mlflow.db`` (the Tracker default)."""
    root = tmp_path / "runs"
    root.mkdir()
    shutil.copyfile(mlflow_db_template, root / "mlflow.db")
    return root
