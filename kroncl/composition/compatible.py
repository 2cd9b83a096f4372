"""Which stored adapters fit together on one base model, and the names their sets get.

:func:`check_compatible` is the one check every composition runs first: resident sets
(:mod:`~kroncl.composition.attach`) must share one layer layout, a weighted sum
(:mod:`~kroncl.composition.arithmetic`) only the base model and the adapted layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from kroncl.adapters import AdapterConfig, LoadedAdapter
from kroncl.errors import KronclError

__all__ = ["ComposeError", "set_name_for", "layer_tensors", "is_head", "check_compatible"]


# What resident sets share: the layer type and A's shape are the layers'; r and alpha are each
# set's own (so sets trained with other ranks or scales can sit side by side).
_LAYOUT_FIELDS = ("method", "a_out", "a_in", "targets", "head_targets")


class ComposeError(KronclError, ValueError):
    """Adapters cannot be composed as asked; the message names the adapters and what differs."""


def set_name_for(task: str) -> str:
    """Adapter-set name of a task: module names may not contain '.', registry names may.

    >>> set_name_for("arc_easy"), set_name_for("data.v2")
    ('arc_easy', 'data_v2')
    """
    return task.replace(".", "_")


def layer_tensors(tensors: Mapping[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """Group adapter tensors "<module path>.<param>" by module path.

    >>> import torch
    >>> sorted(layer_tensors({"a.q.A": torch.zeros(1), "a.q.B": torch.zeros(1), "h.weight": torch.zeros(1)}))
    ['a.q', 'h']
    """
    out: dict[str, dict[str, Tensor]] = {}
    for key, t in tensors.items():
        path, _, local = key.rpartition(".")
        out.setdefault(path, {})[local] = t
    return out


def _layout(cfg: AdapterConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    return {k: d[k] for k in _LAYOUT_FIELDS}


def is_head(local: Mapping[str, Tensor]) -> bool:
    """A dense head delta (``weight`` and ``bias``), not low-rank factors."""
    return set(local) == {"weight", "bias"}


def check_compatible(adapters: Mapping[str, LoadedAdapter], *, resident: bool) -> None:
    """Check that ``adapters`` can be composed on one base model.

    Args:
        adapters: label (task or version ref, used in messages) -> adapter.
        resident: True when they will live side by side as adapter sets of the same layers:
            then method, A's shape and targets must be identical (r and alpha may differ:
            each set keeps its own scale). False for
            :func:`weighted_sum`, which only needs the same base model and the same adapted
            layers (it may mix Kron-LoRA and LoRA, or different ranks).

    Raises:
        ComposeError: no adapters, or every difference found (one line each).
    """
    if not adapters:
        raise ComposeError("nothing to compose: pass at least one adapter")
    items = list(adapters.items())
    first_label, first = items[0]
    problems: list[str] = []
    base0 = first.meta.get("base_model")
    layers0 = {p: is_head(t) for p, t in layer_tensors(first.tensors).items()}
    for label, ad in items[1:]:
        base = ad.meta.get("base_model")
        if base != base0:
            problems.append(
                f"{label!r} was trained on base model {base!r} but {first_label!r} on {base0!r}"
            )
        if resident:
            a, b = _layout(first.config), _layout(ad.config)
            diff = {k: (a[k], b[k]) for k in _LAYOUT_FIELDS if a[k] != b[k]}
            if "method" in diff:
                problems.append(
                    f"{label!r} is a {b['method']!r} adapter but {first_label!r} is {a['method']!r}: "
                    "resident adapter sets share one layer type, so methods cannot be mixed; "
                    "compose them separately, or combine them with weights (task arithmetic)"
                )
            elif diff:
                shown = ", ".join(f"{k}: {v[1]!r} vs {v[0]!r}" for k, v in diff.items())
                problems.append(
                    f"{label!r} has a different adapter layout than {first_label!r} ({shown}); "
                    "resident adapter sets must share method, A shape and targets"
                )
        layers = {p: is_head(t) for p, t in layer_tensors(ad.tensors).items()}
        if layers != layers0:
            only_a = sorted(set(layers0) - set(layers))[:5]
            only_b = sorted(set(layers) - set(layers0))[:5]
            problems.append(
                f"{label!r} adapts other layers than {first_label!r} "
                f"(only in {first_label!r}: {only_a}; only in {label!r}: {only_b})"
            )
    if problems:
        raise ComposeError("cannot compose these adapters:\n  " + "\n  ".join(problems))
