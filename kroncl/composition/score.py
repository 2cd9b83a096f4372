"""Scoring one task's examples with a composed model: predictions, labels, accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import Tensor

from kroncl.composition.compatible import ComposeError
from kroncl.evaluate import accuracy_of, predictions

if TYPE_CHECKING:
    from kroncl.composition.attach import ComposedModel
    from kroncl.data.example import MCExample

__all__ = ["score_examples", "accuracy"]


def score_examples(
    composed: ComposedModel, examples: Sequence[MCExample], task: str | None = None, batch_size: int = 64,
    progress: bool = False, task_labels: str = "known",
) -> tuple[Tensor, Tensor]:
    """Score ``examples`` of one task with the composed model.

    Args:
        composed: the composed model.
        examples: rows of one task.
        task: the rows' task; with several resident sets and ``task_labels="known"`` it picks
            the set.
        batch_size: rows per forward.
        progress: show a progress bar.
        task_labels: ``known`` (route by ``task``) or ``unknown`` (the model is not told the
            task: each row is answered by the most confident set, see ``ComposedModel.routed``).

    Returns:
        ``(predictions, labels)``, both (N,) long.

    Raises:
        ComposeError: several sets are resident, labels are known and ``task`` is None or not
            composed.
    """
    unknown = task_labels == "unknown"
    if composed.multi and task is None and not unknown:
        raise ComposeError(f"name the examples' task: this model routes between {composed.tasks} "
                           "(or answer without it: task_labels='unknown', --task-labels unknown)")
    label = composed.label(task) if composed.multi and not unknown else 0
    model = composed.model
    starts = range(0, len(examples), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"scoring {task or 'examples'}", unit="batch", leave=False)
    def rows(start: int) -> list[dict]:
        encoded = [model.encode(ex) for ex in examples[start:start + batch_size]]
        return encoded if unknown and composed.multi else [{**e, "task_labels": label} for e in encoded]

    batches = (model.collate(rows(start)) for start in starts)
    return predictions(composed, batches)


def accuracy(
    composed: ComposedModel, examples: Sequence[MCExample], task: str | None = None, batch_size: int = 64,
    progress: bool = False, task_labels: str = "known",
) -> float:
    """Share of ``examples`` whose best-scoring choice is the right one (NaN for no rows)."""
    return accuracy_of(*score_examples(composed, examples, task, batch_size, progress, task_labels))
