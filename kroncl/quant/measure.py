"""Quantization error of an adapter, measured on ΔW from its tensors (no model involved).

Each layer's dense update ΔW is rebuilt from the full-precision factors and from the
dequantized ones with the adapter math (``kroncl.adapters.math``: ``kron_delta`` for Kron-LoRA
layers, ``lora_delta`` for LoRA layers, the stored weight for a dense head delta), exactly as
the adapter layers' ``delta_weight()`` computes it, and the pairs go to `delta_error_report`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from kroncl.adapters.config import AdapterConfig
from kroncl.adapters.math import kron_delta, lora_delta
from kroncl.quant.delta_error import QuantErrorReport, delta_error_report
from kroncl.quant.tensors import dequantize_tensors

__all__ = ["layer_deltas", "quantization_error"]

_LAYOUTS = {
    frozenset({"A", "B1", "B2"}): "kron",
    frozenset({"A", "B"}): "lora",
    frozenset({"weight", "bias"}): "dense",
    frozenset({"weight"}): "dense",
}


def layer_deltas(tensors: Mapping[str, torch.Tensor], cfg: AdapterConfig | None = None) -> dict[str, torch.Tensor]:
    """Dense float32 ΔW per layer of an adapter state dict ("<module path>.<param>" keys).

    Args:
        tensors: e.g. ``adapter_state_dict(model, name)`` or dequantized tensors.
        cfg: the adapter's config: gives the scale alpha / r of the factored layers and the
            method they must follow. Without it the scale is 1, which leaves every relative
            error unchanged.

    Raises:
        ValueError: a layer's tensors are not a Kron-LoRA (A, B1, B2), LoRA (A, B) or dense
            (weight[, bias]) set, or a factored layer does not follow ``cfg.method``.
    """
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        layer, _, local = key.rpartition(".")
        groups.setdefault(layer, {})[local] = t
    scale = cfg.alpha / cfg.r if cfg is not None else 1.0
    out: dict[str, torch.Tensor] = {}
    for layer, f in groups.items():
        kind = _LAYOUTS.get(frozenset(f))
        if kind is None:
            raise ValueError(f"Layer {layer!r}: tensors {sorted(f)} are not a Kron-LoRA, LoRA or dense-delta set.")
        if kind != "dense" and cfg is not None and kind != cfg.method:
            raise ValueError(f"Layer {layer!r}: {kind} factors {sorted(f)} but the config says method={cfg.method!r}.")
        f = {k: v.float() for k, v in f.items()}
        if kind == "kron":
            out[layer] = kron_delta(f["A"], f["B1"], f["B2"], scale)
        elif kind == "lora":
            out[layer] = lora_delta(f["A"], f["B"], scale)
        else:
            out[layer] = f["weight"]
    return out


@torch.no_grad()
def quantization_error(
    tensors: Mapping[str, torch.Tensor],
    packed: Mapping[str, torch.Tensor],
    meta: dict,
    cfg: AdapterConfig | None = None,
) -> QuantErrorReport:
    """‖ΔW − ΔŴ‖/‖ΔW‖ per adapted layer: ``tensors`` (full precision) vs. ``packed`` dequantized.

    Args:
        tensors: the full-precision adapter state dict.
        packed, meta: ``quantize_tensors(tensors, scheme)`` output.
        cfg: the adapter config (scale and method; see `layer_deltas`).

    Returns:
        The report; ``report.summary()`` gives ``quant_rel_err_{mean,max,weighted,global}``.

    Raises:
        QuantFormatError: ``packed`` does not match ``meta``.
        ValueError: see `layer_deltas`; the dequantized tensors miss a layer or differ in shape.
    """
    dequantized = dequantize_tensors(dict(packed), meta, dtype=torch.float32)
    ref, hat = layer_deltas(tensors, cfg), layer_deltas(dequantized, cfg)
    if set(ref) != set(hat):
        raise ValueError(f"Quantized tensors cover layers {sorted(hat)}, the adapter has {sorted(ref)}.")
    return delta_error_report({layer: (ref[layer], hat[layer]) for layer in ref})
