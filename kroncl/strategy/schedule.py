"""Learning-rate schedules as pure functions of the step (restarted for every experience)."""

from __future__ import annotations

import math


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Factor applied to the base learning rate at optimiser step ``step`` (0-based).

    Linear warmup from ~0 to 1 over ``warmup_steps``, then ``linear`` decay to 0, ``cosine``
    decay to 0, or ``constant``.

    >>> lr_multiplier(0, 10, 2, "linear"), lr_multiplier(1, 10, 2, "linear")
    (0.5, 1.0)
    >>> lr_multiplier(10, 10, 2, "linear")
    0.0
    >>> round(lr_multiplier(6, 10, 2, "cosine"), 3)
    0.5
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}; use linear, cosine or constant")
