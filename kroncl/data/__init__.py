"""kroncl.data — tasks, streams, tokenised datasets and the Avalanche benchmark.

Public API::

    MCExample(id, question, choices, label)          # the one schema (JSONL of ../shared/data)
    load_task(name, data_dir=None, seed=0, strict=False, **limits) -> TaskSplits
    StreamConfig(name, tasks, max_train, max_validation, max_test,
                 validation_fraction, test_fraction, seed, strict)
    build_stream(stream_cfg, data_dir=None) -> list[TaskSplits]
    make_benchmark(tasks, model, cache_dir=None) -> avalanche CLScenario
    TASKS / register_task(TaskSpec(...))             # the catalogue

Errors are :class:`DataError` (and its :class:`TaskUnavailableError`); progress and carving
notes go to ``logging.getLogger("kroncl.data")``.

``make_benchmark`` is imported on first use: avalanche-lib takes ~15 s to import, and loading
or checking tasks does not need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kroncl.data.catalogue import TASKS, TaskSpec, register_task, task_names
from kroncl.data.encoded import EncodedSplit, encode_split
from kroncl.data.errors import DataError, TaskUnavailableError
from kroncl.data.example import SPLITS, MCExample, TaskSplits, drop_invalid, invalid_reason
from kroncl.data.jsonl import read_jsonl, write_jsonl
from kroncl.data.stream import StreamConfig, build_stream
from kroncl.data.tasks import TaskSource, load_task, resolve_source

if TYPE_CHECKING:
    from kroncl.data.benchmark import make_benchmark

__all__ = [
    "SPLITS",
    "TASKS",
    "DataError",
    "EncodedSplit",
    "MCExample",
    "StreamConfig",
    "TaskSource",
    "TaskSpec",
    "TaskSplits",
    "TaskUnavailableError",
    "build_stream",
    "drop_invalid",
    "encode_split",
    "invalid_reason",
    "load_task",
    "make_benchmark",
    "read_jsonl",
    "register_task",
    "resolve_source",
    "task_names",
    "write_jsonl",
]


def __getattr__(name: str) -> Any:
    if name == "make_benchmark":
        from kroncl.data.benchmark import make_benchmark

        return make_benchmark
    raise AttributeError(f"module 'kroncl.data' has no attribute {name!r}")
