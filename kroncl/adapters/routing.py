"""Routing: score a batch with the adapter set each row's task label selects.

Used by training (the strategy's forward), evaluation and composed inference alike: the one
place that knows how a batch with several task labels is spread over resident adapter sets (in
one forward: :func:`row_adapters`), and how a batch with no task labels is answered
(:func:`confident_forward`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from kroncl.adapters.inject import _layers, set_active_adapter
from kroncl.adapters.mixed import RowSets, row_runs
from kroncl.errors import AdapterStateError


@contextlib.contextmanager
def row_adapters(adapted: nn.Module, names: Sequence[str], rows: torch.Tensor,
                 fused: bool | None = None) -> Iterator[None]:
    """Within the block, row ``n`` of every adapted layer's input (its leading dimension: one
    sequence) goes through set ``names[rows[n]]`` (-1: base only) instead of the active set, in
    one forward (``kroncl.adapters.mixed``): ``fused`` (two GEMMs over all sets' concatenated
    factors) or grouped (one factored update per set on its rows); None = fused on CUDA, where
    launches dominate, grouped on CPU, where FLOPs do (``python -m pipelines.bench mixed``).

    Raises:
        AdapterStateError: no adapter layers; a layer lacks one of ``names``, has a set merged
            (it would answer for every row) or stacks one of them (it would count twice).
    """
    layers = _layers(adapted)  # raises when nothing is injected
    for m in layers.values():
        for name in names:
            m._factors(name)
        if m.merged_adapter is not None:
            raise AdapterStateError(
                f"layer '{m.layer_name}' has adapter '{m.merged_adapter}' merged, which would answer for "
                "every row; call unmerge_adapters(model) before routing rows to their own sets"
            )
        if set(names) & set(m.stacked_adapters):
            raise AdapterStateError(
                f"layer '{m.layer_name}' stacks {sorted(set(names) & set(m.stacked_adapters))} for every row; "
                "route rows only to sets that are not stacked"
            )
    weight = next(iter(layers.values())).base_layer.weight
    if fused is None:
        fused = weight.is_cuda
    rows = rows.to(weight.device)  # once here, not in every layer's forward
    routed = RowSets(tuple(names), rows, fused, None if fused else row_runs(rows))
    try:
        for m in layers.values():
            m.row_sets = routed
        yield
    finally:
        for m in layers.values():
            m.row_sets = None


def sequence_rows(batch: dict[str, torch.Tensor], per_row: torch.Tensor) -> torch.Tensor:
    """Per-question values repeated for every sequence the model feeds its layers.

    Encoders and per-choice decoders flatten the real choices of a batch, in row-major order of
    ``choice_mask``, into the leading dimension (``kroncl.models.base`` contract); a packed
    decoder batch (``segment_ids``: ``model.shared_prompt``) and a batch without a
    ``choice_mask`` feed one sequence per question.
    """
    mask = batch.get("choice_mask")
    if mask is None or "segment_ids" in batch:
        return per_row
    return per_row[:, None].expand(mask.shape)[mask.to(per_row.device)]


def _take_rows(batch: dict[str, torch.Tensor], index: torch.Tensor, n_rows: int) -> dict[str, torch.Tensor]:
    """The rows ``index`` (positions or a bool mask) of every per-question tensor of ``batch``."""
    return {k: (v[index.to(v.device)] if torch.is_tensor(v) and v.shape[:1] == (n_rows,) else v)
            for k, v in batch.items()}


def routed_forward(
    model: Callable[[dict], torch.Tensor],
    adapted: nn.Module,
    batch: dict[str, torch.Tensor],
    task_ids: torch.Tensor,
    route: Callable[[int], str],
    *,
    mixed: bool = True,
    fused: bool | None = None,
) -> torch.Tensor:
    """Score ``batch`` with the adapter set each example's task label routes to.

    One forward whatever the tasks: each row through its own set (:func:`row_adapters`); with
    ``mixed=False``, one forward per distinct set instead (the resident sets are switched, never
    reloaded), the reference the mixed path is tested and benchmarked against. ``fused`` as in
    :func:`row_adapters`. Rows keep their order.
    """
    labels = task_ids.unique().tolist()
    set_of = {int(t): route(int(t)) for t in labels}
    names = list(dict.fromkeys(set_of.values()))
    if len(names) == 1:
        set_active_adapter(adapted, names[0])
        return model(batch)
    if mixed:
        lookup = torch.full((max(set_of) + 1,), -1, dtype=torch.long)
        for t, name in set_of.items():
            lookup[t] = names.index(name)
        per_row = lookup[task_ids.cpu()]
        # Questions sorted by set: each set's sequences are one contiguous run in every layer.
        order = torch.argsort(per_row, stable=True)
        sorted_batch = _take_rows(batch, order, task_ids.shape[0])
        with row_adapters(adapted, names, sequence_rows(sorted_batch, per_row[order]), fused):
            scores = model(sorted_batch)
        return scores[torch.argsort(order).to(scores.device)]
    out: torch.Tensor | None = None
    for label in labels:
        rows = task_ids == label
        sub = _take_rows(batch, rows, task_ids.shape[0])
        set_active_adapter(adapted, set_of[int(label)])
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


class TokenCentroidRouter:
    """Guesses each row's task from its tokens: the task whose training rows' token-presence
    centroid is nearest (cosine), among the tasks fitted so far.

    Model-free and cheap (one sparse scatter per batch): a row is the set of token ids of its
    question and choices (``input_ids`` under ``attention_mask``, hashed into ``buckets``), a task
    the mean of those sets over its training rows. Tasks whose text looks alike (ARC-Easy and
    ARC-Challenge) are confused with each other; tasks with their own format are not — see the
    README's routing table.
    """

    def __init__(self, buckets: int = 1 << 16) -> None:
        self.buckets = buckets
        self._sums: dict[int, torch.Tensor] = {}
        self._rows: dict[int, int] = {}
        self._centroids: torch.Tensor | None = None  # (T, buckets) normalised; reset by fit

    @property
    def labels(self) -> list[int]:
        return sorted(self._sums)

    def presence(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, buckets) 0/1: which (hashed) token ids each row contains."""
        ids = batch["input_ids"]
        ids = ids.reshape(ids.shape[0], -1)
        mask = batch["attention_mask"].reshape(ids.shape).bool()
        out = torch.zeros(ids.shape[0], self.buckets, device=ids.device)
        out.scatter_(1, (ids % self.buckets) * mask, mask.float())  # masked tokens hit bucket 0 with 0
        return out.clamp_(max=1.0)

    def fit(self, label: int, batches) -> None:
        """Add ``batches`` (dict batches of task ``label``'s training rows) to its centroid."""
        for batch in batches:
            rows = self.presence(batch).cpu()
            self._sums[label] = self._sums.get(label, torch.zeros(self.buckets)) + rows.sum(dim=0)
            self._rows[label] = self._rows.get(label, 0) + rows.shape[0]
        self._centroids = None

    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) long: the fitted task label nearest to each row (the first label on ties)."""
        if not self._sums:
            raise ValueError("TokenCentroidRouter.predict before any task was fitted")
        labels = self.labels
        if self._centroids is None:  # once per fit, not once per evaluated batch
            means = torch.stack([self._sums[t] / self._rows[t] for t in labels])  # (T, buckets)
            self._centroids = torch.nn.functional.normalize(means, dim=1)
        rows = self.presence(batch)
        sims = torch.nn.functional.normalize(rows, dim=1) @ self._centroids.to(rows.device).T  # (B, T)
        return torch.as_tensor(labels, device=rows.device)[sims.argmax(dim=1)]
