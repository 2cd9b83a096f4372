"""Export any adapter set to a standard PEFT LoRA folder: the format vLLM and other servers load.

A Kron-LoRA update is exactly a LoRA update of rank ``k = min(a_out, a_in)·r``
(:func:`~kroncl.adapters.math.kron_as_lora`; for the default a = 2×2, r = 8 that is 16)::

    ΔW = s · A ⊗ (B1 B2) = s · (A ⊗ B1)(I ⊗ B2)          (a_in <= a_out)
         = (lora_alpha / k) · lora_B @ lora_A           with lora_B = A ⊗ B1, lora_A = I ⊗ B2,
                                                         lora_alpha = s · k

so the export needs no SVD and loses nothing. Mapping per adapted layer at module path P
(peft 0.21, ``peft/tuners/lora/layer.py``; file keys as ``save_pretrained`` writes them)::

    base_model.model.P.lora_A.weight   (k, d_in)
    base_model.model.P.lora_B.weight   (d_out, k)
    scaling = lora_alpha / r   (use_rslora=False; rslora would use lora_alpha / sqrt(r))

LoRA sets map one to one (lora_A = A, lora_B = B, r and alpha unchanged). Layers whose rank or
alpha differ from the most common one get ``rank_pattern`` / ``alpha_pattern`` entries keyed by
their full path (PEFT matches keys as ``(.*\\.)?key$``). Dense heads (``DenseDeltaLinear``)
become ``modules_to_save`` exactly as in the LoKr export (:func:`peft_head_tensors`).

``max_rank`` makes the export lossy on purpose, for servers that cap the LoRA rank: every
layer above the cap is replaced by its best rank-``max_rank`` approximation
(:func:`~kroncl.adapters.math.lowrank_truncate`), and the relative Frobenius error of each ΔW
is reported.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from kroncl.adapters.inject import adapter_layers
from kroncl.adapters.layers import AdapterLinear, DenseDeltaLinear, KronLoRALinear, LoRALinear
from kroncl.adapters.math import kron_as_lora, lowrank_truncate
from kroncl.adapters.peft_interop import _PREFIX, check_export_dir, peft_head_tensors, write_peft_folder
from kroncl.errors import AdapterConfigError, AdapterStateError

__all__ = ["LoRAExport", "lora_terms", "check_set_exists", "export_peft_lora"]


@dataclass
class LoRAExport:
    """What :func:`export_peft_lora` wrote.

    Attributes:
        path: the folder.
        ranks: module path -> LoRA rank written for that layer.
        errors: module path -> relative Frobenius error ``‖ΔW - ΔW'‖_F / ‖ΔW‖_F`` of the written
            update (0.0 for every layer unless ``max_rank`` truncated it).
        heads: module paths written as ``modules_to_save``.
    """

    path: Path
    ranks: dict[str, int]
    errors: dict[str, float] = field(default_factory=dict)
    heads: list[str] = field(default_factory=list)

    @property
    def max_rank(self) -> int:
        """The largest rank in the folder: what a server's ``max_lora_rank`` must be at least."""
        return max(self.ranks.values())

    @property
    def max_error(self) -> float:
        return max(self.errors.values(), default=0.0)

    @property
    def mean_error(self) -> float:
        return sum(self.errors.values()) / len(self.errors) if self.errors else 0.0


def check_set_exists(model: nn.Module, name: str) -> None:
    """Refuse an adapter set name that not every adapter layer of ``model`` holds.

    Raises:
        AdapterStateError: the model has no adapter layers, or ``name`` is missing from some;
            the message lists the sets that exist.
    """
    layers = adapter_layers(model)
    if not layers:
        raise AdapterStateError(f"{type(model).__name__} has no adapter layers to export; inject or load an adapter first")
    missing = [p for p, m in layers.items() if name not in m.adapters]
    if missing:
        have = sorted(set.intersection(*(set(m.adapters) for m in layers.values())))
        raise AdapterStateError(
            f"no adapter set {name!r} in {len(missing)} of {len(layers)} adapter layers (e.g. '{missing[0]}'); "
            f"the model's sets are {have}: export one of those"
        )


def lora_terms(layer: AdapterLinear, name: str) -> tuple[Tensor, Tensor, float]:
    """Set ``name`` of one body layer as LoRA ``(lora_B, lora_A, scale)``: ΔW = scale · lora_B @ lora_A.

    Kron-LoRA factors go through :func:`kron_as_lora` (rank ``min(a_out, a_in)·r``); LoRA factors
    are returned as they are. The factors are not scaled, so the file keeps the trained values.

    Raises:
        AdapterConfigError: ``layer`` is neither Kron-LoRA nor LoRA (heads go to ``modules_to_save``).
    """
    f = layer._factors(name)
    if isinstance(layer, KronLoRALinear):
        up, down = kron_as_lora(f.A.detach(), f.B1.detach(), f.B2.detach())  # (d_out, k), (k, d_in)
        return up, down, f.scale
    if isinstance(layer, LoRALinear):
        return f.B.detach(), f.A.detach(), f.scale
    raise AdapterConfigError(
        f"layer '{layer.layer_name}' is a {type(layer).__name__}; only Kron-LoRA and LoRA layers map to PEFT LoRA"
    )


