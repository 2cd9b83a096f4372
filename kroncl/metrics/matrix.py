"""`AccuracyMatrix`: the accuracy of every task after every experience, and its files.

Files written by :meth:`AccuracyMatrix.save` (each atomically: temp file + ``os.replace``, so a
crash mid-write never leaves a truncated file behind):

* ``accuracy_matrix.json`` — ``{"format_version": 1, "task_names", "baseline", "rows",
  "task_labels"}`` (``known``/``unknown``: whether test rows were routed by their task label);
  ``null`` marks a cell not measured yet. Read back with :meth:`AccuracyMatrix.load`.
* ``accuracy_matrix.csv`` — header ``after,<task names>``, first row ``before`` (baseline),
  then one row per experience labelled with the task trained in it; empty cell = not measured.
* ``metrics.json`` — :meth:`AccuracyMatrix.summary` (ACC/BWT/FWT/forgetting and over time).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kroncl.fileio import atomic_write_text
from kroncl.metrics.summary import metrics_over_time, summarize

FORMAT_VERSION = 1
MATRIX_JSON = "accuracy_matrix.json"
MATRIX_CSV = "accuracy_matrix.csv"
METRICS_JSON = "metrics.json"
TASK_LABELS = ("known", "unknown")


def _check_accuracy(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}={value!r} is not a number")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{where}={value!r} is not finite")
    return value


def _check_optional(value: Any, where: str) -> float | None:
    return None if value is None else _check_accuracy(value, where)


@dataclass
class AccuracyMatrix:
    """Accuracy on each task's test set before training and after each experience.

    Experience ``i`` trains task ``task_names[i]``; ``rows[i][j]`` is the accuracy on task
    ``j`` after it, ``baseline[j]`` the accuracy before any training. Cells start as ``None``
    and are filled with :meth:`set` / :meth:`set_baseline` as evaluations finish.

    Args:
        task_names: unique task names in stream order (T >= 1).
        baseline: ``T`` values or ``None`` entries; empty (default) = all ``None``.
        rows: ``T x T`` values or ``None`` entries; empty (default) = all ``None``.
        task_labels: ``known`` (each test row was answered by its own task's adapter set) or
            ``unknown`` (the model was not told the task; see ``eval.task_labels``).

    Raises:
        ValueError: duplicate/empty task names, wrong shapes, non-finite values.
    """

    task_names: list[str]
    baseline: list[float | None] = field(default_factory=list)
    rows: list[list[float | None]] = field(default_factory=list)
    task_labels: str = "known"

    def __post_init__(self) -> None:
        self.task_names = [str(t) for t in self.task_names]
        T = len(self.task_names)
        if T == 0:
            raise ValueError("AccuracyMatrix needs at least one task name")
        if any(not t for t in self.task_names):
            raise ValueError(f"task_names={self.task_names} contains an empty name")
        if len(set(self.task_names)) != T:
            raise ValueError(f"task_names={self.task_names} lists a task twice")
        if not self.baseline:
            self.baseline = [None] * T
        if len(self.baseline) != T:
            raise ValueError(f"baseline has {len(self.baseline)} entries for {T} tasks")
        self.baseline = [_check_optional(v, f"baseline[{j}]") for j, v in enumerate(self.baseline)]
        if not self.rows:
            self.rows = [[None] * T for _ in range(T)]
        if len(self.rows) != T:
            raise ValueError(f"rows has {len(self.rows)} rows for {T} tasks (one per experience)")
        checked: list[list[float | None]] = []
        for i, row in enumerate(self.rows):
            if len(row) != T:
                raise ValueError(f"rows[{i}] has {len(row)} entries for {T} tasks")
            checked.append([_check_optional(v, f"rows[{i}][{j}]") for j, v in enumerate(row)])
        self.rows = checked
        if self.task_labels not in TASK_LABELS:
            raise ValueError(f"task_labels={self.task_labels!r} is not one of {', '.join(TASK_LABELS)}")

    # -- access -------------------------------------------------------------------------

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def index(self, task: int | str) -> int:
        """Column index of ``task`` (a name or an index).

        Raises:
            KeyError: unknown name, listing the known ones.
            IndexError: index out of range.
        """
        if isinstance(task, str):
            try:
                return self.task_names.index(task)
            except ValueError:
                raise KeyError(f"unknown task {task!r}; known tasks: {self.task_names}") from None
        if not 0 <= task < self.num_tasks:
            raise IndexError(f"task index {task} out of range for {self.num_tasks} tasks")
        return task

    def set(self, i: int, j: int | str, acc: float) -> None:
        """Record the accuracy on task ``j`` after experience ``i``."""
        i = self._experience(i)
        j = self.index(j)
        self.rows[i][j] = _check_accuracy(acc, f"rows[{i}][{j}]")

    def set_row(self, i: int, accs: Sequence[float] | dict[str, float]) -> None:
        """Record the accuracies on all tasks after experience ``i`` (list or name -> acc)."""
        items = accs.items() if isinstance(accs, dict) else enumerate(accs)
        if not isinstance(accs, dict) and len(accs) != self.num_tasks:
            raise ValueError(f"row for experience {i} has {len(accs)} values for {self.num_tasks} tasks")
        for j, acc in items:
            self.set(i, j, acc)

    def set_baseline(self, j: int | str, acc: float) -> None:
        """Record the accuracy on task ``j`` before any training."""
        j = self.index(j)
        self.baseline[j] = _check_accuracy(acc, f"baseline[{j}]")

    def get(self, i: int, j: int | str) -> float | None:
        return self.rows[self._experience(i)][self.index(j)]

    def _experience(self, i: int) -> int:
        if not 0 <= i < self.num_tasks:
            raise IndexError(f"experience index {i} out of range for {self.num_tasks} experiences")
        return i

    @property
    def completed_experiences(self) -> int:
        """Number of leading rows with every cell filled."""
        n = 0
        for row in self.rows:
            if any(v is None for v in row):
                break
            n += 1
        return n

    @property
    def is_complete(self) -> bool:
        """True when every experience row is filled (the baseline is optional)."""
        return self.completed_experiences == self.num_tasks

    @property
    def has_baseline(self) -> bool:
        return all(v is not None for v in self.baseline)

    def complete_rows(self) -> list[list[float]]:
        """The leading complete rows (``n x T``), ready for :mod:`kroncl.metrics` functions."""
        return [list(r) for r in self.rows[: self.completed_experiences]]

    # -- metrics ------------------------------------------------------------------------

    def over_time(self) -> list[dict[str, Any]]:
        """:func:`~kroncl.metrics.summary.metrics_over_time` of the complete rows ([] if none)."""
        rows = self.complete_rows()
        return metrics_over_time(rows, self._baseline_or_none()) if rows else []

    def summary(self) -> dict[str, Any]:
        """:func:`~kroncl.metrics.summary.summarize` of the tasks seen so far.

        For a stream still running (``n`` complete rows), the metrics are those of the leading
        ``n x n`` block, i.e. of the tasks trained so far.

        Returns:
            The summarize() dict plus ``task_names``, ``num_tasks`` (= T),
            ``completed_experiences`` and ``over_time``; scalar metrics are ``None`` while no
            experience is complete.
        """
        n = self.completed_experiences
        base: dict[str, Any] = {
            "task_names": list(self.task_names),
            "num_tasks": self.num_tasks,
            "completed_experiences": n,
            "task_labels": self.task_labels,
            "baseline": list(self.baseline),
        }
        if n == 0:
            return {**base, "acc": None, "bwt": None, "fwt": None, "forgetting": None,
                    "avalanche_forgetting": None, "avalanche_bwt": None, "avalanche_fwt": None,
                    "per_task": {}, "over_time": []}
        block = [row[:n] for row in self.complete_rows()]
        b = self._baseline_or_none()
        summary = summarize(block, None if b is None else b[:n])
        summary.pop("num_tasks")
        return {**base, **summary, "over_time": self.over_time()}

    def _baseline_or_none(self) -> list[float | None] | None:
        return list(self.baseline) if any(v is not None for v in self.baseline) else None

    # -- files --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "task_names": list(self.task_names),
            "baseline": list(self.baseline),
            "rows": [list(r) for r in self.rows],
            "task_labels": self.task_labels,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccuracyMatrix:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown ``format_version`` or malformed content.
        """
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"accuracy matrix format_version={version!r} is not supported (expected {FORMAT_VERSION})"
            )
        missing = [k for k in ("task_names", "baseline", "rows") if k not in data]
        if missing:
            raise ValueError(f"accuracy matrix dict lacks keys {missing}")
        return cls(task_names=list(data["task_names"]), baseline=list(data["baseline"]),
                   rows=[list(r) for r in data["rows"]],
                   task_labels=data.get("task_labels", "known"))  # files before it existed

    def to_csv(self) -> str:
        """CSV text: header ``after,<tasks>``, row ``before``, one row per experience."""
        def cell(v: float | None) -> str:
            return "" if v is None else repr(v)

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["after", *self.task_names])
        writer.writerow(["before", *map(cell, self.baseline)])
        for name, row in zip(self.task_names, self.rows):
            writer.writerow([name, *map(cell, row)])
        return buf.getvalue()

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``accuracy_matrix.json``, ``accuracy_matrix.csv`` and ``metrics.json``.

        Returns:
            ``{"matrix_json": path, "matrix_csv": path, "metrics_json": path}``.
        """
        directory = Path(directory)
        paths = {
            "matrix_json": directory / MATRIX_JSON,
            "matrix_csv": directory / MATRIX_CSV,
            "metrics_json": directory / METRICS_JSON,
        }
        atomic_write_text(paths["matrix_json"], json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        atomic_write_text(paths["matrix_csv"], self.to_csv())
        atomic_write_text(paths["metrics_json"], json.dumps(self.summary(), indent=2, allow_nan=False) + "\n")
        return paths

    @classmethod
    def load(cls, directory: str | Path) -> AccuracyMatrix:
        """Read ``<directory>/accuracy_matrix.json`` written by :meth:`save`."""
        path = Path(directory) / MATRIX_JSON
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
