"""Adapted linear layers: one contract (``AdapterLinear``) and three factor families.

An ``AdapterLinear`` wraps a frozen ``nn.Linear`` and holds several *named adapter sets* side by
side (one per task, say) in ``adapters: nn.ModuleDict``. One set, or none, is active per forward
pass (switching tasks is an attribute change, not a reload), or each row takes its own set
(``row_sets``: mixed-task batches in one forward, ``kroncl.adapters.mixed``).

``delta_weight(name)`` (and ``delta_bias(name)``) is the one primitive under merge, unmerge,
export and quantisation-error measurement; forward passes use the cheaper factored route.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kroncl.adapters.math import KronShape, check_rank, kron_apply, kron_delta, kron_factors, lora_apply, lora_delta
from kroncl.adapters.mixed import (RowSets, check_rows, dense_apply_mixed, grouped_apply, kron_apply_mixed,
                                   lora_apply_mixed)
from kroncl.errors import AdapterConfigError, AdapterStateError

__all__ = [
    "AdapterLinear",
    "KronLoRALinear",
    "LoRALinear",
    "DenseDeltaLinear",
    "KronFactors",
    "LoRAFactors",
    "DenseDeltaFactors",
]


class KronFactors(nn.Module):
    """Parameters of one Kron-LoRA adapter set: A (a_out×a_in), B1 (b_out×r, zero), B2 (r×b_in),
    and the set's own ``r``, ``alpha`` and ``scale = alpha / r``."""

    def __init__(self, shape: KronShape, r: int, dtype: torch.dtype, device: torch.device | None,
                 alpha: float | None = None) -> None:
        super().__init__()
        self.r, self.alpha = r, float(r if alpha is None else alpha)
        self.scale = self.alpha / r
        kw = {"dtype": dtype, "device": device}
        self.A = nn.Parameter(torch.empty(shape.a_out, shape.a_in, **kw))
        self.B1 = nn.Parameter(torch.zeros(shape.b_out, r, **kw))
        self.B2 = nn.Parameter(torch.empty(r, shape.b_in, **kw))
        # B1 = 0 makes ΔW = 0 at step 0 (the LoRA convention); A and B2 need to be non-zero or
        # the gradient of B1 (which flows through A and B2) would vanish too.
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.B2, a=math.sqrt(5))


class LoRAFactors(nn.Module):
    """Parameters of one LoRA adapter set: A (r×d_in, kaiming), B (d_out×r, zero), and the set's
    own ``r``, ``alpha`` and ``scale = alpha / r``."""

    def __init__(self, d_out: int, d_in: int, r: int, dtype: torch.dtype, device: torch.device | None,
                 alpha: float | None = None) -> None:
        super().__init__()
        self.r, self.alpha = r, float(r if alpha is None else alpha)
        self.scale = self.alpha / r
        kw = {"dtype": dtype, "device": device}
        self.A = nn.Parameter(torch.empty(r, d_in, **kw))
        self.B = nn.Parameter(torch.zeros(d_out, r, **kw))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))


class DenseDeltaFactors(nn.Module):
    """Full-rank ΔW (d_out×d_in) and Δbias (d_out), both zero: for small trainable heads."""

    def __init__(self, d_out: int, d_in: int, dtype: torch.dtype, device: torch.device | None) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.weight = nn.Parameter(torch.zeros(d_out, d_in, **kw))
        self.bias = nn.Parameter(torch.zeros(d_out, **kw))


