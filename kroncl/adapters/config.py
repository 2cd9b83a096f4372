"""``AdapterConfig``: what to inject where, validated at the boundary."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from kroncl.errors import AdapterConfigError

__all__ = ["AdapterConfig", "METHODS", "MAX_DIM", "MAX_ALPHA"]

METHODS = ("kron", "lora")
MAX_DIM = 1 << 20
"""Upper bound on r, a_out and a_in before any layer is seen: no linear layer is wider than
~1M features, so a larger value is a typo or a corrupt file, and building it would ask the
allocator for terabytes (``r * b_in`` floats) instead of failing with a message."""
MAX_ALPHA = 1e6
"""Upper bound on alpha: the scale alpha / r beyond this only produces overflowing deltas."""


@dataclass
class AdapterConfig:
    """Adapter hyper-parameters and targets (the fields of ``adapter_config.json``)."""

    method: str = "kron"
    """"kron" (Kron-LoRA) or "lora" (LoRA baseline)."""
    a_out: int = 2
    """Rows of the small Kronecker factor A; must divide every target's d_out (kron only)."""
    a_in: int = 2
    """Columns of A; must divide every target's d_in (kron only)."""
    r: int = 8
    """Rank of B = B1 B2 (kron) or of the LoRA update."""
    alpha: float = 16.0
    """Scale numerator: ΔW is multiplied by alpha / r."""
    dropout: float = 0.0
    """Dropout on the adapter's input during training (the base path is never dropped)."""
    targets: list[str] = field(default_factory=list)
    """Linear modules to adapt: exact module-path suffixes ("query", "attention.output.dense")
    or ``re:<regex>`` matched against the full module path with ``re.fullmatch``."""
    head_targets: list[str] = field(default_factory=list)
    """Linear heads that get a full trainable ΔW and Δbias (``DenseDeltaLinear``), same syntax."""

    def validate(self) -> AdapterConfig:
        """Check every field; returns self so it chains.

        Raises:
            AdapterConfigError: listing every invalid field by its config key.
        """
        errors = []
        if self.method not in METHODS:
            errors.append(f"adapter.method={self.method!r} must be one of {list(METHODS)}")
        for key in ("a_out", "a_in", "r"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                errors.append(f"adapter.{key}={v!r} must be a positive integer")
            elif v > MAX_DIM:
                errors.append(
                    f"adapter.{key}={v!r} exceeds the limit {MAX_DIM} (wider than any linear layer); "
                    "the config is mistyped or corrupt"
                )
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not self.alpha > 0:
            errors.append(f"adapter.alpha={self.alpha!r} must be a positive number")
        elif not self.alpha <= MAX_ALPHA:  # also catches inf
            errors.append(
                f"adapter.alpha={self.alpha!r} exceeds the limit {MAX_ALPHA:g}; the config is mistyped or corrupt"
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            errors.append(f"adapter.dropout={self.dropout!r} must be in [0, 1)")
        for key in ("targets", "head_targets"):
            v = getattr(self, key)
            if not isinstance(v, (list, tuple)) or not all(isinstance(t, str) and t for t in v):
                errors.append(f"adapter.{key}={v!r} must be a list of non-empty strings")
                continue
            for t in v:
                if t.startswith("re:"):
                    try:
                        re.compile(t[3:])
                    except re.error as e:
                        errors.append(f"adapter.{key}: bad regex {t!r}: {e}")
        if isinstance(self.targets, (list, tuple)) and not self.targets:
            errors.append("adapter.targets is empty; name at least one Linear module, e.g. ['query', 'value']")
        if errors:
            raise AdapterConfigError("invalid adapter config: " + "; ".join(errors))
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of the fields."""
        d = dataclasses.asdict(self)
        d["targets"] = list(self.targets)
        d["head_targets"] = list(self.head_targets)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AdapterConfig:
        """Build and validate from a dict (e.g. a Hydra node converted to a container).

        Raises:
            AdapterConfigError: unknown keys (naming them) or invalid values.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise AdapterConfigError(f"unknown adapter config keys {unknown}; known keys are {sorted(names)}")
        kw = dict(d)
        for key in ("targets", "head_targets"):
            if key in kw and kw[key] is not None and not isinstance(kw[key], str):
                kw[key] = list(kw[key])
        return cls(**kw).validate()
