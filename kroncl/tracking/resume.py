"""Helpers behind :meth:`Tracker.resume` and safe first use of the embedded SQLite store.

* :func:`store_lock` — two processes opening a *fresh* ``sqlite:///.../mlflow.db`` at the same
  time both run MLflow's schema creation and one of them fails ("table already exists",
  "database is locked"). An ``fcntl.flock`` on ``<db>.lock`` around the first client call
  serialises that initialisation (and experiment creation); later calls need no lock because
  SQLite itself serialises ordinary writes.
* :func:`logged_metric_steps` — which metric steps a run already holds, so a run resumed
  after SIGKILL re-logs no step MLflow already has (no duplicate points in the charts).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kroncl.tracking.names import redact_uri

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"


def sqlite_file_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///<path>`` URI; ``None`` for in-memory or other URIs."""
    if not uri.startswith("sqlite:///"):
        return None
    raw = uri[len("sqlite:///"):].split("?", 1)[0]
    if not raw or raw == ":memory:":
        return None
    return Path(raw)


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<db>.lock`` for a SQLite file URI; no-op otherwise.

    Only meant around the first client call of a tracker (store creation + migrations +
    experiment lookup/creation), so it is held for well under a second once the store exists.
    If the lock file cannot be opened (read-only folder, no ``fcntl``) the body runs unlocked
    with a warning: tracking must never stop training.
    """
    db = sqlite_file_path(uri)
    if db is None:
        yield
        return
    lock_path = db.with_name(db.name + LOCK_SUFFIX)
    try:
        import fcntl

        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = lock_path.open("a")
    except (ImportError, OSError) as exc:
        log.warning("cannot lock %s (%s: %s); initialising the MLflow store unlocked, so a concurrent "
                    "first use of %s may fail", lock_path, type(exc).__name__, exc, db)
        yield
        return
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def logged_metric_steps(client: Any, run: Any) -> set[tuple[str, int]]:
    """Every ``(metric key, step)`` pair the MLflow ``run`` already holds.

    ``run.data.metrics`` only names the keys (latest values); the full history of each key
    gives its steps (``MlflowClient.get_metric_history`` pages through the store itself).
    """
    run_id = run.info.run_id
    return {(key, int(m.step)) for key in run.data.metrics for m in client.get_metric_history(run_id, key)}


def reopen_run(client: Any, run_id: str, uri: str) -> tuple[Any, set[tuple[str, int]]] | str:
    """Set run ``run_id`` back to RUNNING; return ``(run, its logged (key, step) pairs)``, or,
    when the store does not know the run or it is deleted, a message saying so and what to do.

    Other errors (store unreachable, ...) propagate: they are tracking failures, not a
    missing run. The first store access runs under :func:`store_lock` (it may create the schema).
    """
    from mlflow.exceptions import MlflowException

    try:
        with store_lock(uri):
            run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        run = None
    if run is None or run.info.lifecycle_stage == "deleted":
        return (f"run {run_id!r} does not exist or is deleted in {redact_uri(uri)}; started a new run instead "
                f"(check the run id in the old tracking/run.json, or `mlflow runs restore --run-id {run_id}`)")
    steps = logged_metric_steps(client, run)
    client.update_run(run_id, status="RUNNING")
    return run, steps


def split_params(flat: dict[str, str], logged: dict[str, str]) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """``(params not logged yet, {key: (logged value, new value)} for changed ones)``.

    Params equal to the logged value are dropped: MLflow params are write-once, and a batch
    holding a changed value is rejected as a whole, which would lose the new params too.
    """
    new = {k: v for k, v in flat.items() if k not in logged}
    changed = {k: (logged[k], v) for k, v in flat.items() if k in logged and logged[k] != v}
    return new, changed
