"""Model-level adapter operations on any ``nn.Module`` (Hugging Face models included).

Which parameters are adapter parameters is decided by the ``AdapterLinear`` contract
(``adapter_parameters(name)``), never by matching substrings of parameter names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from kroncl.adapters.config import AdapterConfig
from kroncl.adapters.layers import AdapterLinear, DenseDeltaLinear, KronLoRALinear, LoRALinear
from kroncl.adapters.math import check_rank, kron_factors
from kroncl.errors import AdapterConfigError, AdapterLoadError, AdapterStateError

__all__ = [
    "LoadResult",
    "match_target",
    "inject_adapters",
    "adapter_layers",
    "adapter_names",
    "add_adapter",
    "delete_adapter",
    "set_active_adapter",
    "adapter_parameters",
    "adapter_state_dict",
    "load_adapter_state_dict",
    "layer_config_mismatches",
    "merge_adapter",
    "unmerge_adapters",
    "set_requires_grad",
    "count_adapter_parameters",
]


class LoadResult(NamedTuple):
    """Keys left out by a non-strict load."""

    missing: list[str]
    unexpected: list[str]


def match_target(target: str, path: str) -> bool:
    """Whether module ``path`` is selected by ``target``.

    ``re:<regex>`` fullmatches the whole path; any other string matches the path itself or its
    last dotted components (so "dense" does not match "bert.pooler.dense_act").

    Example:
        >>> match_target("attention.output.dense", "bert.encoder.layer.0.attention.output.dense")
        True
        >>> match_target("dense", "bert.encoder.layer.0.output.dense_act")
        False
        >>> match_target(r"re:.*layer\\.[01]\\.attention\\.self\\.query", "bert.encoder.layer.1.attention.self.query")
        True
    """
    if target.startswith("re:"):
        return re.fullmatch(target[3:], path) is not None
    return path == target or path.endswith("." + target)


def _candidate_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Named modules that may be targeted: everything except the model root and adapter internals."""
    out: dict[str, nn.Module] = {}
    inside: list[str] = []
    for path, mod in model.named_modules():
        if not path or any(path.startswith(p + ".") for p in inside):
            continue
        if isinstance(mod, AdapterLinear):
            inside.append(path)
        out[path] = mod
    return out


def _resolve(cfg_key: str, targets: list[str], modules: dict[str, nn.Module]) -> tuple[list[str], list[str]]:
    """Module paths matched by ``targets`` and the error messages for targets that fail."""
    errors: list[str] = []
    chosen: list[str] = []
    linear_names = sorted({p.rsplit(".", 1)[-1] for p, m in modules.items() if isinstance(m, nn.Linear)})
    for t in targets:
        hits = [p for p in modules if match_target(t, p)]
        if not hits:
            errors.append(
                f"{cfg_key} entry {t!r} matches no module; Linear module names in this model include "
                f"{linear_names[:12]}"
            )
            continue
        for p in hits:
            m = modules[p]
            if isinstance(m, AdapterLinear):
                errors.append(
                    f"{cfg_key} entry {t!r} matches '{p}', which already carries adapters; use add_adapter() "
                    "for another adapter set instead of injecting twice"
                )
            elif not isinstance(m, nn.Linear):
                errors.append(
                    f"{cfg_key} entry {t!r} matches '{p}', a {type(m).__name__}, not an nn.Linear; "
                    "name its Linear submodules instead"
                )
            elif p not in chosen:
                chosen.append(p)
    return chosen, errors


def _set_submodule(model: nn.Module, path: str, new: nn.Module) -> None:
    # A new module starts in training mode; inherit the replaced one's mode so injecting into
    # an eval() model does not switch adapter dropout on.
    new.train(model.get_submodule(path).training)
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, new)


