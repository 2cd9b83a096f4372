"""Routing: score a batch with the adapter set each row's task label selects.

Used by training (the strategy's forward), evaluation and composed inference alike: the one
place that knows how a batch with several task labels is split over resident adapter sets, and
how a batch with no task labels is answered (:func:`confident_forward`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


def confident_forward(
    model: Callable[[dict], torch.Tensor],
    adapted: nn.Module,
    batch: dict[str, torch.Tensor],
    candidates: Sequence[str],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score ``batch`` without task labels: every row takes the answer of the candidate set that
    is most confident about it (lowest entropy of its softmax over the row's choices).

    One whole-batch forward per candidate. Padded choices (score -1e9) get probability 0 and
    add nothing to the entropy. Ties go to the earlier candidate.

    Returns:
        (scores (B, C) of the chosen sets, chosen (B,) index into ``candidates``).
    """
    if not candidates:
        raise ValueError("confident_forward needs at least one candidate adapter set")
    per_set = []
    for name in candidates:
        set_active_adapter(adapted, name)
        per_set.append(model(batch))
    stacked = torch.stack(per_set)  # (K, B, C)
    entropy = torch.special.entr(stacked.float().softmax(dim=-1)).sum(dim=-1)  # (K, B)
    chosen = entropy.argmin(dim=0)
    rows = torch.arange(stacked.shape[1], device=stacked.device)
    return stacked[chosen, rows], chosen
