"""The built-in ``toy`` tasks: generated, no download, made to conflict.

Every question has the same surface form, ``"Pick one: 17 or 42"``, with the two numbers as
the choices. Task ``toy_larger`` marks the larger number right, ``toy_smaller`` the smaller one,
so the two rules contradict each other on identical-looking inputs: a single model fine-tuned on
``toy_larger`` then ``toy_smaller`` must lose the first rule (visible forgetting), while
per-task adapters can keep both. The rule word is deliberately absent from the question.
"""

from __future__ import annotations

import random

from kroncl.data.example import MCExample
from kroncl.data.splits import derive_seed

__all__ = ["TOY_RULES", "toy_examples", "toy_splits", "TOY_SIZES"]

TOY_RULES = ("larger", "smaller")
# Rows generated per split; validation is carved from train like any task without one.
TOY_SIZES = {"train": 400, "test": 200}
_LOW, _HIGH = 0, 99


def toy_examples(rule: str, n: int, seed: int, id_prefix: str) -> list[MCExample]:
    """``n`` questions "Pick one: a or b" (a != b in 0..99) answered by ``rule``.

    Args:
        rule: ``"larger"`` or ``"smaller"``.
        n: number of rows.
        seed: generator seed; the same seed gives the same rows.
        id_prefix: ids are ``<id_prefix>-<row:05d>``.

    Raises:
        ValueError: unknown rule.
    """
    if rule not in TOY_RULES:
        raise ValueError(f"unknown toy rule {rule!r}; rules are {TOY_RULES}")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.sample(range(_LOW, _HIGH + 1), 2)
        larger_first = a > b
        label = 0 if larger_first == (rule == "larger") else 1
        out.append(MCExample(id=f"{id_prefix}-{i:05d}", question=f"Pick one: {a} or {b}", choices=[str(a), str(b)], label=label))
    return out


def toy_splits(rule: str, seed: int) -> dict[str, list[MCExample]]:
    """The generated splits of task ``toy_<rule>`` (``train`` and ``test``)."""
    task = f"toy_{rule}"
    return {
        split: toy_examples(rule, n, derive_seed(seed, task, split), id_prefix=f"{task}-{split}")
        for split, n in TOY_SIZES.items()
    }