def inject_adapters(model: nn.Module, cfg: AdapterConfig, adapter_name: str = "default") -> list[str]:
    """Replace the targeted ``nn.Linear`` modules by adapter layers and freeze everything else.

    Nothing is changed unless every target resolves and every factor divides, so a failed call
    leaves the model as it was.

    Args:
        model: any module tree (HF ``PreTrainedModel`` or plain ``nn.Module``).
        cfg: which modules get which adapter (validated here).
        adapter_name: name of the first adapter set; it becomes active.

    Returns:
        Replaced module paths in model order (``targets`` first, then ``head_targets``).

    Raises:
        AdapterConfigError: a target matches nothing (the message lists Linear module names),
            matches a non-Linear module (naming its type), a module is listed in both
            ``targets`` and ``head_targets``, a Kron factor does not divide a layer, or ``r``
            exceeds a layer's dimensions (checked before any factor is allocated).
    """
    cfg.validate()
    modules = _candidate_modules(model)
    body, errors = _resolve("adapter.targets", list(cfg.targets), modules)
    heads, head_errors = _resolve("adapter.head_targets", list(cfg.head_targets), modules)
    errors += head_errors
    both = sorted(set(body) & set(heads))
    if both:
        errors.append(f"modules {both} are matched by both adapter.targets and adapter.head_targets; keep one")
    for p in body:
        m = modules[p]
        try:
            if cfg.method == "kron":
                shape = kron_factors(m.out_features, m.in_features, cfg.a_out, cfg.a_in, layer=p)
                check_rank(cfg.r, shape.b_out, shape.b_in, layer=p)
            else:
                check_rank(cfg.r, m.out_features, m.in_features, layer=p, what="B A")
        except AdapterConfigError as e:
            errors.append(str(e))
    if errors:
        raise AdapterConfigError("cannot inject adapters:\n  " + "\n  ".join(errors))

    for p in body:
        base = modules[p]
        if cfg.method == "kron":
            new: AdapterLinear = KronLoRALinear(
                base, cfg.a_out, cfg.a_in, cfg.r, cfg.alpha, cfg.dropout, layer_name=p, adapter_name=adapter_name
            )
        else:
            new = LoRALinear(base, cfg.r, cfg.alpha, cfg.dropout, layer_name=p, adapter_name=adapter_name)
        _set_submodule(model, p, new)
    for p in heads:
        _set_submodule(model, p, DenseDeltaLinear(modules[p], cfg.dropout, layer_name=p, adapter_name=adapter_name))

    model.requires_grad_(False)
    set_requires_grad(model, adapter_name, True)
    return body + heads


def adapter_layers(model: nn.Module) -> dict[str, AdapterLinear]:
    """Module path -> adapter layer, in model order."""
    return {p: m for p, m in model.named_modules() if isinstance(m, AdapterLinear)}


def _layers(model: nn.Module) -> dict[str, AdapterLinear]:
    layers = adapter_layers(model)
    if not layers:
        raise AdapterStateError(f"{type(model).__name__} has no adapter layers; call inject_adapters() first")
    return layers


def adapter_names(model: nn.Module) -> list[str]:
    """Adapter set names present in every adapter layer (in creation order)."""
    layers = list(_layers(model).values())
    names = list(layers[0].adapters)
    return [n for n in names if all(n in m.adapters for m in layers[1:])]


def add_adapter(model: nn.Module, name: str, init_from: str | None = None, *, r: int | None = None,
                alpha: float | None = None) -> None:
    """Add set ``name`` to every adapter layer (a copy of ``init_from`` when given), trainable.

    ``r``/``alpha`` give the new set its own rank and scale (default: the layers' own); sets
    with different ones coexist in one model. The active adapter does not change; call
    :func:`set_active_adapter` to train the new set.
    """
    for m in _layers(model).values():
        m.add_adapter(name, init_from=init_from, r=r, alpha=alpha)
    set_requires_grad(model, name, True)


def delete_adapter(model: nn.Module, name: str) -> None:
    """Remove set ``name`` from every adapter layer."""
    for m in _layers(model).values():
        m.delete_adapter(name)


