"""Streams: an ordered list of tasks, loaded and checked before any training starts.

``kroncl/configs/stream/*.yaml`` hold the named streams (``arc``, ``commonsense``, ``toy``); any other
stream is a list of task names (``stream.tasks=[piqa,arc_easy]``). :func:`build_stream` first
resolves the source of every task and reports every task it cannot reach in one error (with the
three ways out), then loads them all, again reporting all failures together.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from kroncl.data.errors import DataError, TaskUnavailableError
from kroncl.data.example import TaskSplits
from kroncl.data.splits import TEST_FRACTION, VALIDATION_FRACTION
from kroncl.data.tasks import JSONL_HINT, TaskSource, _looks_like_path, load_task, resolve_source
from kroncl.fields import build_checked
from kroncl.names import NAME_RULE, name_problem

log = logging.getLogger("kroncl.data")

__all__ = ["StreamConfig", "build_stream"]


@dataclass
class StreamConfig:
    """A stream of tasks (the ``stream`` config group).

    Task ``i`` of ``tasks`` becomes experience ``i`` with task label ``i``.
    """

    name: str = "custom"
    """Name of the stream, used in run directories and registry tags."""
    tasks: list[str] = field(default_factory=list)
    """Task names in training order: catalogue names, folder names under data.dir, or folder paths."""
    max_train: int | None = None
    """Training rows per task (None = all), sampled by seed."""
    max_validation: int | None = None
    """Validation rows per task (None = all)."""
    max_test: int | None = None
    """Test rows per task (None = all)."""
    validation_fraction: float = VALIDATION_FRACTION
    """Share of train held out as validation when a task has no validation split (0 = none)."""
    test_fraction: float = TEST_FRACTION
    """Share held out as test when a task has no test split (PIQA, WinoGrande offline)."""
    seed: int = 0
    """Seeds carving, subsampling and the toy tasks."""
    strict: bool = False
    """Invalid rows are an error instead of being dropped and counted."""

    @classmethod
    def from_mapping(cls, node: Mapping[str, Any]) -> StreamConfig:
        """Build from a plain or OmegaConf mapping (the composed ``stream`` node) and validate.

        Raises:
            DataError: unknown keys or invalid values, all listed, each as ``stream.<key>``.
        """
        node = dict(node)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(node) - names)
        if unknown:
            raise DataError(f"unknown key(s) {', '.join('stream.' + k for k in unknown)}; known: {', '.join(sorted(names))}")
        if "tasks" in node and node["tasks"] is not None and not isinstance(node["tasks"], str):
            node["tasks"] = list(node["tasks"])
        cfg, errors = build_checked(cls, node, "stream")
        if errors:
            raise DataError("invalid stream config: " + "; ".join(errors))
        return cfg

    def validate(self) -> StreamConfig:
        """Check every field; returns self.

        Raises:
            DataError: listing every invalid field as ``stream.<key>=value``.
        """
        errors = self.problems()
        if errors:
            raise DataError("invalid stream config: " + "; ".join(errors))
        return self

    def problems(self) -> list[str]:
        """Every invalid field, one message each, as ``stream.<key>=value ...``."""
        errors = []
        if isinstance(self.tasks, str) or not self.tasks or not all(isinstance(t, str) and t for t in self.tasks):
            errors.append(f"stream.tasks={self.tasks!r} must be a non-empty list of task names, e.g. stream.tasks=[piqa,arc_easy]")
        elif len(set(self.tasks)) != len(self.tasks):
            errors.append(f"stream.tasks={self.tasks} names a task twice; each task is one experience")
        for key in ("max_train", "max_validation", "max_test"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                errors.append(f"stream.{key}={v!r} must be a positive integer or null")
        if not 0 <= self.validation_fraction < 1:
            errors.append(f"stream.validation_fraction={self.validation_fraction!r} must be in [0, 1)")
        if not 0 < self.test_fraction < 1:
            errors.append(f"stream.test_fraction={self.test_fraction!r} must be in (0, 1)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            errors.append(f"stream.seed={self.seed!r} must be an integer")
        if isinstance(self.tasks, list):
            errors.extend(_task_name_problems(self.tasks))
        return errors


def _task_name_problems(tasks: list[object]) -> list[str]:
    """A task is registered under its name (a path task: its folder's name) when its
    experience ends; one the registry would refuse must fail now, not after training."""
    errors = []
    for task in tasks:
        if not isinstance(task, str) or not task:
            continue  # reported as a malformed list above
        name = Path(task).expanduser().name if _looks_like_path(task) else task
        why = name_problem(name)
        if why is not None:
            shown = f"task {task!r}" if name == task else f"task {task!r} (folder name {name!r})"
            fix = "rename it" if name == task else "rename the folder"
            errors.append(f"stream.tasks: {shown} cannot be registered: {why} "
                          f"(rule {NAME_RULE}); {fix}, e.g. {_suggest(name)!r}")
    return errors


def _suggest(name: str) -> str:
    """A name the rule accepts, close to ``name``."""
    fixed = re.sub(r"[^A-Za-z0-9._-]+", "_", name).replace("..", "_").lstrip("._-")[:128]
    return fixed or "my_task"


def _unavailable_summary(cfg: StreamConfig, missing: list[TaskUnavailableError], data_dir: str | Path | None) -> str:
    names = [e.task for e in missing]
    rest = [t for t in cfg.tasks if t not in names]
    lines = [
        f"stream {cfg.name!r} cannot be built: {len(names)} of {len(cfg.tasks)} task(s) have no reachable source: "
        f"{', '.join(names)}."
    ]
    lines += [f"  - {e.task}: {e.reason}" for e in missing]
    folder = str(data_dir) if data_dir else "/path/to/folder"
    lines.append("Fix one of:")
    lines.append("  1. connect to the internet so the Hugging Face Hub can be reached;")
    lines.append(
        f"  2. point data.dir at a folder containing {', '.join(f'{n}/train.jsonl' for n in names)} "
        f"(and validation.jsonl, test.jsonl; one {JSONL_HINT} per line), e.g. data.dir={folder};"
    )
    if rest:
        lines.append(f"  3. run only the tasks you have: stream.tasks=[{','.join(rest)}]")
    return "\n".join(lines)


def build_stream(stream_cfg: StreamConfig | Mapping[str, Any], data_dir: str | Path | None = None) -> list[TaskSplits]:
    """Load every task of a stream, in stream order.

    Args:
        stream_cfg: a :class:`StreamConfig` or the composed ``stream`` config node.
        data_dir: folder of ``<task>/{train,validation,test}.jsonl`` (``data.dir``); tasks found
            there are read locally, the rest from the hub or their generator.

    Returns:
        One :class:`TaskSplits` per task; position ``i`` is experience / task label ``i``.

    Raises:
        DataError: before anything is loaded, one error naming every task that is unknown or
            unreachable and the fixes (reach the hub; point data.dir at a copy; or the
            ``stream.tasks=[...]`` list of the tasks that are available); afterwards, one error
            listing every task that failed to load.
    """
    cfg = stream_cfg if isinstance(stream_cfg, StreamConfig) else StreamConfig.from_mapping(stream_cfg)
    cfg.validate()

    sources: dict[str, TaskSource] = {}
    missing: list[TaskUnavailableError] = []
    other: list[str] = []
    for name in cfg.tasks:
        try:
            sources[name] = resolve_source(name, data_dir)
        except TaskUnavailableError as exc:
            missing.append(exc)
        except DataError as exc:
            other.append(f"  - {name}: {exc}")
    if missing or other:
        parts = [_unavailable_summary(cfg, missing, data_dir)] if missing else []
        if other:
            parts.append(f"stream {cfg.name!r}: these task(s) cannot be resolved:\n" + "\n".join(other))
        raise DataError("\n".join(parts))

    tasks: list[TaskSplits] = []
    failures: list[str] = []
    for name in tqdm(cfg.tasks, desc=f"loading stream {cfg.name}", disable=len(cfg.tasks) < 2, leave=False):
        try:
            tasks.append(load_task(
                name, data_dir, seed=cfg.seed, strict=cfg.strict,
                validation_fraction=cfg.validation_fraction, test_fraction=cfg.test_fraction,
                max_train=cfg.max_train, max_validation=cfg.max_validation, max_test=cfg.max_test,
                source=sources[name],
            ))
        except DataError as exc:
            failures.append(f"  - {name}: {exc}")
    if failures:
        raise DataError(f"stream {cfg.name!r}: {len(failures)} task(s) failed to load:\n" + "\n".join(failures))
    for t in tasks:
        log.info("stream %s: task %s from %s, sizes %s", cfg.name, t.name, t.source, t.sizes())
    return tasks
