"""Task arithmetic: ``ΔW = Σ_i w_i ΔW_i`` per layer, stored exactly as one LoRA adapter.

A sum of Kronecker products is not one Kronecker product of the same shape, so
:func:`weighted_sum` stores the result as a plain LoRA adapter whose rank is the
concatenation of the sources' factors (see :func:`kron_as_lora`)::

    ΔW_i = s_i · A_i ⊗ (B1_i B2_i) = s_i · (A_i ⊗ B1_i)(I ⊗ B2_i)      (a_in <= a_out)
    Σ_i w_i ΔW_i = [w_1 s_1 U_1 | w_2 s_2 U_2 | ...] · [D_1; D_2; ...] = B · A

with ``alpha = r`` (scale 1). ``method="lora"`` is what ``inject_adapters`` and
``load_adapter`` already understand, so the result round-trips through adapter files and the
registry and composes back like any other adapter. Its rank is ``Σ_i min(a_out, a_in)·r_i``
(``r_i`` for LoRA sources): 32 for two MiniLM Kron-LoRA adapters with 2×2 factors and r=8,
~6x smaller than a dense ΔW of a 384×384 layer. Dense head deltas (``DenseDeltaLinear``)
are summed directly.

Pure functions of tensors: nothing here touches a model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from kroncl.adapters import AdapterConfig, LoadedAdapter
# kron_as_lora lives beside the other Kron math (PEFT LoRA export uses it too); re-exported here.
from kroncl.adapters.math import kron_as_lora
from kroncl.composition.compatible import ComposeError, check_compatible, is_head, layer_tensors

__all__ = ["kron_as_lora", "lowrank_terms", "weighted_sum"]


def lowrank_terms(adapter: LoadedAdapter) -> dict[str, tuple[Tensor, Tensor]]:
    """Each adapted layer's update as scaled low-rank factors ``(up, down)``, ΔW = up @ down.

    Head layers (dense ΔW and Δbias) are returned as ``(weight, bias)`` under their path too;
    tell them apart with :func:`layer_tensors` (``{"weight", "bias"}``).

    Raises:
        ComposeError: a layer's tensors match neither Kron-LoRA, LoRA nor a dense head.
    """
    cfg = adapter.config
    scale = cfg.alpha / cfg.r
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for path, t in layer_tensors(adapter.tensors).items():
        keys = set(t)
        if keys == {"weight", "bias"}:
            out[path] = (t["weight"], t["bias"])
        elif keys == {"A", "B1", "B2"}:
            up, down = kron_as_lora(t["A"], t["B1"], t["B2"])
            out[path] = (up * scale, down)
        elif keys == {"A", "B"}:
            out[path] = (t["B"] * scale, t["A"])
        else:
            raise ComposeError(
                f"layer {path!r} has adapter tensors {sorted(keys)}: expected Kron-LoRA (A, B1, B2), "
                "LoRA (A, B) or a dense head (weight, bias)"
            )
    return out


def weighted_sum(
    adapters: Sequence[LoadedAdapter], weights: Sequence[float]
) -> tuple[dict[str, Tensor], AdapterConfig]:
    """Task arithmetic: one adapter whose update is ``Σ_i weights[i] · ΔW_i`` on every layer.

    Exact up to float rounding (see the module docstring): low-rank layers become a LoRA
    update of rank ``Σ_i k_i`` by concatenating the sources' factors, dense head deltas and
    biases are summed.

    Args:
        adapters: at least one adapter on the same base model, adapting the same layers.
        weights: one finite weight per adapter (``(1, 0)`` reproduces the first adapter).

    Returns:
        ``(tensors, config)`` ready for :func:`kroncl.adapters.save_adapter`: a ``"lora"``
        adapter with ``alpha == r`` (scale 1) and the first adapter's targets.

    Raises:
        ComposeError: weights do not match the adapters, are not finite, or the adapters do
            not fit together (:func:`check_compatible` with ``resident=False``).
    """
    weights = [float(w) for w in weights]
    if len(weights) != len(adapters):
        raise ComposeError(
            f"got {len(weights)} weights {weights} for {len(adapters)} adapters; give one weight per adapter"
        )
    if not all(torch.isfinite(torch.tensor(w)) for w in weights):
        raise ComposeError(f"weights {weights} must all be finite numbers")
    check_compatible({f"adapter {i}": a for i, a in enumerate(adapters)}, resident=False)
    terms = [lowrank_terms(a) for a in adapters]
    heads = {p for p, t in layer_tensors(adapters[0].tensors).items() if is_head(t)}
    tensors: dict[str, Tensor] = {}
    rank: int | None = None
    for path in terms[0]:
        if path in heads:
            tensors[f"{path}.weight"] = sum(w * t[path][0] for w, t in zip(weights, terms))  # (d_out, d_in)
            tensors[f"{path}.bias"] = sum(w * t[path][1] for w, t in zip(weights, terms))  # (d_out,)
            continue
        up = torch.cat([w * t[path][0] for w, t in zip(weights, terms)], dim=1)  # (d_out, R)
        down = torch.cat([t[path][1] for t in terms], dim=0)  # (R, d_in)
        assert rank is None or rank == up.shape[1], "per-adapter inner dims are uniform across layers"
        rank = up.shape[1]
        tensors[f"{path}.B"] = up.contiguous()
        tensors[f"{path}.A"] = down.contiguous()
    if rank is None:
        raise ComposeError("the adapters hold only head deltas; task arithmetic needs adapted body layers")
    first = adapters[0].config
    cfg = AdapterConfig(method="lora", a_out=1, a_in=1, r=rank, alpha=float(rank), dropout=0.0,
                        targets=list(first.targets), head_targets=list(first.head_targets)).validate()
    return tensors, cfg
