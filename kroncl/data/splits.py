"""Deterministic carving and subsampling of splits.

Every random choice here is drawn from a generator seeded by ``derive_seed(seed, task, purpose)``,
so the same (seed, task) always gives the same split whatever else is in the stream, and picked
rows keep their file order.

When a source lacks a split (the offline copies in ``../shared/data`` do), it is carved:

- no ``test`` split: ``test_fraction`` (default 0.3) of ``train`` is held out as test; a task
  with only a ``validation`` split (PIQA, WinoGrande offline) has its test carved from that
  split, and the rest becomes ``train``;
- no ``validation`` split: ``validation_fraction`` (default 0.1) of ``train`` is held out.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Sequence
from typing import TypeVar

from kroncl.data.errors import DataError

log = logging.getLogger("kroncl.data")

T = TypeVar("T")

VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.3

__all__ = ["derive_seed", "carve", "subsample", "resolve_splits", "VALIDATION_FRACTION", "TEST_FRACTION"]


def derive_seed(seed: int, *parts: str) -> int:
    """A 64-bit seed from a base seed and names, stable across processes (no ``hash()``).

    >>> derive_seed(0, "piqa", "test") == derive_seed(0, "piqa", "test")
    True
    >>> derive_seed(0, "piqa", "test") != derive_seed(1, "piqa", "test")
    True
    """
    blob = "\x1f".join([str(seed), *parts]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


def carve(items: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Split ``items`` into (held_out, rest) with ``round(fraction * n)`` held out.

    At least one item goes each way when ``0 < fraction`` and ``n >= 2``; both parts keep the
    input order.

    >>> carve(list(range(10)), 0.3, seed=1)[0] == carve(list(range(10)), 0.3, seed=1)[0]
    True
    >>> [len(p) for p in carve(list(range(10)), 0.3, seed=1)]
    [3, 7]
    """
    n = len(items)
    if fraction <= 0 or n == 0:
        return [], list(items)
    k = round(fraction * n)
    k = min(max(k, 1), n - 1) if n >= 2 else n
    held = set(random.Random(seed).sample(range(n), k))
    return [x for i, x in enumerate(items) if i in held], [x for i, x in enumerate(items) if i not in held]


def subsample(items: Sequence[T], limit: int | None, seed: int) -> list[T]:
    """At most ``limit`` items, picked uniformly by ``seed``, in input order (None = all)."""
    if limit is None or len(items) <= limit:
        return list(items)
    keep = set(random.Random(seed).sample(range(len(items)), limit))
    return [x for i, x in enumerate(items) if i in keep]


def resolve_splits(
    available: dict[str, list[T]],
    task: str,
    seed: int,
    validation_fraction: float = VALIDATION_FRACTION,
    test_fraction: float = TEST_FRACTION,
) -> tuple[list[T], list[T], list[T], list[str]]:
    """Produce (train, validation, test) from whichever splits a source has.

    Args:
        available: split name -> rows, for the splits the source really has.
        task: task name, part of the carving seeds and of the notes.
        seed: base seed.
        validation_fraction: share of train held out when there is no validation split.
        test_fraction: share held out as test when there is no test split.

    Returns:
        train, validation, test, and one note per carved split (also logged at INFO).

    Raises:
        DataError: the source has no split to train on (only ``test``).
    """
    notes: list[str] = []
    train, val, test = available.get("train"), available.get("validation"), available.get("test")
    if train is None and val is None:
        raise DataError(
            f"task {task!r} has only a test split; add train.jsonl (or validation.jsonl) to its folder"
        )
    if train is None:
        # Only a dev split (PIQA, WinoGrande offline): it is all we have to train on.
        assert val is not None
        train, val, origin = val, None, "the validation split"
    else:
        origin = "train"
    if test is None:
        test, train = carve(train, test_fraction, derive_seed(seed, task, "test"))
        notes.append(f"{task}: no test split; carved {len(test)} test rows ({test_fraction:.0%}) from {origin} (seed {seed})")
    if val is None:
        val, train = carve(train, validation_fraction, derive_seed(seed, task, "validation"))
        if val:
            notes.append(
                f"{task}: no validation split; carved {len(val)} validation rows ({validation_fraction:.0%}) "
                f"from {'train' if origin == 'train' else 'the rest of ' + origin} (seed {seed})"
            )
    for note in notes:
        log.info(note)
    return train, val, test, notes
