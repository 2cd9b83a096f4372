"""What an accuracy means: chance level, the always-the-same-answer rate, collapsed predictions.

A multiple-choice accuracy is only informative next to what answering without understanding
gets. Two references per task's test set:

- **chance**: the expected accuracy of a uniform random pick, mean over rows of 1/choices;
- **majority**: the accuracy of always picking the most common answer *position* (for tasks
  with fixed choices, such as yes/no, that is the majority class).

And one check on predictions: when (almost) every row is answered with the same position, the
adapter has collapsed onto a constant answer, and its accuracy is the share of rows whose
answer happens to sit there — not knowledge, however it compares with the row before training.

And one check on training: a multiple-choice cross-entropy that stays at the mean ln(choices)
of the rows (what uniform scores give) means the adapter learnt nothing from the task, whatever
its test accuracy shows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

COLLAPSE_SHARE = 0.95
"""Predictions count as collapsed when this share of rows gets one answer position."""

STUCK_LOSS_SHARE = 0.98
"""Training counts as stuck at chance when the last epoch's mean loss is at least this share of
the rows' mean ln(choices): a loss that moved less than 2% from uniform scores."""


@dataclass(frozen=True)
class ReferenceRates:
    chance: float
    majority: float
    majority_choice: int
    """0-based answer position that ``majority`` always picks."""

    def to_dict(self) -> dict:
        return asdict(self)


def reference_rates(examples: Iterable) -> ReferenceRates:
    """Chance and majority-position accuracy of ``examples`` (``.choices``, ``.label``).

    >>> from types import SimpleNamespace as Row
    >>> reference_rates([Row(choices=("a", "b"), label=1)] * 3 + [Row(choices=("a", "b", "c", "d"), label=0)])
    ReferenceRates(chance=0.4375, majority=0.75, majority_choice=1)
    """
    rows = list(examples)
    if not rows:
        return ReferenceRates(float("nan"), float("nan"), -1)
    counts = Counter(r.label for r in rows)
    choice, hits = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ReferenceRates(sum(1 / len(r.choices) for r in rows) / len(rows), hits / len(rows), choice)


def top_prediction(counts: Mapping[int, int]) -> tuple[int, float]:
    """(most predicted answer position, its share of rows); (-1, nan) for no rows.

    >>> top_prediction({0: 3, 2: 1})
    (0, 0.75)
    """
    total = sum(counts.values())
    if not total:
        return -1, float("nan")
    choice, n = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return int(choice), n / total


def collapsed(share: float) -> bool:
    return share >= COLLAPSE_SHARE


def loss_at_chance(loss: float, chance_loss: float) -> bool:
    """Whether a mean training loss sits at (or above) the loss of uniform scores.

    >>> import math
    >>> loss_at_chance(1.380, math.log(4)), loss_at_chance(1.10, math.log(4))
    (True, False)
    """
    return loss >= STUCK_LOSS_SHARE * chance_loss