def _target_modules(model: nn.Module, paths: list[str]) -> list[str]:
    """Short module names (``["q_proj", "v_proj"]``) when they pick exactly ``paths``, else the paths.

    Short names are what PEFT and vLLM configs usually carry; full paths are exact for a model
    where only some layers of a kind were adapted (PEFT matches a name as a path suffix).
    """
    leaves = {p.rpartition(".")[2] for p in paths}
    picked = {n for n, _ in model.named_modules() if n and n.rpartition(".")[2] in leaves}
    return sorted(leaves) if picked == set(paths) else list(paths)


def _most_common(values: dict[str, float]) -> float:
    # Ties go to the first layer's value, so the same model always writes the same config.
    counts = Counter(values.values())
    return max(values.values(), key=lambda v: (counts[v], -list(values.values()).index(v)))


def export_peft_lora(
    model: nn.Module,
    name: str,
    out_dir: str | os.PathLike,
    base_model_name_or_path: str | None = None,
    max_rank: int | None = None,
) -> LoRAExport:
    """Write adapter set ``name`` of ``model`` as a standard PEFT LoRA folder.

    ``PeftModel.from_pretrained(base, out_dir)`` on the same base model then reproduces this
    model's outputs with set ``name`` active; without ``max_rank`` the export is exact.

    Args:
        model: model with Kron-LoRA and/or LoRA layers (and optional ``DenseDeltaLinear`` heads).
        name: adapter set to export.
        out_dir: a new or empty folder for ``adapter_model.safetensors`` + ``adapter_config.json``.
        base_model_name_or_path: written to the PEFT config (PEFT and vLLM read it when no base
            is given).
        max_rank: cap on the LoRA rank; layers above it are truncated by SVD (lossy, reported
            in ``errors``). None: exact.

    Returns:
        :class:`LoRAExport` with the folder, each layer's rank and error, and the heads.

    Raises:
        AdapterStateError: set ``name`` does not exist (the message lists the sets that do).
        AdapterConfigError: ``out_dir`` is not empty, ``max_rank < 1``, the model has no body
            layers, or a head's Δbias has no base bias to go to.
    """
    from peft import LoraConfig  # lazy: peft is heavy and only needed for interop

    out = check_export_dir(out_dir)
    if max_rank is not None and max_rank < 1:
        raise AdapterConfigError(f"max_rank={max_rank} must be a positive LoRA rank (or None for an exact export)")
    check_set_exists(model, name)
    layers = adapter_layers(model)
    heads = {p: m for p, m in layers.items() if isinstance(m, DenseDeltaLinear)}
    body = {p: m for p, m in layers.items() if p not in heads}
    if not body:
        raise AdapterConfigError(f"set {name!r} adapts only heads {sorted(heads)}; PEFT LoRA needs adapted body layers")

    tensors: dict[str, Tensor] = {}
    ranks: dict[str, int] = {}
    alphas: dict[str, float] = {}
    errors: dict[str, float] = {}
    for p, m in body.items():
        up, down, scale = lora_terms(m, name)
        err = 0.0
        if max_rank is not None and up.shape[1] > max_rank:
            up, down, err = lowrank_truncate(up * scale, down, max_rank)  # the scale goes into the factors
            scale = 1.0
        k = up.shape[1]
        tensors[f"{_PREFIX}{p}.lora_A.weight"] = down.contiguous()  # (k, d_in)
        tensors[f"{_PREFIX}{p}.lora_B.weight"] = up.contiguous()  # (d_out, k)
        ranks[p], alphas[p], errors[p] = k, scale * k, err  # PEFT: scaling = lora_alpha / r = scale
    tensors.update(peft_head_tensors(heads, name))

    r, alpha = int(_most_common(ranks)), _most_common(alphas)
    peft_cfg = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=_target_modules(model, list(body)),
        rank_pattern={p: k for p, k in ranks.items() if k != r},
        alpha_pattern={p: a for p, a in alphas.items() if a != alpha},
        modules_to_save=list(heads) or None,
        lora_dropout=0.0,
        bias="none",
        use_rslora=False,  # rslora scales by lora_alpha / sqrt(r): our scale is alpha / r
        use_dora=False,
        init_lora_weights=True,
        base_model_name_or_path=base_model_name_or_path,
    )
    write_peft_folder(out, tensors, peft_cfg)
    return LoRAExport(out, ranks, errors, list(heads))