class AdapterLinear(nn.Module):
    """A frozen ``nn.Linear`` plus named adapter sets; forward = base(x) + Δ of the active set.

    Attributes:
        base_layer: the wrapped linear layer; its parameters are frozen on construction.
        adapters: adapter name -> factor module (parameters only, no logic).
        layer_name: module path inside the model, used in error messages.
        merged_adapter: name of the set currently folded into ``base_layer.weight``, or None.

    Subclasses implement ``_new_factors()``, ``_delta_forward(x, factors, out)`` and
    ``delta_weight(name)``; everything else (naming, switching, merging) lives here once.
    """

    def __init__(self, base_layer: nn.Linear, layer_name: str = "", dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise AdapterConfigError(
                f"layer '{layer_name}' is a {type(base_layer).__name__}, not an nn.Linear; "
                "only nn.Linear modules can be adapted, remove it from `targets`"
            )
        self.base_layer = base_layer
        self.base_layer.requires_grad_(False)
        self.layer_name = layer_name
        self.adapters = nn.ModuleDict()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._active_adapter: str | None = None
        self.stacked_adapters: tuple[str, ...] = ()
        """Sets added in forward besides the active one (O-LoRA: every earlier task's set stays
        active, frozen, while the next one trains and at test time)."""
        self.row_sets: RowSets | None = None
        """Per-row routing, replacing the active set while not None (``routing.row_adapters``)."""
        self.merged_adapter: str | None = None
        # Exact copies of the original base parameters while a set is merged; restoring from
        # these (instead of subtracting ΔW) makes unmerge bit exact.
        self._original_weight: Tensor | None = None
        self._original_bias: Tensor | None = None

    # --- factor family hooks -------------------------------------------------------------
    def _start(self, adapter_name: str | None) -> None:
        """Create and activate the first set (subclasses call this at the end of __init__)."""
        if adapter_name is not None:
            self.add_adapter(adapter_name)
            self.active_adapter = adapter_name

    def _factor_dtype_device(self) -> tuple[torch.dtype, torch.device]:
        """Factors follow the base weight's dtype and device (float32 for a non-float base)."""
        w = self.base_layer.weight
        return (w.dtype if w.is_floating_point() else torch.float32), w.device

    def _new_factors(self, r: int | None = None, alpha: float | None = None) -> nn.Module:
        """A fresh set's factors; ``r``/``alpha`` default to the layer's (ignored by dense heads)."""
        raise NotImplementedError

    def _delta_forward(self, x: Tensor, factors: nn.Module, out: Tensor) -> Tensor:
        """Return ``out + x @ ΔWᵀ (+ Δbias)`` for one adapter set without building ΔW."""
        raise NotImplementedError

    def _mixed_delta_forward(self, x: Tensor, factors: list[nn.Module], rows: Tensor, out: Tensor) -> Tensor:
        """Return ``out + x[n] @ ΔW_{rows[n]}ᵀ`` row by row, in one pass (``kroncl.adapters.mixed``)."""
        raise NotImplementedError

    def delta_weight(self, name: str) -> Tensor:
        """Dense ΔW (d_out × d_in) of adapter set ``name``, in the factors' dtype."""
        raise NotImplementedError

    def delta_bias(self, name: str) -> Tensor | None:
        """Δbias (d_out) of adapter set ``name``; None for families that do not train a bias."""
        self._factors(name)
        return None

    # --- names ---------------------------------------------------------------------------
    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    @property
    def weight(self) -> Tensor:
        # Some HF code reads `.weight` of its linear layers (dtype checks, tied weights).
        return self.base_layer.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base_layer.bias

    def _factors(self, name: str) -> nn.Module:
        if name not in self.adapters:
            raise AdapterStateError(
                f"layer '{self.layer_name}' has no adapter set '{name}'; "
                f"it has {sorted(self.adapters)}; create it with add_adapter('{name}')"
            )
        return self.adapters[name]

    @property
    def active_adapter(self) -> str | None:
        """Name of the set added in forward, or None for the base layer alone."""
        return self._active_adapter

    @active_adapter.setter
    def active_adapter(self, name: str | None) -> None:
        if name is not None:
            self._factors(name)
        if self.merged_adapter is not None and name != self.merged_adapter:
            raise AdapterStateError(
                f"layer '{self.layer_name}' has adapter '{self.merged_adapter}' merged into its "
                f"weight; call unmerge() before activating {name!r}"
            )
        self._active_adapter = name

    def add_adapter(self, name: str, init_from: str | None = None, *, r: int | None = None,
                    alpha: float | None = None) -> None:
        """Create adapter set ``name``, freshly initialised or as a copy of set ``init_from``.

        Each set carries its own ``r``/``alpha`` (and so its own scale): by default the
        layer's, or those of ``init_from`` when copying; sets with different ones coexist.

        Raises:
            AdapterStateError: ``name`` exists already, or ``init_from`` does not exist.
        """
        if not name or "." in name:
            raise AdapterConfigError(f"adapter name {name!r} must be non-empty and contain no '.'")
        if name in self.adapters:
            raise AdapterStateError(f"layer '{self.layer_name}' already has an adapter set '{name}'")
        if init_from is not None:
            # Warm start: same values, independent storage, so training `name` leaves the
            # source set untouched.
            source = self._factors(init_from)
            factors = self._new_factors(getattr(source, "r", None), getattr(source, "alpha", None))
            factors.load_state_dict(source.state_dict())
        else:
            factors = self._new_factors(r, alpha)
        factors.train(self.training)
        self.adapters[name] = factors

    def set_hyper(self, name: str) -> dict[str, float] | None:
        """``{"r", "alpha"}`` of set ``name`` (None for families without them: dense heads)."""
        f = self._factors(name)
        return {"r": f.r, "alpha": f.alpha} if hasattr(f, "alpha") else None

    def delete_adapter(self, name: str) -> None:
        """Remove set ``name``; it must not be merged. Deactivates it if it was active."""
        self._factors(name)
        if self.merged_adapter == name:
            raise AdapterStateError(
                f"layer '{self.layer_name}': adapter '{name}' is merged; call unmerge() before deleting it"
            )
        del self.adapters[name]
        if self._active_adapter == name:
            self._active_adapter = None
        self.stacked_adapters = tuple(n for n in self.stacked_adapters if n != name)

    def adapter_parameters(self, name: str) -> dict[str, nn.Parameter]:
        """Parameters of set ``name`` under local names (e.g. "A", "B1", "B2")."""
        return dict(self._factors(name).named_parameters())

    # --- forward -------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        out = self.base_layer(x)  # (..., d_out); includes the merged set, if any
        routed = self.row_sets
        names = [n for n in (*self.stacked_adapters, None if routed else self._active_adapter)
                 if n is not None and n != self.merged_adapter]
        if not names and routed is None:
            return out
        x = self.dropout(x)
        for name in dict.fromkeys(names):  # a set listed twice still counts once
            out = self._delta_forward(x, self.adapters[name], out)
        if routed is not None:
            check_rows(self.layer_name, x, routed.rows)
            factors = [self.adapters[n] for n in routed.names]
            out = (self._mixed_delta_forward(x, factors, routed.rows, out) if routed.fused
                   else grouped_apply(self._delta_forward, x, factors, routed.rows, out, routed.runs))
        return out

    # --- merge ---------------------------------------------------------------------------
    @torch.no_grad()
    def merged_tensors(self, name: str) -> tuple[Tensor, Tensor | None]:
        """Base weight and bias with set ``name`` folded in, computed without changing anything.

        Starts from the original (unmerged) base parameters, so the result does not depend on
        which set is merged now. ``merge`` and ``inject.merge_adapter`` call this first, so a
        refused merge leaves every layer exactly as it was.

        Raises:
            AdapterStateError: the merged weight or bias would contain NaN or Inf.
        """
        dw = self.delta_weight(name)
        db = self.delta_bias(name)
        if self.merged_adapter is not None:
            w, b = self._original_weight, self._original_bias
        else:
            w, b = self.base_layer.weight, self.base_layer.bias
        if not w.is_floating_point():  # a bitsandbytes base (model.base_quant) stores codes
            raise AdapterStateError(f"layer '{self.layer_name}': the base weight is quantized ({w.dtype}); "
                                    "merge into the unquantized base model (model.base_quant=null)")
        new_w = w + dw.to(w.dtype)
        new_b = None
        if db is not None:
            new_b = db.to(w.dtype) if b is None else b + db.to(b.dtype)
        bad = [t for t, v in (("weight", new_w), ("bias", new_b)) if v is not None and not torch.isfinite(v).all()]
        if bad:
            raise AdapterStateError(
                f"layer '{self.layer_name}': merging adapter '{name}' gives non-finite {' and '.join(bad)}; "
                "the adapter factors hold NaN/Inf or overflow the base dtype, refusing to merge"
            )
        return new_w, new_b

    @torch.no_grad()
    def merge(self, name: str) -> None:
        """Fold set ``name`` into ``base_layer`` so forward costs one plain linear.

        Idempotent: merging the merged set again changes nothing. Merging another set first
        restores the original weights, so deltas never stack. ``name`` becomes active.

        Raises:
            AdapterStateError: the merged weight or bias would contain NaN or Inf (checked
                before anything is touched: a set merged before stays merged).
        """
        if self.merged_adapter == name:
            return
        new_w, new_b = self.merged_tensors(name)
        self.unmerge()
        w = self.base_layer.weight
        self._original_weight = w.detach().clone()
        self._original_bias = None if self.base_layer.bias is None else self.base_layer.bias.detach().clone()
        w.copy_(new_w)
        if new_b is not None:
            if self.base_layer.bias is None:
                self.base_layer.bias = nn.Parameter(new_b, requires_grad=False)
            else:
                self.base_layer.bias.copy_(new_b)
        self.merged_adapter = name
        self._active_adapter = name

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the base weight and bias bit for bit; a no-op when nothing is merged."""
        if self.merged_adapter is None:
            return
        assert self._original_weight is not None
        self.base_layer.weight.copy_(self._original_weight)
        if self._original_bias is not None:
            self.base_layer.bias.copy_(self._original_bias)
        elif self.base_layer.bias is not None:
            # The merged set introduced a bias the base layer never had.
            self.base_layer.bias = None
        self._original_weight = None
        self._original_bias = None
        self.merged_adapter = None

    def extra_repr(self) -> str:
        return (f"layer_name={self.layer_name!r}, in={self.in_features}, out={self.out_features}, "
                f"active={self._active_adapter!r}, stacked={list(self.stacked_adapters)}, merged={self.merged_adapter!r}")


class KronLoRALinear(AdapterLinear):
    """Kron-LoRA: ΔW = (alpha/r) · A ⊗ (B1 B2), applied as A·X·B2ᵀ·B1ᵀ per token.

    Example:
        >>> layer = KronLoRALinear(nn.Linear(8, 6), a_out=2, a_in=2, r=2, alpha=4.0)
        >>> layer.shape, layer.delta_weight("default").abs().max().item()
        (KronShape(a_out=2, a_in=2, b_out=3, b_in=4), 0.0)
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        a_out: int,
        a_in: int,
        r: int,
        alpha: float,
        dropout: float = 0.0,
        layer_name: str = "",
        adapter_name: str | None = "default",
    ) -> None:
        super().__init__(base_layer, layer_name=layer_name, dropout=dropout)
        self.shape = kron_factors(base_layer.out_features, base_layer.in_features, a_out, a_in, layer=layer_name)
        self.r = r  # defaults for new sets; each set keeps its own (KronFactors.r/alpha/scale)
        self.alpha = alpha
        self._start(adapter_name)

    def _new_factors(self, r: int | None = None, alpha: float | None = None) -> KronFactors:
        dtype, device = self._factor_dtype_device()
        r = self.r if r is None else r
        if r != self.r:
            check_rank(r, self.shape.b_out, self.shape.b_in, layer=self.layer_name)
        return KronFactors(self.shape, r, dtype, device, alpha=self.alpha if alpha is None else alpha)

    def _delta_forward(self, x: Tensor, f: nn.Module, out: Tensor) -> Tensor:
        x = x.to(f.A.dtype)
        return kron_apply(x, f.A, f.B1, f.B2, f.scale, out=out.to(f.A.dtype)).to(out.dtype)

    def _mixed_delta_forward(self, x: Tensor, fs: list[nn.Module], rows: Tensor, out: Tensor) -> Tensor:
        factors, dtype = [(f.A, f.B1, f.B2, f.scale) for f in fs], fs[0].A.dtype
        return kron_apply_mixed(x.to(dtype), factors, rows, out.to(dtype)).to(out.dtype)

    def delta_weight(self, name: str) -> Tensor:
        f = self._factors(name)
        return kron_delta(f.A, f.B1, f.B2, f.scale)


