"""Scoring a composition on each task's test split, carved as the training run carved it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kroncl.adapters.routing import TokenCentroidRouter
from kroncl.composition import accuracy
from pipelines.compose.build import Composition
from registry import AdapterVersion

__all__ = ["EvalResult", "evaluate"]


@dataclass
class EvalResult:
    task: str
    rows: int
    acc: float
    registry_acc: float | None
    """The source version's registered ``acc`` when the test split is the one it was measured on."""
    source: str | None
    routing_acc: float | None = None
    """Answered without task labels: share of the rows the task's own set answered."""


def evaluate(
    composition: Composition,
    tasks: Sequence[str] = (),
    *,
    data_dir: str | None = None,
    max_test: int | None = None,
    batch_size: int = 64,
    sources: Sequence[AdapterVersion] = (),
    progress: bool = False,
    task_labels: str = "known",
) -> list[EvalResult]:
    """Accuracy of the composed model on each task's test split.

    Each task's split is carved as the run that trained it carved it (``config.run.stream``
    seed, fractions, ``max_test``, ``data.dir`` of the version trained on it), unless
    ``data_dir`` / ``max_test`` override them.

    Args:
        tasks: tasks to score; default: the composed versions' tasks (or the source tasks of
            a task-arithmetic version, taken from ``sources``).
        sources: versions to take each task's split settings and reference accuracy from
            (default: the composed versions).
        task_labels: ``unknown`` scores every row without telling the model its task (a token
            centroid router fitted on the composed versions' training rows picks the set) and
            reports how often it was the task's own set.

    Raises:
        ComposeError: a task is not composed while several sets are resident.
        DataError: a task cannot be loaded.
    """
    sources = list(sources) or composition.versions
    by_task = {v.task: v for v in sources}
    tasks = list(tasks) or list(by_task)
    composed = composition.composed
    if task_labels == "unknown" and composed.multi:
        composed.router = fit_router(composition, data_dir)
    results = []
    for task in tasks:
        src = by_task.get(task)
        splits, stream, folder = load_splits(task, src, data_dir, max_test)
        composed.routed.clear()
        acc = accuracy(composed, splits.test, task if composed.multi else None, batch_size, progress, task_labels)
        same_split = src is not None and max_test in (None, stream.get("max_test")) and data_dir in (None, folder)
        ref_acc = src.metrics.get("acc") if same_split else None
        routing = None
        if task_labels == "unknown" and composed.multi and task in composed.sets and splits.test:
            routing = composed.routed[task] / len(splits.test)
        results.append(EvalResult(task, len(splits.test), acc, ref_acc, src.ref if src else None, routing))
    return results


def load_splits(task: str, src: AdapterVersion | None, data_dir: str | None, max_test: int | None):
    """(splits, stream settings, data folder) of ``task``, carved as the run behind ``src`` carved it."""
    from kroncl.data import load_task

    run = (src.config.get("run") or {}) if src else {}
    stream = run.get("stream") or {}
    kwargs = {k: stream[k] for k in ("validation_fraction", "test_fraction", "max_train", "max_validation",
                                      "max_test") if stream.get(k) is not None}
    if max_test is not None:
        kwargs["max_test"] = max_test
    folder = data_dir or (run.get("data") or {}).get("dir")
    splits = load_task(task, folder, seed=int(stream.get("seed", 0)), strict=bool(stream.get("strict", False)),
                       **kwargs)
    return splits, stream, folder


def fit_router(composition: Composition, data_dir: str | None, batch_size: int = 64) -> TokenCentroidRouter:
    """A task router over the composed tasks, fitted on the training rows each version was
    trained on (for answering without task labels)."""
    composed = composition.composed
    model = composed.model
    router = TokenCentroidRouter()
    for version in composition.versions:
        train = load_splits(version.task, version, data_dir, None)[0].train
        batches = (model.collate([model.encode(ex) for ex in train[i:i + batch_size]])
                   for i in range(0, len(train), batch_size))
        router.fit(composed.label(version.task), batches)
    return router
