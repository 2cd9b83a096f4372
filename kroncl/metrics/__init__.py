"""Continual-learning metrics (owner of: the accuracy matrix, ACC/BWT/FWT/forgetting).

Contract for other packages:

* The pipeline fills an :class:`AccuracyMatrix` — ``set_baseline(j, acc)`` from the evaluation
  before training, ``set(i, j, acc)`` / ``set_row(i, accs)`` after experience ``i`` — and calls
  ``save(dir)`` (``accuracy_matrix.json``, ``accuracy_matrix.csv``, ``metrics.json``).
* Everything else is a pure function of ``R`` (list of rows, ``R[i][j]`` = accuracy on task j
  after experience i) and ``b`` (accuracy before training, or ``None``):
  :func:`average_accuracy`, :func:`backward_transfer`, :func:`forward_transfer`,
  :func:`forgetting` (GEM arXiv 1706.08840 / Chaudhry et al. arXiv 1801.10112), their
  ``*_per_task`` forms, the Avalanche 0.6.0 variants ``avalanche_*``, and
  :func:`metrics_over_time` / :func:`summarize`.
* Undefined values (T == 1, no baseline) are ``None``; Avalanche variants mirror Avalanche
  (0.0 for an empty mean).
"""

from kroncl.metrics.avalanche_compat import (
    avalanche_bwt,
    avalanche_bwt_per_task,
    avalanche_forgetting,
    avalanche_forgetting_per_task,
    avalanche_forward_transfer,
    avalanche_forward_transfer_per_task,
)
from kroncl.metrics.continual import (
    average_accuracy,
    backward_transfer,
    backward_transfer_per_task,
    forgetting,
    forgetting_per_task,
    forward_transfer,
    forward_transfer_per_task,
    validate_rows,
)
from kroncl.metrics.matrix import (
    MATRIX_CSV,
    MATRIX_JSON,
    METRICS_JSON,
    AccuracyMatrix,
)
from kroncl.metrics.summary import SCALAR_KEYS, metrics_over_time, summarize

__all__ = [
    "AccuracyMatrix",
    "MATRIX_CSV",
    "MATRIX_JSON",
    "METRICS_JSON",
    "SCALAR_KEYS",
    "average_accuracy",
    "avalanche_bwt",
    "avalanche_bwt_per_task",
    "avalanche_forgetting",
    "avalanche_forgetting_per_task",
    "avalanche_forward_transfer",
    "avalanche_forward_transfer_per_task",
    "backward_transfer",
    "backward_transfer_per_task",
    "forgetting",
    "forgetting_per_task",
    "forward_transfer",
    "forward_transfer_per_task",
    "metrics_over_time",
    "summarize",
    "validate_rows",
]
