"""Routing: score a batch with the adapter set each row's task label selects.

Used by training (the strategy's forward), evaluation and composed inference alike: the one
place that knows how a batch with several task labels is split over resident adapter sets.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from kroncl.adapters.inject import set_active_adapter


def routed_forward(
    model: Callable[[dict], torch.Tensor],
    adapted: nn.Module,
    batch: dict[str, torch.Tensor],
    task_ids: torch.Tensor,
    route: Callable[[int], str],
) -> torch.Tensor:
    """Score ``batch`` with the adapter set each example's task label routes to.

    One forward per distinct task in the batch (usually one); the resident sets are switched,
    never reloaded. Rows keep their order.
    """
    labels = task_ids.unique().tolist()
    if len(labels) == 1:
        set_active_adapter(adapted, route(int(labels[0])))
        return model(batch)
    out: torch.Tensor | None = None
    for label in labels:
        rows = task_ids == label
        sub = {k: (v[rows] if torch.is_tensor(v) and v.shape[:1] == rows.shape else v)
               for k, v in batch.items()}
        set_active_adapter(adapted, route(int(label)))
        scores = model(sub)
        if out is None:
            out = scores.new_empty((task_ids.shape[0], *scores.shape[1:]))
        out[rows] = scores
    assert out is not None
    return out