class LoRALinear(AdapterLinear):
    """LoRA baseline: ΔW = (alpha/r) · B A with A (r×d_in), B (d_out×r, zero-init)."""

    def __init__(
        self,
        base_layer: nn.Linear,
        r: int,
        alpha: float,
        dropout: float = 0.0,
        layer_name: str = "",
        adapter_name: str | None = "default",
    ) -> None:
        super().__init__(base_layer, layer_name=layer_name, dropout=dropout)
        self.r = r  # defaults for new sets; each set keeps its own (LoRAFactors.r/alpha/scale)
        self.alpha = alpha
        self._start(adapter_name)

    def _new_factors(self, r: int | None = None, alpha: float | None = None) -> LoRAFactors:
        dtype, device = self._factor_dtype_device()
        r = self.r if r is None else r
        if r != self.r:
            check_rank(r, self.out_features, self.in_features, layer=self.layer_name, what="B A")
        return LoRAFactors(self.out_features, self.in_features, r, dtype, device,
                           alpha=self.alpha if alpha is None else alpha)

    def _delta_forward(self, x: Tensor, f: nn.Module, out: Tensor) -> Tensor:
        x = x.to(f.A.dtype)
        return lora_apply(x, f.A, f.B, f.scale, out=out.to(f.A.dtype)).to(out.dtype)

    def _mixed_delta_forward(self, x: Tensor, fs: list[nn.Module], rows: Tensor, out: Tensor) -> Tensor:
        dtype = fs[0].A.dtype
        return lora_apply_mixed(x.to(dtype), [(f.A, f.B, f.scale) for f in fs], rows, out.to(dtype)).to(out.dtype)

    def delta_weight(self, name: str) -> Tensor:
        f = self._factors(name)
        return lora_delta(f.A, f.B, f.scale)


