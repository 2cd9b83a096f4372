"""Mixed-set products: every row of a batch through its own adapter set, in one pass.

A batch whose rows belong to different tasks would otherwise need one whole-model forward per
task (split the rows, switch the active set, score, scatter back). Here each adapted layer
instead runs its base GEMM once for the whole batch and adds every row's own update with two
more GEMMs, whatever the number of sets:

The sets' rank factors are concatenated along the rank axis (R = Σ r_k columns). The first
product computes every set's rank projection for every row (cheap: R is a few dozen); a 0/1
mask keeps, per row, only the columns of the row's own set; the second product with the
concatenated up-projections then adds exactly that set's update. Masked columns are exact
zeros, so the result equals the per-set product up to float summation order (tested ≤ 1e-5
against the split path). This is the block-diagonal form of S-LoRA/Punica's gathered LoRA, and
it works for Kron-LoRA because A ⊗ (B1 B2) = (A ⊗ B1)(I ⊗ B2) is a LoRA of rank a_in·r.

Cost: K sets cost K× one set's *adapter* FLOPs (2·R·d per token against the base's d²), not K
forwards. That wins where launches and small GEMMs dominate (GPU, large d, few dozen R) and
loses on a CPU, which is compute-bound: with MiniLM (d = 384) and 8 sets the fused update costs
half the base GEMM. So there is a second, *grouped* form (:func:`grouped_apply`): the base GEMM
once for the whole batch, then per set present its own factored update on its (contiguous)
rows: 1× the adapter FLOPs, K small launches. ``routing.row_adapters`` picks fused
on CUDA and grouped elsewhere; ``python -m pipelines.bench mixed`` measures both.

Row ``n`` of ``x`` (its leading dimension: one sequence, all its tokens) uses set
``row_set[n]``; ``-1`` means no set (the base output alone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from kroncl.errors import AdapterStateError

__all__ = ["RowSets", "row_runs", "kron_apply_mixed", "lora_apply_mixed", "dense_apply_mixed", "grouped_apply",
           "check_rows"]


class RowSets(NamedTuple):
    """Per-row routing of one forward, set on every adapted layer by ``routing.row_adapters``."""

    names: tuple[str, ...]
    rows: Tensor
    """(N,) long: each leading input row's index into ``names``; -1 = base only."""
    fused: bool
    runs: tuple[tuple[int, int], ...] | None = None
    """Grouped form: (set index, row count) per run of equal consecutive ``rows``. The same for
    every layer of the forward, so computed once (:func:`row_runs`: a host sync on a GPU), not per layer."""


def row_runs(row_set: Tensor) -> tuple[tuple[int, int], ...]:
    """(set index, count) per run of equal consecutive entries of ``row_set``."""
    sets, counts = torch.unique_consecutive(row_set, return_counts=True)
    return tuple(zip(sets.tolist(), counts.tolist()))


def check_rows(layer_name: str, x: Tensor, row_set: Tensor) -> None:
    """Raise unless ``x`` has one leading row per routed row."""
    if x.shape[0] != row_set.shape[0]:
        raise AdapterStateError(
            f"layer '{layer_name}' got {x.shape[0]} input rows but per-row routing for "
            f"{row_set.shape[0]}; route one set index per sequence the model feeds its layers"
        )


def grouped_apply(delta_forward: Callable[[Tensor, object, Tensor], Tensor], x: Tensor,
                  factors: Sequence[object], row_set: Tensor, out: Tensor,
                  runs: Sequence[tuple[int, int]] | None = None) -> Tensor:
    """``delta_forward(x[s:e], factors[k], out[s:e])`` per run of consecutive rows of one set
    ``k``, concatenated: rows sorted by set (``routing.routed_forward`` sorts them) make one
    run per set, views with no gather, and one copy of ``out`` in all. ``runs``: ``row_runs(row_set)``
    when the caller has it already."""
    pieces, start = [], 0
    for k, n in runs if runs is not None else row_runs(row_set):
        rows = slice(start, start + n)
        pieces.append(out[rows] if k < 0 else delta_forward(x[rows], factors[k], out[rows]))
        start += n
    return torch.cat(pieces)