def set_active_adapter(model: nn.Module, name: str | None) -> None:
    """Route the following forward passes through set ``name`` (None: base model only).

    Switching is an attribute change on each layer: resident sets are not reloaded, so a
    different set can serve every batch.

    Raises:
        AdapterStateError: some layer lacks ``name`` or has another set merged (nothing changed).
    """
    layers = _layers(model)
    for m in layers.values():
        if name is not None:
            m._factors(name)
        if m.merged_adapter is not None and m.merged_adapter != name:
            raise AdapterStateError(
                f"layer '{m.layer_name}' has adapter '{m.merged_adapter}' merged; "
                f"call unmerge_adapters(model) before activating {name!r}"
            )
    for m in layers.values():
        m.active_adapter = name


def set_stacked_adapters(model: nn.Module, names: Sequence[str]) -> None:
    """Add sets ``names`` in every forward on top of the active set, in every adapted layer
    (``()``: the active set alone). Used for O-LoRA, where all task sets answer together.

    Raises:
        AdapterStateError: some layer lacks one of ``names`` (nothing changed).
    """
    layers = _layers(model)
    for m in layers.values():
        for name in names:
            m._factors(name)
    for m in layers.values():
        m.stacked_adapters = tuple(names)


def adapter_parameters(model: nn.Module, name: str) -> dict[str, nn.Parameter]:
    """Parameters of set ``name`` keyed "<module path>.<local name>" (e.g. "...query.B1")."""
    return {f"{p}.{k}": v for p, m in _layers(model).items() for k, v in m.adapter_parameters(name).items()}


def adapter_state_dict(model: nn.Module, name: str) -> dict[str, Tensor]:
    """Detached copies of set ``name``'s parameters, same keys as :func:`adapter_parameters`."""
    return {k: v.detach().clone() for k, v in adapter_parameters(model, name).items()}


def _layer_hyper(m: AdapterLinear) -> dict[str, object] | None:
    """What a layer fixes for all its sets: the method and Kron factor shape (None for heads).
    Rank and alpha belong to each set (:meth:`AdapterLinear.set_hyper`)."""
    if isinstance(m, KronLoRALinear):
        return {"method": "kron", "a_out": m.shape.a_out, "a_in": m.shape.a_in}
    if isinstance(m, LoRALinear):
        return {"method": "lora"}
    return None


def layer_config_mismatches(layers: dict[str, AdapterLinear], cfg: AdapterConfig, name: str | None = None) -> list[str]:
    """One line per hyper-parameter where ``cfg`` (from a file) cannot go into these layers.

    The method and A's shape are the layers' (every set shares them); r and alpha are each
    set's own, so a file with other ones becomes a new set with its own scale — but tensors
    for an *existing* set ``name`` must match that set's r and alpha, or they would load
    without a shape error and give a silently wrong ΔW. This is the single check behind every
    path that adds tensors to layers already in a model: ``io.load_adapter_into``,
    ``peft_interop.import_peft_lokr`` and ``kroncl.composition.attach_adapters`` (all through
    :func:`load_adapter_state_dict`).
    """
    file_hyper = {"method": cfg.method, "a_out": cfg.a_out, "a_in": cfg.a_in, "r": cfg.r, "alpha": float(cfg.alpha)}
    found: dict[str, list[object]] = {}
    for m in layers.values():
        hyper = _layer_hyper(m)
        if hyper is None:
            continue
        if name is not None and name in m.adapters:
            hyper = {**hyper, **(m.set_hyper(name) or {})}
        for key, value in hyper.items():
            if value != file_hyper[key] and value not in found.setdefault(key, []):
                found[key].append(value)
    if "method" in found:  # factor shapes and rank are not comparable across methods
        return [f"method {cfg.method!r} in the file vs {found['method'][0]!r} in the model's layers"]
    where = {"a_out": "the model's layers", "a_in": "the model's layers",
             "r": f"the model's set {name!r}", "alpha": f"the model's set {name!r}"}
    return [
        f"{key} {file_hyper[key]!r} in the file vs {', '.join(repr(v) for v in found[key])} in {where[key]}"
        for key in ("a_out", "a_in", "r", "alpha")
        if found.get(key)
    ]


