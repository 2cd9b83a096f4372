"""Scoring a model with resident adapter sets on a dataset of multiple-choice rows.

:func:`evaluate_accuracy` is plain inference: no Avalanche template, no plugins, no metric
loggers and no RNG, so it can score a variant of the model (e.g. a quantized adapter swapped in
for a moment) without leaving a trace in the run's metrics or changing its results.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader

from kroncl.adapters import adapter_state_dict, load_adapter_state_dict
from kroncl.adapters.routing import routed_forward


@torch.no_grad()
def evaluate_accuracy(
    model: torch.nn.Module,
    dataset,
    route: Callable[[int], str],
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> float:
    """Share of rows of ``dataset`` whose best-scoring choice is the labelled one.

    Args:
        model: a multiple-choice model (``model(batch) -> scores (B, n_choices)``) with adapters.
        dataset: rows with a ``collate_fn`` producing dict batches with ``labels`` and
            ``task_labels`` (an experience's dataset).
        route: task label -> adapter set that answers it.
        autocast: the mixed-precision context training evaluates under (none on CPU).

    Returns:
        The accuracy, NaN for an empty dataset.
    """
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=dataset.collate_fn):
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            with autocast():
                scores = routed_forward(model, model, batch, batch["task_labels"], route)
            correct += int((scores.float().argmax(dim=-1) == batch["labels"]).sum())
            total += int(batch["labels"].numel())
    finally:
        model.train(was_training)
    return correct / total if total else float("nan")


@contextlib.contextmanager
def swapped_adapter(model: torch.nn.Module, name: str, tensors: dict[str, torch.Tensor]) -> Iterator[None]:
    """Adapter set ``name`` holds ``tensors`` inside the block and its own tensors again after."""
    own = {k: v.detach().clone() for k, v in adapter_state_dict(model, name).items()}
    load_adapter_state_dict(model, tensors, name)
    try:
        yield
    finally:
        load_adapter_state_dict(model, own, name)
