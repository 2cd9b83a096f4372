"""Experiment tracking (owner of: MLflow, the run's metrics.jsonl mirror, accuracy plots).

Contract for other packages — the pipeline talks only to :class:`Tracker`:

    tracker = Tracker(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.enabled, run_dir)
    tracker.start(run_name, tags)                    # -> run id | None
    # or, after a crash: tracker.resume(run_id_from_old_run_json, tags)  # same run, no duplicate steps
    tracker.log_params(flatten_config(config_dict))
    evaluator loggers: [MLflowLogger(tracker, prefix="avalanche/")]  # step = train iteration (x_plot)
    tracker.log_metrics({"train/loss": 0.3}, step)
    tracker.log_accuracy_matrix(matrix)              # after each experience; idempotent per step
    tracker.log_artifact(path, "adapters")
    tracker.end("FINISHED" | "FAILED" | "KILLED")

* ``uri=None`` -> embedded SQLite store ``<run_dir.parent>/mlflow.db`` (+ ``mlartifacts/``).
* No method raises because MLflow failed: failures land in ``tracker.failures`` and
  everything logged is in ``<run_dir>/tracking/metrics.jsonl`` regardless.
* ``enabled=False``: every method is a no-op.

``MLflowLogger`` (imports avalanche) and the plot functions (import matplotlib) load lazily.
"""

from __future__ import annotations

from typing import Any

from kroncl.tracking.names import flatten_config, sanitize_name, scalar_value
from kroncl.tracking.tracker import (
    JSONL_NAME,
    Tracker,
    TrackingFailure,
    default_tracking_uri,
)

_LAZY = {
    "MLflowLogger": "kroncl.tracking.avalanche_logger",
    "plot_accuracy_heatmap": "kroncl.tracking.plots",
    "plot_forgetting_curves": "kroncl.tracking.plots",
    "forgetting_curves_figure": "kroncl.tracking.plots",
}

__all__ = [
    "JSONL_NAME",
    "MLflowLogger",
    "Tracker",
    "TrackingFailure",
    "default_tracking_uri",
    "flatten_config",
    "forgetting_curves_figure",
    "plot_accuracy_heatmap",
    "plot_forgetting_curves",
    "sanitize_name",
    "scalar_value",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kroncl.tracking' has no attribute {name!r}")
