"""The Avalanche benchmark of a stream: one experience per task, task label = stream position.

Built with avalanche-lib 0.6.0's own parts: each split becomes a
``TaskAwareSupervisedClassificationDataset`` over an :class:`EncodedSplit`, with the data
attributes ``targets`` (the right choice) and ``targets_task_labels`` (a ``ConstantSequence`` of
the task label), and ``collate_fn=model.collate``. ``benchmark_from_datasets`` makes the
``train``/``test`` (and ``valid``) streams and ``with_task_labels`` gives every experience its
``task_label``.

Why ``collate_fn`` on the dataset: avalanche's loaders take it from there
(``collate_from_data_or_kwargs`` in ``benchmarks/utils/data_loader.py``, used by
``SupervisedTemplate.make_eval_dataloader`` and the task-balanced train loader) and it survives
``subset``/``concat`` (replay buffers), so every mini-batch is ``model.collate``'s dict of tensors
with ``labels`` and ``task_labels``.

``targets_task_labels`` is not added to items (``use_in_getitem=False``): items already carry
``task_labels`` under the name the model's batches use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.generic_scenario import CLScenario
from avalanche.benchmarks.scenarios.task_aware import with_task_labels
from avalanche.benchmarks.utils import ConstantSequence, DataAttribute
from avalanche.benchmarks.utils.classification_dataset import TaskAwareSupervisedClassificationDataset
from tqdm.auto import tqdm

from kroncl.data.encoded import EncodedSplit, encode_split
from kroncl.data.example import TaskSplits
from kroncl.data.errors import DataError

__all__ = ["make_benchmark", "make_experience_dataset"]


class BenchmarkModel(Protocol):
    """What a benchmark needs from the model: encode rows, collate items, a cache fingerprint."""

    def encode(self, example: Any) -> dict[str, Any]: ...

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]: ...

    def encoding_fingerprint(self) -> str: ...


def make_experience_dataset(encoded: EncodedSplit, collate_fn: Any) -> TaskAwareSupervisedClassificationDataset:
    """Wrap one tokenised split as an avalanche dataset of its experience."""
    n = len(encoded)
    return TaskAwareSupervisedClassificationDataset(
        [encoded],
        data_attributes=[
            DataAttribute(encoded.labels, "targets"),
            DataAttribute(ConstantSequence(encoded.task_label, n), "targets_task_labels", use_in_getitem=False),
        ],
        collate_fn=collate_fn,
    )


def make_benchmark(
    tasks: Sequence[TaskSplits],
    model: BenchmarkModel,
    cache_dir: str | Path | None = None,
    with_validation: bool | None = None,
) -> CLScenario:
    """Tokenise every split and build the benchmark.

    Args:
        tasks: the stream, in order (:func:`kroncl.data.build_stream`).
        model: encodes rows and collates items (a ``MultipleChoiceModel``).
        cache_dir: tokenisation cache folder (see :func:`kroncl.data.encoded.encode_split`).
        with_validation: add a ``valid_stream``; default: when every task has validation rows.

    Returns:
        An avalanche ``CLScenario`` with ``train_stream`` and ``test_stream`` (and
        ``valid_stream``) of ``len(tasks)`` experiences; experience ``i`` has
        ``task_label == i`` and its dataset yields dicts with ``labels`` and ``task_labels``.

    Raises:
        DataError: no tasks, or ``with_validation=True`` while a task has no validation rows.
    """
    if not tasks:
        raise DataError("the stream has no tasks; set stream.tasks=[...]")
    has_val = all(t.validation for t in tasks)
    if with_validation is None:
        with_validation = has_val
    if with_validation and not has_val:
        empty = [t.name for t in tasks if not t.validation]
        raise DataError(f"tasks {empty} have no validation rows; set stream.validation_fraction > 0")

    splits = ["train", "test"] + (["validation"] if with_validation else [])
    streams: dict[str, list[TaskAwareSupervisedClassificationDataset]] = {"train": [], "test": [], "valid": []}
    jobs = [(i, t, s) for i, t in enumerate(tasks) for s in splits]
    for label, task, split in tqdm(jobs, desc="tokenising stream", leave=False, disable=len(jobs) < 4):
        data = encode_split(task.split(split), model, task.name, split, cache_dir=cache_dir)
        stream = "valid" if split == "validation" else split
        streams[stream].append(make_experience_dataset(EncodedSplit(data, task_label=label), model.collate))
    if not with_validation:
        del streams["valid"]
    return with_task_labels(benchmark_from_datasets(**streams))
