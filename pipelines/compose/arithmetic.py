"""Task arithmetic in the registry: a weighted sum of versions registered as a new version."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kroncl.adapters import save_adapter
from kroncl.composition import weighted_sum
from kroncl.quant import load_adapter_dequantized
from pipelines.compose.base import check_one_base, model_node_for
from pipelines.registration import registry_name
from registry import MERGED_FROM, AdapterVersion, RegistryStore

__all__ = ["COMPOSITION_KIND", "combine"]

COMPOSITION_KIND = "task_arithmetic"


def combine(
    store: RegistryStore,
    versions: Sequence[AdapterVersion],
    weights: Sequence[float],
    name: str,
    *,
    task: str | None = None,
    aliases: Sequence[str] = (),
    model: str | None = None,
    model_opts: dict[str, Any] | None = None,
) -> AdapterVersion:
    """Task arithmetic: register ``Σ_i weights[i] · ΔW_i`` as a new version of adapter ``name``.

    The sum is stored exactly as a LoRA adapter of concatenated factors
    (:func:`kroncl.composition.weighted_sum`); the version gets a ``merged_from`` edge to every
    source, the weights and sources in its config (``composition``) and tags, and the sources'
    base-model config so :func:`compose` rebuilds the base model from it.

    Args:
        task: registry task of the new adapter; default the sources' task when they share
            one, else their task names joined by '-'.

    Raises:
        ComposeError: see :func:`kroncl.composition.weighted_sum` and :func:`check_one_base`.
        Conflict: adapter ``name`` exists for another task or base model.
    """
    base_model = check_one_base(versions)
    node = model_node_for(versions, model, model_opts)
    loaded = [load_adapter_dequantized(store.fetch_artifact(v.ref)) for v in versions]
    tensors, cfg = weighted_sum(loaded, weights)
    source_tasks = list(dict.fromkeys(v.task for v in versions))
    task = task or registry_name("-".join(source_tasks))
    composition = {
        "kind": COMPOSITION_KIND,
        "representation": "lora_concat",
        "sources": [{"ref": v.ref, "task": v.task, "weight": float(w), "method": v.method, "bits": v.bits,
                     "sha256": v.sha256} for v, w in zip(versions, weights)],
    }
    store.register_task(task, description=f"{COMPOSITION_KIND} of {', '.join(source_tasks)}")
    store.register_adapter(name, task=task, base_model=base_model)
    with tempfile.TemporaryDirectory(prefix="kroncl-compose-") as tmp:
        folder = save_adapter(Path(tmp) / "adapter", tensors, cfg, base_model=base_model,
                              extra={"task": task, "composition": composition})
        return store.register_version(
            name, folder, method=cfg.method, bits=32, r=cfg.r, alpha=cfg.alpha,
            param_count=sum(t.numel() for t in tensors.values()),
            config={"adapter": cfg.to_dict(), "run": {"model": node}, "composition": composition},
            tags={"composition": COMPOSITION_KIND,
                  "weights": ",".join(f"{float(w):g}" for w in weights),
                  "sources": ",".join(v.ref for v in versions)},
            parents=[(v.ref, MERGED_FROM) for v in versions],
            aliases=list(aliases),
        )
