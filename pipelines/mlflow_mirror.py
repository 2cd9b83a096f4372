"""The run's registry versions, mirrored into MLflow's Models pages after each experience.

kroncl's SQL registry is the source of truth and is written first; the mirror
(:mod:`registry.mlflow_models`) comes after the versions are committed. A mirror that fails
(MLflow down, a full disk on the server) is reported and loses nothing: the version simply
lacks its ``mlflow.model_version`` tag, and the next experience of this run — or a resumed
run, or ``python -m registry sync-mlflow`` — mirrors it then.
"""

from __future__ import annotations

import logging
from typing import Any

from registry.mlflow_models import MODEL_VERSION_TAG, Mirrored, sync_mlflow
from registry.names import RUN_TAG

log = logging.getLogger(__name__)

SYNC_HINT = "python -m registry sync-mlflow --tracking-uri URI"


def mirror_run_versions(tracker: Any, registrar: Any) -> list[Mirrored]:
    """Mirror every version of this run not yet in MLflow; returns what was mirrored.

    Does nothing without a registry, without an MLflow run, or once tracking gave up."""
    store = registrar.store
    if store is None or not registrar.run_id or not tracker.active:
        return []
    pending = [v for v in store.search_versions(tags={RUN_TAG: registrar.run_id})
               if MODEL_VERSION_TAG not in v.tags]
    if not pending:
        return []
    outcome = tracker.with_client(
        "mirror_models", lambda client: sync_mlflow(store, client, pending, experiment=tracker.experiment))
    if outcome is None:  # the client itself failed; the tracker has reported it
        return []
    for ref, error in outcome.failed:
        log.warning("MLflow mirror of registry version %s failed (%s); the version is safe in the "
                    "registry and is mirrored after the next experience, or run: %s", ref, error, SYNC_HINT)
    return outcome.mirrored