class DenseDeltaLinear(AdapterLinear):
    """Full trainable ΔW and Δbias (zero-init) on a frozen head, e.g. a multiple-choice classifier.

    Keeping the head inside an adapter set means each task owns its own head delta, so training
    a later task never moves an earlier task's head.
    """

    def __init__(
        self, base_layer: nn.Linear, dropout: float = 0.0, layer_name: str = "", adapter_name: str | None = "default"
    ) -> None:
        super().__init__(base_layer, layer_name=layer_name, dropout=dropout)
        self._start(adapter_name)

    def _new_factors(self, r: int | None = None, alpha: float | None = None) -> DenseDeltaFactors:
        dtype, device = self._factor_dtype_device()
        return DenseDeltaFactors(self.out_features, self.in_features, dtype, device)

    def _delta_forward(self, x: Tensor, f: nn.Module, out: Tensor) -> Tensor:
        return out + F.linear(x.to(f.weight.dtype), f.weight, f.bias).to(out.dtype)

    def _mixed_delta_forward(self, x: Tensor, fs: list[nn.Module], rows: Tensor, out: Tensor) -> Tensor:
        dtype = fs[0].weight.dtype
        return dense_apply_mixed(x.to(dtype), [(f.weight, f.bias) for f in fs], rows, out.to(dtype)).to(out.dtype)

    def delta_weight(self, name: str) -> Tensor:
        return self._factors(name).weight

    def delta_bias(self, name: str) -> Tensor | None:
        return self._factors(name).bias
