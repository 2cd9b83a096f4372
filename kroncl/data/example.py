"""The one multiple-choice schema every task is normalised to, and the row checks.

``MCExample`` mirrors the JSON Lines schema of ``../shared/data`` (and of "bring your own
task" folders)::

    {"id": "arc_challenge-test-00000", "question": "...", "choices": ["...", "..."], "label": 2}

``label`` is the 0-based index of the right choice. Rows that cannot be scored (empty
question, fewer than two choices, answer not among the choices) are dropped by
:func:`drop_invalid` and counted; with ``strict=True`` they are an error instead.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from kroncl.data.errors import DataError

log = logging.getLogger("kroncl.data")

SPLITS = ("train", "validation", "test")

# How many dropped row ids a warning or error spells out before it summarises the rest.
_MAX_IDS_SHOWN = 20


@dataclass(frozen=True)
class MCExample:
    """One multiple-choice question.

    Attributes:
        id: unique within its task split (hub id, or ``<task>-<split>-<row:05d>``).
        question: the prompt shown with every choice (may contain a ``_`` blank: WinoGrande).
        choices: the candidate answers, in display order.
        label: 0-based index of the right choice; -1 when a source row's answer matched no
            choice (such rows are dropped by :func:`drop_invalid`).
    """

    id: str
    question: str
    choices: tuple[str, ...]
    label: int

    def __post_init__(self) -> None:
        # Accept lists from JSON/arrow, store an immutable tuple so examples can be hashed/shared.
        object.__setattr__(self, "choices", tuple(self.choices))

    def to_dict(self) -> dict:
        """The JSONL row of this example (``choices`` as a list)."""
        return {"id": self.id, "question": self.question, "choices": list(self.choices), "label": self.label}


@dataclass
class TaskSplits:
    """A loaded task: its three splits in the :class:`MCExample` schema.

    Attributes:
        name: task name as used in the stream (``arc_easy``, ``toy_larger``, a folder name...).
        train, validation, test: the examples; ``validation`` may be empty when
            ``validation_fraction=0`` and the source has no validation split.
        source: where the rows came from (``hub:allenai/ai2_arc/ARC-Easy``, a folder path,
            ``generated:toy``), for logs and run metadata.
        dropped: split -> ids of rows dropped as invalid.
        notes: how missing splits were carved and what was subsampled (also logged).
    """

    name: str
    train: list[MCExample]
    validation: list[MCExample]
    test: list[MCExample]
    source: str = ""
    dropped: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[MCExample]:
        """The examples of split ``name`` (one of :data:`SPLITS`)."""
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; splits are {SPLITS}")
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {s: len(self.split(s)) for s in SPLITS}


def invalid_reason(example: MCExample) -> str | None:
    """Why ``example`` cannot be scored, or None when it is fine.

    Pure: the same check for hub rows, JSONL rows and generated rows.

    >>> invalid_reason(MCExample("a", "2+2?", ["3", "4"], 1)) is None
    True
    >>> invalid_reason(MCExample("b", "2+2?", ["4"], 0))
    'fewer than two choices'
    """
    if not example.question or not example.question.strip():
        return "empty question"
    if len(example.choices) < 2:
        return "fewer than two choices"
    if not 0 <= example.label < len(example.choices):
        return "answer not among choices"
    return None


def drop_invalid(
    examples: Iterable[MCExample], where: str, strict: bool = False
) -> tuple[list[MCExample], list[str]]:
    """Keep the scoreable examples; report the others by id.

    Args:
        examples: rows already mapped to :class:`MCExample`.
        where: ``<task>/<split>`` for the messages.
        strict: raise instead of dropping.

    Returns:
        (kept examples in input order, ids of dropped rows).

    Raises:
        DataError: ``strict=True`` and at least one row is invalid; lists every reason with
            the row ids.
    """
    kept: list[MCExample] = []
    by_reason: dict[str, list[str]] = defaultdict(list)
    for ex in examples:
        reason = invalid_reason(ex)
        if reason is None:
            kept.append(ex)
        else:
            by_reason[reason].append(ex.id)
    dropped = [i for ids in by_reason.values() for i in ids]
    if dropped:
        summary = "; ".join(f"{reason}: {_format_ids(ids)}" for reason, ids in by_reason.items())
        if strict:
            raise DataError(
                f"{where}: {len(dropped)} invalid row(s) ({summary}). Fix the source rows, or set "
                "data.strict=false to drop and count them instead."
            )
        log.warning("%s: dropped %d of %d rows (%s)", where, len(dropped), len(dropped) + len(kept), summary)
    return kept, dropped


def _format_ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_MAX_IDS_SHOWN])
    more = len(ids) - _MAX_IDS_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown
