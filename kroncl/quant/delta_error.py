"""How much quantization changes an adapter's weight updates ΔW.

Callers compute ΔW with the adapter layers' ``delta_weight()`` before and after quantization
and pass the pairs here; this module knows nothing about adapter layers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch


def _sq_norms(delta: torch.Tensor, delta_hat: torch.Tensor) -> tuple[float, float]:
    """(‖ΔW‖², ‖ΔW − ΔŴ‖²) in float64."""
    if tuple(delta.shape) != tuple(delta_hat.shape):
        raise ValueError(
            f"ΔW and its quantized version differ in shape: {tuple(delta.shape)} vs "
            f"{tuple(delta_hat.shape)}."
        )
    d = delta.detach().to(device="cpu", dtype=torch.float64)
    dh = delta_hat.detach().to(device="cpu", dtype=torch.float64)
    return float(d.square().sum()), float((d - dh).square().sum())


def _ratio(err_sq: float, ref_sq: float) -> float:
    # ‖ΔW‖ = 0 (e.g. an untrained zero-init factor): exact reconstruction is error 0, anything
    # else is infinitely wrong relative to nothing.
    if ref_sq == 0.0:
        return 0.0 if err_sq == 0.0 else math.inf
    return math.sqrt(err_sq / ref_sq)


def relative_error(delta: torch.Tensor, delta_hat: torch.Tensor) -> float:
    """Relative Frobenius error ‖ΔW − ΔŴ‖ / ‖ΔW‖, computed in float64.

    Args:
        delta: the full-precision update.
        delta_hat: the update rebuilt from quantized factors (same shape).

    Returns:
        The ratio; 0.0 when both are zero, ``inf`` when ‖ΔW‖ = 0 but ΔŴ ≠ 0.

    Raises:
        ValueError: the shapes differ.
    """
    ref_sq, err_sq = _sq_norms(delta, delta_hat)
    return _ratio(err_sq, ref_sq)


@dataclass(frozen=True)
class QuantErrorReport:
    """Per-layer and summary relative errors of quantized adapter updates.

    Attributes:
        per_layer: layer name -> ‖ΔW − ΔŴ‖ / ‖ΔW‖.
        mean: unweighted mean of ``per_layer``.
        max: largest per-layer error.
        max_layer: the layer with the largest error.
        weighted: ‖·‖-weighted mean, Σ‖ΔW_l‖·e_l / Σ‖ΔW_l‖ = Σ‖ΔW_l − ΔŴ_l‖ / Σ‖ΔW_l‖;
            layers with a small update count less.
        global_frobenius: relative error of all layers' updates viewed as one vector,
            sqrt(Σ‖ΔW_l − ΔŴ_l‖²) / sqrt(Σ‖ΔW_l‖²).
    """

    per_layer: dict[str, float] = field(default_factory=dict)
    mean: float = 0.0
    max: float = 0.0
    max_layer: str = ""
    weighted: float = 0.0
    global_frobenius: float = 0.0

    def summary(self) -> dict[str, float]:
        """Flat metric dict (e.g. for MLflow): ``quant_rel_err_{mean,max,weighted,global}``."""
        return {
            "quant_rel_err_mean": self.mean,
            "quant_rel_err_max": self.max,
            "quant_rel_err_weighted": self.weighted,
            "quant_rel_err_global": self.global_frobenius,
        }


def delta_error_report(
    layer_deltas: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
) -> QuantErrorReport:
    """Summarise quantization error over layers.

    Args:
        layer_deltas: layer name -> (ΔW full precision, ΔŴ from quantized factors).

    Returns:
        A `QuantErrorReport`.

    Raises:
        ValueError: no layers given, or a pair differs in shape (the message names the layer).
    """
    if not layer_deltas:
        raise ValueError("delta_error_report needs at least one (ΔW, ΔŴ) pair, got none.")
    per_layer: dict[str, float] = {}
    ref_norms: dict[str, float] = {}
    err_norms: dict[str, float] = {}
    for name, (delta, delta_hat) in layer_deltas.items():
        try:
            ref_sq, err_sq = _sq_norms(delta, delta_hat)
        except ValueError as err:
            raise ValueError(f"Layer {name!r}: {err}") from err
        per_layer[name] = _ratio(err_sq, ref_sq)
        ref_norms[name], err_norms[name] = math.sqrt(ref_sq), math.sqrt(err_sq)
    max_layer = max(per_layer, key=per_layer.__getitem__)
    return QuantErrorReport(
        per_layer=per_layer,
        mean=sum(per_layer.values()) / len(per_layer),
        max=per_layer[max_layer],
        max_layer=max_layer,
        weighted=_ratio(sum(err_norms.values()) ** 2, sum(ref_norms.values()) ** 2),
        global_frobenius=_ratio(
            sum(e * e for e in err_norms.values()), sum(r * r for r in ref_norms.values())
        ),
    )
