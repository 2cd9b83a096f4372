"""Scoring a multiple-choice model: the one place that turns scores into predictions and accuracy.

- :func:`predictions` — ``(predictions, labels)`` of dict batches under any forward function;
  composition (:mod:`kroncl.composition.score`) and :func:`evaluate_accuracy` use it;
- :func:`count_correct` — the per-batch count the strategy's accuracy collector (inside
  avalanche's eval loop, so avalanche's own metrics see the same batches) adds up;
- :func:`evaluate_accuracy` — plain inference over a dataset: no Avalanche template, no plugins,
  no metric loggers and no RNG, so it can score a variant of the model (e.g. a quantized adapter
  swapped in for a moment) without leaving a trace in the run's metrics or changing its results.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch.utils.data import DataLoader

from kroncl.adapters import adapter_state_dict, load_adapter_state_dict
from kroncl.adapters.routing import routed_forward


def batch_to_device(batch: dict, device: torch.device | str, non_blocking: bool = False) -> dict:
    """``batch`` with its tensors on ``device`` (other values, e.g. ids, as they are);
    ``non_blocking`` lets a copy from pinned memory overlap the GPU's work."""
    return {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v for k, v in batch.items()}


def count_correct(scores: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """(rows whose best-scoring choice is the labelled one, rows) of one batch; scores (B, C)."""
    return int((scores.float().argmax(dim=-1) == labels).sum()), int(labels.numel())


def accuracy_of(preds: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``preds`` equal to ``labels`` (NaN for no rows)."""
    return float("nan") if labels.numel() == 0 else (preds == labels).float().mean().item()


@torch.no_grad()
def predictions(
    forward: Callable[[dict], torch.Tensor], batches: Iterable[dict],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(predictions, labels)``, both (N,) long, of ``batches`` scored by ``forward``."""
    preds, labels = [], []
    for batch in batches:
        preds.append(forward(batch).float().argmax(dim=-1))
        labels.append(batch["labels"])
    if not preds:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(preds), torch.cat(labels)


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
    def forward(batch: dict) -> torch.Tensor:
        with autocast():
            return routed_forward(model, model, batch, batch["task_labels"], route)

    def batches() -> Iterator[dict]:
        # A generator of its own: a DataLoader draws its base seed from the global RNG otherwise,
        # and scoring between epochs (model selection) would change the next epoch's shuffle.
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=dataset.collate_fn,
                            generator=torch.Generator())
        for batch in loader:
            yield batch_to_device(batch, device)

    was_training = model.training
    model.eval()
    try:
        preds, labels = predictions(forward, batches())
    finally:
        model.train(was_training)
    return accuracy_of(preds, labels.to(preds.device))


@contextlib.contextmanager
def swapped_adapter(model: torch.nn.Module, name: str, tensors: dict[str, torch.Tensor]) -> Iterator[None]:
    """Adapter set ``name`` holds ``tensors`` inside the block and its own tensors again after."""
    own = {k: v.detach().clone() for k, v in adapter_state_dict(model, name).items()}
    load_adapter_state_dict(model, tensors, name)
    try:
        yield
    finally:
        load_adapter_state_dict(model, own, name)
