"""Continual-learning metrics of an accuracy matrix, as pure functions.

Notation (Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", GEM,
arXiv 1706.08840, Sec. 2): after training on experience ``i`` the model is evaluated on the
test set of every task ``j``; ``R[i][j]`` is that accuracy, ``T`` the number of tasks and
``b[j]`` the accuracy on task ``j`` *before any training* (zero-shot / random init).
Experience ``i`` trains task ``i``, so ``R`` is square ``T x T``.

    R = [[R00, R01, R02],   # after experience 0
         [R10, R11, R12],   # after experience 1
         [R20, R21, R22]]   # after experience 2 (final)

Edge case ``T == 1``: BWT, forgetting and FWT are means over an *empty* set of tasks, so
these functions return ``None`` ("undefined"), never a made-up 0.0. (The Avalanche variants in
:mod:`kroncl.metrics.avalanche_compat` mirror Avalanche instead, which reports 0.0.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Matrix = Sequence[Sequence[float]]
"""``R[i][j]``: accuracy on task j's test set after training experience i."""
Baseline = Sequence[float | None] | None
"""``b[j]``: accuracy on task j before any training; None entries / None = not measured."""


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def validate_rows(R: Matrix, *, square: bool = True) -> tuple[int, int]:
    """Check that ``R`` is a rectangular matrix of finite numbers.

    Args:
        R: rows of accuracies; ``R[i][j]`` after experience i on task j.
        square: require ``len(R) == len(R[0])`` (a finished stream). With ``False``, ``R`` may
            hold fewer rows than tasks (a stream still running: ``n <= T``).

    Returns:
        ``(n, T)``: number of rows (experiences done) and of columns (tasks).

    Raises:
        ValueError: naming the offending shape or cell, e.g. a ``None`` left in a row.
    """
    n = len(R)
    if n == 0:
        raise ValueError("accuracy matrix has no rows; evaluate at least one experience first")
    T = len(R[0])
    for i, row in enumerate(R):
        if len(row) != T:
            raise ValueError(f"accuracy matrix row {i} has {len(row)} entries, row 0 has {T}")
        for j, value in enumerate(row):
            if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"R[{i}][{j}]={value!r} is not a number; fill it before computing metrics")
            if not math.isfinite(value):
                raise ValueError(f"R[{i}][{j}]={value!r} is not finite")
    if square and n != T:
        raise ValueError(
            f"accuracy matrix is {n}x{T}, expected square T x T (one row per task); "
            "pass the leading n x n block for a stream still running"
        )
    if n > T:
        raise ValueError(f"accuracy matrix has {n} rows but only {T} tasks")
    return n, T


def _validate_baseline(b: Baseline, T: int) -> None:
    if b is None:
        return
    if len(b) < T:
        raise ValueError(f"baseline has {len(b)} entries, expected at least {T} (one per task)")


def average_accuracy(R: Matrix) -> float:
    """Average accuracy after the last experience (GEM, arXiv 1706.08840, eq. ACC).

    ``ACC = 1/T * sum_j R[T-1][j]``

    Args:
        R: square ``T x T`` accuracy matrix.

    Returns:
        The mean of the final row.

    Raises:
        ValueError: if ``R`` is not a square matrix of finite numbers.

    >>> average_accuracy([[0.8, 0.1], [0.6, 0.9]])
    0.75
    """
    _, T = validate_rows(R)
    return sum(R[T - 1]) / T


def backward_transfer_per_task(R: Matrix) -> list[float]:
    """Per-task backward transfer ``R[T-1][j] - R[j][j]`` for ``j < T-1`` (GEM).

    Negative values mean the final model is worse on task j than right after learning it.

    Args:
        R: square ``T x T`` accuracy matrix.

    Returns:
        ``T-1`` values, one per task except the last (empty for ``T == 1``).
    """
    _, T = validate_rows(R)
    return [R[T - 1][j] - R[j][j] for j in range(T - 1)]


def backward_transfer(R: Matrix) -> float | None:
    """Backward transfer (GEM, arXiv 1706.08840, eq. BWT).

    ``BWT = 1/(T-1) * sum_{j<T-1} (R[T-1][j] - R[j][j])``

    Args:
        R: square ``T x T`` accuracy matrix.

    Returns:
        The mean, or ``None`` for ``T == 1`` (no earlier task to transfer back to).

    >>> round(backward_transfer([[0.8, 0.1], [0.6, 0.9]]), 6)
    -0.2
    """
    return _mean(backward_transfer_per_task(R))


def forward_transfer_per_task(R: Matrix, b: Baseline) -> list[float | None] | None:
    """Per-task forward transfer ``R[j-1][j] - b[j]`` for ``j >= 1`` (GEM).

    Accuracy on task j just before training it, relative to the untrained model.

    Args:
        R: square ``T x T`` accuracy matrix.
        b: baseline accuracies before any training, one per task, or ``None``.

    Returns:
        ``T-1`` values (an entry is ``None`` where ``b[j]`` is ``None``), or ``None`` when no
        baseline was measured at all.
    """
    _, T = validate_rows(R)
    if b is None:
        return None
    _validate_baseline(b, T)
    return [None if b[j] is None else R[j - 1][j] - b[j] for j in range(1, T)]


def forward_transfer(R: Matrix, b: Baseline) -> float | None:
    """Forward transfer (GEM, arXiv 1706.08840, eq. FWT).

    ``FWT = 1/(T-1) * sum_{j>=1} (R[j-1][j] - b[j])``

    Args:
        R: square ``T x T`` accuracy matrix.
        b: baseline accuracies before any training (``b[j]`` on task j), or ``None``.

    Returns:
        The mean; ``None`` when ``T == 1``, when ``b`` is ``None`` or when any ``b[j]``
        (``j >= 1``) it needs is ``None`` — a mean over a subset of tasks would not be FWT.
    """
    per_task = forward_transfer_per_task(R, b)
    if per_task is None or any(v is None for v in per_task):
        return None
    return _mean([v for v in per_task if v is not None])


def forgetting_per_task(R: Matrix) -> list[float]:
    """Per-task forgetting (Chaudhry et al., "Riemannian Walk", arXiv 1801.10112, eq. 3).

    ``f_j = max_{l < T-1} R[l][j] - R[T-1][j]`` for ``j < T-1``.

    As in the paper the max runs over *every* earlier row ``l``, including rows before task j
    was trained; it differs from ``-BWT_j`` when some intermediate accuracy beat ``R[j][j]``.

    Args:
        R: square ``T x T`` accuracy matrix.

    Returns:
        ``T-1`` values (empty for ``T == 1``); positive = accuracy lost.
    """
    _, T = validate_rows(R)
    return [max(R[l][j] for l in range(T - 1)) - R[T - 1][j] for j in range(T - 1)]


def forgetting(R: Matrix) -> float | None:
    """Average forgetting (Chaudhry et al., arXiv 1801.10112, eq. 4): mean of
    :func:`forgetting_per_task`; ``None`` for ``T == 1``.

    >>> round(forgetting([[0.8, 0.1], [0.6, 0.9]]), 6)
    0.2
    """
    return _mean(forgetting_per_task(R))
