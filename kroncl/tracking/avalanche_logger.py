"""`MLflowLogger`: an avalanche-lib logger that sends Avalanche's metrics to MLflow.

avalanche-lib 0.6.0 ships loggers for W&B, TensorBoard, CSV and text, none for MLflow. Its
``EvaluationPlugin`` calls ``logger.log_metrics(list[MetricValue])`` after every callback (often
with an empty list); ``BaseLogger.log_metrics`` expands dict values into ``<name>/<key>`` and
calls ``log_single_metric(name, value, x_plot)`` per value, where ``x_plot`` is the strategy's
``clock.train_iterations``. We keep that contract but batch one ``log_metrics`` call into one
MLflow request per step, and go through :class:`~kroncl.tracking.tracker.Tracker` so MLflow
failures never reach the strategy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from avalanche.evaluation.metric_results import AlternativeValues
from avalanche.logging import BaseLogger

from kroncl.tracking.names import sanitize_name, scalar_value
from kroncl.tracking.tracker import Tracker

if TYPE_CHECKING:
    from avalanche.evaluation.metric_results import MetricValue


class MLflowLogger(BaseLogger):
    """Logs Avalanche's scalar metrics to MLflow with ``step = x_plot``.

    Scalars (Python/NumPy numbers, one-element tensors, the scalar alternative of an
    ``AlternativeValues``) are logged; images, figures, larger tensors and strings are
    skipped. Names are sanitised for MLflow (``/`` is kept: Avalanche's
    ``Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp000`` is logged as is).

    Args:
        tracker: a started :class:`Tracker` (metrics before ``start`` go to the JSONL only).
        prefix: prepended to every metric name (e.g. ``"avalanche/"``).
    """

    def __init__(self, tracker: Tracker, prefix: str = "") -> None:
        super().__init__()
        self.tracker = tracker
        self.prefix = prefix

    def _scalar(self, value: Any) -> float | None:
        if isinstance(value, AlternativeValues):
            # First representation that is a scalar (e.g. a confusion matrix has none).
            found = (scalar_value(v) for v in value.alternatives)
            return next((v for v in found if v is not None), None)
        return scalar_value(value)

    def _name(self, name: str) -> str:
        return sanitize_name(f"{self.prefix}{name}")

    def log_single_metric(self, name: str, value: Any, x_plot: int) -> None:
        """Log one value (``BaseLogger`` hook); non-scalar values are ignored."""
        number = self._scalar(value)
        if number is not None:
            self.tracker.log_metrics({self._name(name): number}, step=int(x_plot))

    def log_metrics(self, metric_values: list[MetricValue]) -> None:
        """Log a batch of ``MetricValue`` s: one tracker call per distinct ``x_plot``."""
        by_step: dict[int, dict[str, float]] = {}
        for mval in metric_values:
            pairs = (
                [(f"{mval.name}/{k}", v) for k, v in mval.value.items()]
                if isinstance(mval.value, dict)
                else [(mval.name, mval.value)]
            )
            for name, value in pairs:
                number = self._scalar(value)
                if number is not None:
                    by_step.setdefault(int(mval.x_plot), {})[self._name(name)] = number
        for step in sorted(by_step):
            self.tracker.log_metrics(by_step[step], step=step)