def _rank_mask(row_set: Tensor, ranks: Sequence[int], dtype: torch.dtype) -> Tensor:
    """(N, R) 0/1: column j of the concatenated ranks belongs to row n's set."""
    col_set = torch.repeat_interleave(torch.arange(len(ranks), device=row_set.device),
                                      torch.as_tensor(ranks, device=row_set.device))  # (R,)
    return (row_set[:, None] == col_set[None, :]).to(dtype)


def kron_apply_mixed(x: Tensor, factors: Sequence[tuple[Tensor, Tensor, Tensor, float]],
                     row_set: Tensor, out: Tensor) -> Tensor:
    """``out + x_n @ ΔW_{row_set[n]}ᵀ`` for Kron-LoRA sets ``factors`` = [(A, B1, B2, scale)].

    The sets share A's shape (a per-layer property) and may have different ranks.

    Args:
        x: (N, ..., d_in), d_in = a_in·b_in.
        factors: per set A (a_out, a_in), B1 (b_out, r_k), B2 (r_k, b_in), scale.
        row_set: (N,) long, index into ``factors`` or -1.
        out: (N, ..., d_out), the base output (not modified).
    """
    a_in, b_in = factors[0][0].shape[1], factors[0][2].shape[1]
    ranks = [f[2].shape[0] for f in factors]
    big_r = sum(ranks)
    b2 = torch.cat([f[2] for f in factors])  # (R, b_in)
    # Up-projection of each set: (A ⊗ B1)·scale, (d_out, a_in·r_k) with column j·r_k + ρ; laid
    # out as (d_out, a_in, R) so that it lines up with z below without permuting z.
    up = torch.cat([(torch.kron(A, B1) * s).view(-1, a_in, B1.shape[1]) for A, B1, _, s in factors], dim=2)
    d_out = up.shape[0]
    n_rows = x.shape[0]
    n = x.numel() // (a_in * b_in)  # tokens
    z = torch.mm(x.reshape(n * a_in, b_in), b2.t()).view(n_rows, -1, a_in, big_r)  # (N, T, a_in, R)
    z = z * _rank_mask(row_set, ranks, z.dtype)[:, None, None, :]
    y = torch.addmm(out.reshape(n, d_out), z.view(n, a_in * big_r), up.reshape(d_out, a_in * big_r).t())
    return y.view(out.shape)


def lora_apply_mixed(x: Tensor, factors: Sequence[tuple[Tensor, Tensor, float]],
                     row_set: Tensor, out: Tensor) -> Tensor:
    """``out + x_n @ ΔW_{row_set[n]}ᵀ`` for LoRA sets ``factors`` = [(A (r_k, d_in), B (d_out, r_k), scale)];
    shapes as in :func:`kron_apply_mixed`."""
    ranks = [f[0].shape[0] for f in factors]
    down = torch.cat([A for A, _, _ in factors])  # (R, d_in)
    up = torch.cat([B * s for _, B, s in factors], dim=1)  # (d_out, R)
    d_out, n_rows = up.shape[0], x.shape[0]
    x2 = x.reshape(-1, x.shape[-1])  # (n, d_in)
    z = torch.mm(x2, down.t()).view(n_rows, -1, len(down))  # (N, T, R)
    z = z * _rank_mask(row_set, ranks, z.dtype)[:, None, :]
    y = torch.addmm(out.reshape(-1, d_out), z.view(x2.shape[0], -1), up.t())
    return y.view(out.shape)


def dense_apply_mixed(x: Tensor, factors: Sequence[tuple[Tensor, Tensor]], row_set: Tensor, out: Tensor) -> Tensor:
    """``out + x_n @ ΔW_kᵀ + Δb_k`` (k = row_set[n]) for dense sets [(ΔW (d_out, d_in), Δb (d_out))]:
    small heads, where computing every set's output for every row is cheaper than gathering."""
    k, n_rows = len(factors), x.shape[0]
    weight = torch.cat([w for w, _ in factors])  # (K·d_out, d_in)
    bias = torch.cat([b for _, b in factors])  # (K·d_out,)
    d_out = weight.shape[0] // k
    x2 = x.reshape(-1, x.shape[-1])
    y = torch.addmm(bias, x2, weight.t()).view(n_rows, -1, k, d_out)  # (N, T, K, d_out)
    pick = (row_set[:, None] == torch.arange(k, device=row_set.device)).to(y.dtype)  # (N, K)
    y = (y * pick[:, None, :, None]).sum(dim=2)  # (N, T, d_out)
    return out + y.view(out.shape)
