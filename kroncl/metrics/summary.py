"""Summaries of an accuracy matrix: one dict for the finished stream, one per experience."""

from __future__ import annotations

from typing import Any

from kroncl.metrics.avalanche_compat import (
    avalanche_bwt,
    avalanche_forgetting,
    avalanche_forgetting_per_task,
    avalanche_forward_transfer,
)
from kroncl.metrics.continual import (
    Baseline,
    Matrix,
    average_accuracy,
    backward_transfer,
    backward_transfer_per_task,
    forgetting,
    forgetting_per_task,
    forward_transfer,
    forward_transfer_per_task,
    validate_rows,
)

SCALAR_KEYS = (
    "acc",
    "bwt",
    "fwt",
    "forgetting",
    "avalanche_forgetting",
    "avalanche_bwt",
    "avalanche_fwt",
)
"""Scalar keys shared by :func:`summarize` and each :func:`metrics_over_time` entry."""


def _square_block(R: Matrix, size: int) -> list[list[float]]:
    return [list(R[i][:size]) for i in range(size)]


def metrics_over_time(R: Matrix, b: Baseline) -> list[dict[str, Any]]:
    """The stream metrics as they stood after each experience (for curves).

    Entry ``i`` describes the model after experience ``i`` on the tasks seen so far
    (``0..i``): GEM/Chaudhry metrics of the leading ``(i+1) x (i+1)`` block of ``R`` and of
    ``b[:i+1]``, plus the values Avalanche would report at that point.

    Args:
        R: ``n x T`` accuracy matrix, ``n <= T`` experiences done (rows must be complete).
        b: baseline accuracies before training, or ``None``.

    Returns:
        ``n`` dicts with keys ``experience`` and :data:`SCALAR_KEYS`:
        ``acc`` = mean_{j<=i} R[i][j]; ``bwt``, ``forgetting``, ``fwt`` over tasks ``<= i``
        (``None`` for ``i == 0`` or without baseline); ``avalanche_*`` as in
        :mod:`kroncl.metrics.avalanche_compat` (``avalanche_fwt`` also counts task ``i+1``).
    """
    n, _ = validate_rows(R, square=False)
    out: list[dict[str, Any]] = []
    for i in range(n):
        block = _square_block(R, i + 1)
        b_seen = None if b is None else list(b[: i + 1])
        out.append(
            {
                "experience": i,
                "acc": average_accuracy(block),
                "bwt": backward_transfer(block),
                "fwt": forward_transfer(block, b_seen),
                "forgetting": forgetting(block),
                "avalanche_forgetting": avalanche_forgetting(R[: i + 1]),
                "avalanche_bwt": avalanche_bwt(R[: i + 1]),
                "avalanche_fwt": avalanche_forward_transfer(R[: i + 1], b),
            }
        )
    return out


def summarize(R: Matrix, b: Baseline) -> dict[str, Any]:
    """All metrics of a finished stream in one JSON-ready dict.

    Args:
        R: square ``T x T`` accuracy matrix.
        b: baseline accuracies before training, or ``None``.

    Returns:
        ``{"num_tasks": T, <SCALAR_KEYS>..., "per_task": {...}}`` where ``per_task`` holds
        ``final_acc`` (``R[T-1]``), ``bwt``, ``forgetting``, ``fwt`` (GEM/Chaudhry) and
        ``avalanche_forgetting``. Undefined values are ``None`` (see the module docs of
        :mod:`kroncl.metrics.continual`).

    Raises:
        ValueError: if ``R`` is not square or holds a non-number.
    """
    _, T = validate_rows(R)
    return {
        "num_tasks": T,
        "acc": average_accuracy(R),
        "bwt": backward_transfer(R),
        "fwt": forward_transfer(R, b),
        "forgetting": forgetting(R),
        "avalanche_forgetting": avalanche_forgetting(R),
        "avalanche_bwt": avalanche_bwt(R),
        "avalanche_fwt": avalanche_forward_transfer(R, b),
        "per_task": {
            "final_acc": list(R[T - 1]),
            "bwt": backward_transfer_per_task(R),
            "forgetting": forgetting_per_task(R),
            "fwt": forward_transfer_per_task(R, b),
            "avalanche_forgetting": avalanche_forgetting_per_task(R),
        },
    }
