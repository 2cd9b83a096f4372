"""Building the composed model from chosen versions: fetch, read, rebuild the base, attach, verify."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kroncl.adapters import LoadedAdapter
from kroncl.composition import (
    BaseModelCache,
    ComposedModel,
    ComposeError,
    attach_adapters,
)
from kroncl.models import ModelConfig, build_model
from kroncl.quant import load_adapter_dequantized
from pipelines.compose.base import check_one_base, model_node_for, verify_base
from registry import AdapterVersion, RegistryStore

__all__ = ["Composition", "compose"]


@dataclass
class Composition:
    """What :func:`compose` built, and where it came from.

    Attributes:
        composed: the model with its adapter sets (label ``i`` = ``versions[i]``'s task).
        versions: the registry versions, in label order.
        loaded: task -> the adapter as read from its verified artifact.
        model_config: the base model's config as rebuilt.
        base_model: registry base-model name; ``revision``: its registered content hash (None
            when unpinned); ``verified``: the rebuilt weights hash to ``revision``.
        timings: seconds per step (lookup, fetch, read, base_model, attach, verify_base, merge).
        base_cached: the base model came from a :class:`BaseModelCache`.
    """

    composed: ComposedModel
    versions: list[AdapterVersion]
    loaded: dict[str, LoadedAdapter]
    model_config: ModelConfig
    base_model: str
    revision: str | None
    verified: bool
    timings: dict[str, float] = field(default_factory=dict)
    base_cached: bool = False


def compose(
    store: RegistryStore,
    versions: Sequence[AdapterVersion],
    *,
    merge: bool = False,
    model: str | None = None,
    model_opts: dict[str, Any] | None = None,
    cache: BaseModelCache | None = None,
) -> Composition:
    """Build a ready model from registry versions: one task (optionally merged) or several resident.

    Args:
        store: the registry.
        versions: chosen versions (:func:`select_versions`); label ``i`` answers for the
            ``i``-th version's task.
        merge: fold the single adapter into the base weights.
        model, model_opts: base-model config overrides (see :func:`model_node_for`).
        cache: reuse loaded base models across compositions.

    Raises:
        ComposeError: different base models, two versions of one task, adapters that do not
            fit together, ``merge`` with several versions, or base weights that are not the
            registered ones.
        HashMismatch: an artifact changed after registration.
        ModelConfigError, ModelLoadError, AdapterLoadError: see their sources.
    """
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[step] = timings.get(step, 0.0) + now - clock
        clock = now

    if not versions:
        raise ComposeError("nothing to compose: no versions chosen")
    if merge and len(versions) > 1:
        raise ComposeError(
            f"--merge folds one adapter into the base weights, but {len(versions)} versions were chosen; "
            "give --weights to combine them into one adapter first, or drop --merge to keep them resident"
        )
    base_model = check_one_base(versions)
    tasks = [v.task for v in versions]
    clash = sorted({t for t in tasks if tasks.count(t) > 1})
    if clash:
        raise ComposeError(f"several versions of task(s) {clash} chosen ({', '.join(v.ref for v in versions)}); "
                           "resident sets are routed by task, so choose one version per task")
    cfg = ModelConfig.from_mapping(model_node_for(versions, model, model_opts))
    lap("lookup")

    paths = [store.fetch_artifact(v.ref) for v in versions]  # re-hashes every file
    lap("fetch")
    loaded = {v.task: load_adapter_dequantized(p) for v, p in zip(versions, paths)}
    lap("read")

    if cache is not None:
        base, cached = cache.get(cfg)
    else:
        base, cached = build_model(cfg), False
    lap("base_model")
    composed = attach_adapters(base, loaded)
    lap("attach")
    revision, verified = verify_base(base, store, base_model, cache)
    lap("verify_base")
    if merge:
        composed.merge()
    lap("merge")
    return Composition(composed, list(versions), loaded, cfg, base_model, revision, verified, timings, cached)