@torch.no_grad()
def load_adapter_state_dict(
    model: nn.Module,
    tensors: dict[str, Tensor],
    name: str,
    strict: bool = True,
    config: AdapterConfig | None = None,
    source: str = "",
) -> LoadResult:
    """Copy ``tensors`` into set ``name`` (created in every layer first if absent).

    Args:
        model: a model with adapter layers.
        tensors: keys as produced by :func:`adapter_state_dict`.
        name: adapter set to fill.
        strict: raise when any key is missing or unexpected.
        config: the config the tensors were trained with; when given, its method and factor
            shape must equal the layers', and a new set takes its r and alpha (its own scale);
            an existing set must have the same r and alpha (:func:`layer_config_mismatches`).
        source: where the tensors come from (a folder), for the error message.

    Returns:
        The missing and unexpected keys (both empty after a strict load).

    Raises:
        AdapterLoadError: the config disagrees with the layers, or one error listing every
            missing key, unexpected key and shape mismatch (shape mismatches are errors even
            when ``strict`` is False). Nothing is changed when it is raised.
    """
    created = name not in adapter_names(model)
    if config is not None:
        diff = layer_config_mismatches(_layers(model), config, None if created else name)
        if diff:
            origin = f" from {source}" if source else ""
            fix = ("load it into a fresh base model (it is injected with the file's config) or use an "
                   "adapter of the model's method and A shape") if created else (
                   f"load it under another set name, or delete_adapter(model, {name!r}) first")
            raise AdapterLoadError(f"cannot load adapter '{name}'{origin}: {'; '.join(diff)}; {fix}")
    if created:
        # The set takes the file's own rank and alpha (its scale), whatever the other sets use.
        add_adapter(model, name, **({"r": config.r, "alpha": config.alpha} if config is not None else {}))
    params = adapter_parameters(model, name)
    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    mismatched = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(params[k].shape)}"
        for k in sorted(set(params) & set(tensors))
        if tuple(tensors[k].shape) != tuple(params[k].shape)
    ]
    problems = []
    if strict and missing:
        problems.append(f"{len(missing)} missing keys: {missing}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {unexpected}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {mismatched}")
    if problems:
        if created:
            delete_adapter(model, name)
        raise AdapterLoadError(f"cannot load adapter '{name}':\n  " + "\n  ".join(problems))
    for k in set(params) & set(tensors):
        params[k].copy_(tensors[k].to(dtype=params[k].dtype, device=params[k].device))
    return LoadResult(missing, unexpected)


def merge_adapter(model: nn.Module, name: str) -> None:
    """Fold set ``name`` into every base weight (idempotent; see ``AdapterLinear.merge``).

    All or nothing: every layer's merged weight is computed and checked to be finite before
    any weight changes, so a refused merge leaves the model exactly as it was, including a
    set merged before. Should a layer still fail midway, the layers already done are put
    back to the set they had merged.

    Raises:
        AdapterStateError: some layer lacks ``name``, or merging it gives NaN/Inf (naming
            the layer); nothing is changed.
    """
    layers = _layers(model)
    for m in layers.values():
        m._factors(name)
    for m in layers.values():
        if m.merged_adapter != name:
            m.merged_tensors(name)  # check only; recomputed by merge() so memory stays at one layer
    before = {p: m.merged_adapter for p, m in layers.items()}
    done: list[str] = []
    try:
        for p, m in layers.items():
            m.merge(name)
            done.append(p)
    except AdapterStateError:
        # A half-merged model would silently mix base and adapted layers.
        for p in done:
            layers[p].unmerge()
            if before[p] is not None:
                layers[p].merge(before[p])
        raise


def unmerge_adapters(model: nn.Module) -> None:
    """Restore every base weight exactly; the previously merged set stays active."""
    for m in _layers(model).values():
        m.unmerge()


def set_requires_grad(model: nn.Module, name: str, flag: bool) -> None:
    """Make set ``name`` trainable (True) or frozen (False) in every layer."""
    for p in adapter_parameters(model, name).values():
        p.requires_grad_(flag)


def count_adapter_parameters(model: nn.Module, name: str) -> int:
    """Number of scalar parameters in set ``name``."""
    return sum(p.numel() for p in adapter_parameters(model, name).values())
