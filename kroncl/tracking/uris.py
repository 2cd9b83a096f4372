"""Where the MLflow store is: tracking URIs, artifact roots, and the HTTP settings of remote ones.

For remote URIs the MLflow HTTP timeout/retries are shortened (``MLFLOW_HTTP_REQUEST_TIMEOUT``,
``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``, only where the user
has not set them, and only for the duration of each call), so an unreachable server fails in
seconds instead of MLflow's default minutes of retrying.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from kroncl.tracking.resume import sqlite_file_path


def default_tracking_uri(runs_root: str | Path) -> str:
    """``sqlite:///<abs runs_root>/mlflow.db`` — the embedded store used when no URI is given."""
    return f"sqlite:///{Path(runs_root).resolve() / 'mlflow.db'}"


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def default_artifact_root(uri: str, runs_root: Path) -> str | None:
    """Local artifact root for database stores; ``None`` lets a server / file store decide."""
    if is_remote(uri) or uri.startswith("databricks") or "://" not in uri or uri.startswith("file:"):
        return None
    db_path = sqlite_file_path(uri)
    if db_path is not None:
        return (db_path.resolve().parent / "mlartifacts").as_uri()
    return (runs_root.resolve() / "mlartifacts").as_uri()


def experiment_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "experiment"


def ensure_experiment(client, name: str, artifact_root: str | None) -> str:
    """The id of experiment ``name``: created (under ``artifact_root``) when missing, restored
    when deleted; safe when another process creates it at the same moment."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None if artifact_root is None else f"{artifact_root}/{experiment_slug(name)}"
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:
            # Another process may have created it between our lookup and create.
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


@contextmanager
def http_env(uri: str, defaults: Mapping[str, str]) -> Iterator[None]:
    """MLflow's HTTP timeout/retry variables set to ``defaults`` for one call to a remote URI,
    only where the user has not set them, so an unreachable server fails in seconds."""
    if not is_remote(uri):
        yield
        return
    added = [k for k in defaults if k not in os.environ]
    for key in added:
        os.environ[key] = defaults[key]
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)
