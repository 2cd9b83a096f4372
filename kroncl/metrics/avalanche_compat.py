"""The same metrics as Avalanche 0.6.0 reports them, computed from the accuracy matrix.

Avalanche's plugin metrics (``avalanche/evaluation/metrics/forgetting_bwt.py`` and
``forward_transfer.py``) are stateful; replaying their update rules on the matrix gives the
values below, for the usual protocol: one evaluation on the full test stream before training
(sets Avalanche's "initial" accuracy = ``b``) and one after each training experience.

Here ``R`` may be ``n x T`` with ``n <= T`` rows: the value Avalanche reports at the evaluation
that follows training experience ``n-1`` (``i = n-1`` below).

Differences from :mod:`kroncl.metrics.continual` (GEM / Chaudhry et al.):

* Forgetting: Avalanche's ``Forgetting`` keeps ``initial[j]`` = the accuracy on j measured
  when ``train_exp_id == eval_exp_id`` (right after training j, ``R[j][j]``) and
  ``last[j]`` = the latest one, so ``f_j = R[j][j] - R[i][j]`` for ``j < i``. Chaudhry et al.
  use ``max_{l<i} R[l][j]`` instead of ``R[j][j]``.
* BWT: Avalanche's ``forgetting_to_bwt`` is ``-1 * forgetting``, i.e. ``R[i][j] - R[j][j]`` —
  the same as GEM's BWT.
* FWT: ``previous[k]`` is recorded when ``train_exp_id == eval_exp_id - 1`` (``R[k-1][k]``) and
  ``initial[k]`` at the first evaluation (``b[k]``); ``previous`` is never reset, so after
  experience i the stream value averages ``k = 1 .. min(i+1, T-1)`` — it already includes the
  next, not yet trained task. After the last experience it equals GEM's FWT.
* Empty means: Avalanche's ``Mean`` returns 0.0 when it saw no value, so these functions return
  0.0 where the GEM functions return ``None`` (e.g. forgetting after the first experience).
"""

from __future__ import annotations

from kroncl.metrics.continual import Baseline, Matrix, validate_rows


def _avalanche_mean(values: list[float]) -> float:
    # avalanche.evaluation.metrics.Mean.result(): 0.0 when nothing was added.
    return sum(values) / len(values) if values else 0.0


def avalanche_forgetting_per_task(R: Matrix) -> list[float]:
    """Avalanche ``ExperienceForgetting`` after experience ``i = len(R)-1``.

    ``f_j = R[j][j] - R[i][j]`` for ``j < i``.

    Args:
        R: ``n x T`` accuracy matrix (``n <= T`` experiences done).

    Returns:
        ``i`` values; positive = accuracy lost since task j was trained.
    """
    n, _ = validate_rows(R, square=False)
    i = n - 1
    return [R[j][j] - R[i][j] for j in range(i)]


def avalanche_forgetting(R: Matrix) -> float:
    """Avalanche ``StreamForgetting`` after experience ``len(R)-1``: the mean of
    :func:`avalanche_forgetting_per_task`, 0.0 when there is no earlier task.
    """
    return _avalanche_mean(avalanche_forgetting_per_task(R))


def avalanche_bwt_per_task(R: Matrix) -> list[float]:
    """Avalanche ``ExperienceBWT``: ``R[i][j] - R[j][j]`` for ``j < i`` (= -forgetting)."""
    return [-f for f in avalanche_forgetting_per_task(R)]


def avalanche_bwt(R: Matrix) -> float:
    """Avalanche ``StreamBWT`` after experience ``len(R)-1``: mean of the per-task BWT values,
    0.0 when there is no earlier task. Equals GEM's BWT whenever that is defined.
    """
    return _avalanche_mean(avalanche_bwt_per_task(R))


def avalanche_forward_transfer_per_task(R: Matrix, b: Baseline) -> list[float] | None:
    """Avalanche ``ExperienceForwardTransfer`` values known after experience ``i = len(R)-1``.

    ``fwt_k = R[k-1][k] - b[k]`` for ``k = 1 .. min(i+1, T-1)``.

    Args:
        R: ``n x T`` accuracy matrix.
        b: accuracies at the first evaluation, before training; or ``None``.

    Returns:
        The values, or ``None`` when ``b`` is ``None`` or lacks an entry it needs (Avalanche
        itself would fail with a KeyError there).
    """
    n, T = validate_rows(R, square=False)
    if b is None:
        return None
    if len(b) < T:
        raise ValueError(f"baseline has {len(b)} entries, expected {T} (one per task)")
    last_k = min(n, T - 1)
    if any(b[k] is None for k in range(1, last_k + 1)):
        return None
    return [R[k - 1][k] - b[k] for k in range(1, last_k + 1)]  # type: ignore[operator]


def avalanche_forward_transfer(R: Matrix, b: Baseline) -> float | None:
    """Avalanche ``StreamForwardTransfer`` after experience ``len(R)-1``.

    Returns:
        Mean of :func:`avalanche_forward_transfer_per_task`; 0.0 if it is empty (``T == 1``);
        ``None`` without a baseline.
    """
    per_task = avalanche_forward_transfer_per_task(R, b)
    return None if per_task is None else _avalanche_mean(per_task)
