"""What an accuracy means: chance level, the always-the-same-answer rate, collapsed predictions.

A multiple-choice accuracy is only informative next to what answering without understanding
gets. Two references per task's test set:

- **chance**: the expected accuracy of a uniform random pick, mean over rows of 1/choices;
- **majority**: the accuracy of always picking the most common answer *position* (for tasks
  with fixed choices, such as yes/no, that is the majority class).

And one check on predictions: when (almost) every row is answered with the same position, the
adapter has collapsed onto a constant answer, and its accuracy is the share of rows whose
answer happens to sit there — not knowledge, however it compares with the row before training.

And one check on training: a task learnt nothing when its multiple-choice cross-entropy stayed
at the mean ln(choices) of the rows (what uniform scores give) *and* its test accuracy is within
two binomial standard errors of chance. The loss alone is not enough: on ARC-Easy with MiniLM
(256 rows, 2 epochs) the epoch loss moved only from 1.386 to 1.350–1.382 while test accuracy rose
to 0.36–0.45 (chance 0.25) — small score margins already change the ranking.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

COLLAPSE_SHARE = 0.95
"""Predictions count as collapsed when this share of rows gets one answer position."""

STUCK_LOSS_SHARE = 0.98
"""A training loss counts as at chance when its lowest epoch mean is at least this share of the
rows' mean ln(choices): it moved less than 2% from uniform scores."""


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


def learnt_nothing(loss: float, uniform_loss: float, acc: float, chance: float, rows: int) -> bool:
    """Whether a task's training loss sat at the loss of uniform scores while its test accuracy
    stayed within two binomial standard errors of chance (``rows`` test rows).

    >>> import math
    >>> learnt_nothing(1.380, math.log(4), 0.27, 0.25, 100)  # loss and accuracy at chance
    True
    >>> learnt_nothing(1.371, math.log(4), 0.37, 0.25, 100)  # small loss change, accuracy moved
    False
    >>> learnt_nothing(1.10, math.log(4), 0.27, 0.25, 100)   # the loss moved: not "nothing"
    False
    """
    if rows <= 0 or math.isnan(acc):
        return False
    margin = 2 * math.sqrt(chance * (1 - chance) / rows)
    return loss >= STUCK_LOSS_SHARE * uniform_loss and acc <= chance + margin
