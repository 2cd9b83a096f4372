"""Logging the accuracy matrix after each experience: files, plots and one MLflow point per step.

Kept apart from :class:`~kroncl.tracking.tracker.Tracker`'s transport and failure policy: this is
what the matrix *means* in MLflow (which metric at which step), the tracker is how it gets there.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from kroncl.metrics import AccuracyMatrix
from kroncl.tracking.names import sanitize_name


class AccuracyMatrixLog:
    """Remembers which rows of the matrix were logged, so each step is logged once per process.

    (Across a resume, the tracker itself skips the (metric, step) pairs MLflow already holds.)
    """

    def __init__(self, tracker) -> None:
        self.tracker = tracker
        self.rows_logged = 0
        self.baseline_logged = False
        self.final_logged = False

    def log(self, matrix: AccuracyMatrix, out_dir: Path, chance: Mapping[str, float] | None = None) -> dict[str, Path]:
        """Save and plot ``matrix`` into ``out_dir``, log the new metrics, upload the files
        (``chance``: task -> chance level, drawn in the forgetting curves)."""
        from kroncl.tracking.plots import plot_accuracy_heatmap, plot_forgetting_curves

        tracker = self.tracker
        files = dict(matrix.save(out_dir))
        plots = {
            "heatmap_png": (plot_accuracy_heatmap, "accuracy_heatmap.png"),
            "curves_png": (partial(plot_forgetting_curves, chance=chance), "forgetting_curves.png"),
        }
        for kind, (plot, filename) in plots.items():
            try:
                files[kind] = plot(matrix, out_dir / filename)
            except Exception as exc:  # a broken plot must not stop training
                tracker._record_failure("plot", exc, count=False)

        names = [sanitize_name(t) for t in matrix.task_names]
        if not self.baseline_logged and matrix.has_baseline:
            tracker.log_metrics({f"baseline/{n}": v for n, v in zip(names, matrix.baseline)}, step=0)
            self.baseline_logged = True
        over_time = matrix.over_time()
        for i in range(self.rows_logged, len(over_time)):
            values: dict[str, Any] = {f"acc/{n}": v for n, v in zip(names, matrix.rows[i])}
            values.update({f"stream/{k}": v for k, v in over_time[i].items() if k != "experience"})
            tracker.log_metrics(values, step=i)
        self.rows_logged = max(self.rows_logged, len(over_time))
        if matrix.is_complete and not self.final_logged:
            summary = matrix.summary()
            tracker.log_metrics({f"final/{k}": summary[k] for k in ("acc", "bwt", "fwt", "forgetting")},
                                step=matrix.num_tasks - 1)
            self.final_logged = True
        tracker.log_artifact(out_dir, artifact_path="accuracy")
        return files
