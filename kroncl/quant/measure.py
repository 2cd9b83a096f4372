"""Quantization error of a *resident* adapter set, measured on ΔW through the adapter layers.

Kept apart from the pure quantizers (which know nothing of adapter layers): this module loads
the dequantized tensors into a temporary adapter set beside the original, compares each layer's
``delta_weight()`` (the one primitive under merge and export), and removes the probe again.
"""

from __future__ import annotations

import torch
from torch import nn

from kroncl.adapters import (
    adapter_layers,
    add_adapter,
    delete_adapter,
    load_adapter_state_dict,
)
from kroncl.quant.delta_error import QuantErrorReport, delta_error_report
from kroncl.quant.tensors import dequantize_tensors

PROBE = "__quant_probe__"


@torch.no_grad()
def quantization_error(model: nn.Module, name: str, packed: dict[str, torch.Tensor], meta: dict) -> QuantErrorReport:
    """‖ΔW − ΔŴ‖/‖ΔW‖ per adapted layer of set ``name`` for its quantized tensors ``packed``.

    The model is left exactly as it was (the probe set is deleted, even on error).
    """
    dequantized = dequantize_tensors(packed, meta, dtype=torch.float32)
    add_adapter(model, PROBE)
    try:
        load_adapter_state_dict(model, dequantized, PROBE)
        pairs = {
            path: (layer.delta_weight(name).float(), layer.delta_weight(PROBE).float())
            for path, layer in adapter_layers(model).items()
        }
    finally:
        delete_adapter(model, PROBE)
    return delta_error_report(pairs)
