"""Registers a run's adapters in the registry with their lineage.

Per experience: the fp32 adapter as a version ``continued_from`` the previous experience's
version, and (with ``quant=int8|int4``) the quantized artifact as a version ``quantized_from``
it. Names: adapter ``<model>-<task>-<method>`` (one lineage line per task, method and base).

Registration is idempotent on (run, experience, bits): every version is tagged with the run's
id (``kroncl.run``) and its experience, and a registration repeated after a crash returns the
version the killed process already committed instead of adding a duplicate. The artifact is
registered from its explicit file list (:data:`ARTIFACT_FILES`), never a folder walk, so a
temporary file left by a killed write can never end up inside it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kroncl.adapters import AdapterConfig
from kroncl.adapters.io import CONFIG_NAME, WEIGHTS_NAME
from kroncl.config import config_hash
from kroncl.errors import ConfigError
from kroncl.faults import fault_point
from registry.names import RUN_TAG

ARTIFACT_FILES = (WEIGHTS_NAME, CONFIG_NAME)
"""The files of one adapter artifact, exactly (what :func:`kroncl.adapters.save_adapter` writes)."""

_NAME_OK = re.compile(r"[^A-Za-z0-9._-]+")


def registry_name(text: str) -> str:
    """A registry-safe name (letters, digits, '.', '_', '-')."""
    return _NAME_OK.sub("-", text).strip("-.")[:128] or "unnamed"


def base_model_identity(model) -> tuple[str, str]:
    """(name, content hash) of the frozen base weights, heads included.

    The hash is over parameter bytes, so the same checkpoint (and the same seeded head) always
    maps to the same registry base model, wherever its files live.
    """
    digest = hashlib.sha256()
    for key, tensor in sorted(model.backbone.state_dict().items()):
        if ".adapters." in key:
            continue
        # Same name before and after injection: an adapted layer keeps its base as base_layer.
        digest.update(key.replace(".base_layer.", ".").encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    cfg = model.config
    source = str(cfg.name_or_path or cfg.name)
    if cfg.name != "custom" and not Path(source).exists():
        name = source  # a hub id such as distilbert-base-uncased or org/name
    elif cfg.name != "custom":
        name = cfg.name  # a preset shipped as a local folder (minilm, smollm2)
    else:
        name = source if "/" in source and not Path(source).exists() else Path(source).name
    if cfg.base_quant is not None:  # other weights under the same name: its own base model
        name = f"{name}-{cfg.base_quant}"
    return (name if "/" in name else registry_name(name)), digest.hexdigest()[:16]


def register_base(store, name: str, revision: str, head_seed: int, url: str) -> None:
    """Register the base model, or say what to change when the registry knows other weights
    under its name (another checkpoint, or another head init ``model.seed``)."""
    from registry.errors import Conflict

    try:
        store.register_base_model(name, revision=revision)
    except Conflict:
        registered = store.get_base_model(name).revision
        raise ConfigError(
            f"the registry {url} already holds base model {name!r} with other weights (revision "
            f"{registered}; these weights hash to {revision}). The "
            f"frozen weights here (head initialised with model.seed={head_seed}) are not the ones its "
            "adapters were trained on: keep model.seed and the checkpoint of the earlier runs (the "
            "run's seed= may change freely), or use a registry of its own (registry.url=..., "
            "registry.artifacts=...)"
        ) from None


@dataclass
class Registrar:
    """Thin adapter between the pipeline and ``registry.RegistryStore`` (None = disabled)."""

    store: Any
    url: str | None
    base_model: str
    base_revision: str
    adapter_cfg: AdapterConfig
    model_tag: str
    mlflow_run_id: str | None
    run_config: dict[str, Any]
    run_id: str = ""
    """The kroncl run's id (``run.json``): with the experience and bits, a version's identity."""
    previous: str | None = None
    """Newest fp32 version ref of this run: the next experience's version continues from it."""

    @classmethod
    def from_config(cls, settings, model, adapter_cfg: AdapterConfig, mlflow_run_id: str | None,
                    run_id: str = "") -> Registrar:
        base_name, revision = base_model_identity(model)
        store = url = None
        if settings.registry.enabled:
            from registry import RegistryStore

            root = settings.runs_root
            url = settings.registry.url or f"sqlite:///{(root / 'registry.db').resolve()}"
            artifacts = settings.registry.artifacts or str((root / "registry_artifacts").resolve())
            root.mkdir(parents=True, exist_ok=True)
            store = RegistryStore(url, artifacts, s3_endpoint_url=settings.registry.s3_endpoint_url)
            register_base(store, base_name, revision, settings.model.seed, url)
        return cls(store, url, base_name, revision, adapter_cfg,
                   registry_name(settings.model.name), mlflow_run_id, settings.result_config, run_id)

    def run_tags(self) -> dict[str, str]:
        """What every version of this run carries: the run's id and what it ran (select a run or
        a sweep with ``python -m registry list --run ID`` or ``--tag seed=1``)."""
        cfg = self.run_config
        return {RUN_TAG: self.run_id, "stream": str(cfg.get("stream", {}).get("name")),
                "strategy": str(cfg.get("strategy", {}).get("mode")), "seed": str(cfg.get("seed")),
                "config_hash": config_hash(cfg)}

    def restore(self, state: dict[str, Any]) -> None:
        self.previous = state.get("previous")

    def state(self) -> dict[str, Any]:
        return {"previous": self.previous}

    def register(
        self,
        task: str,
        artifact: Path,
        *,
        bits: int,
        metrics: dict[str, float],
        param_count: int,
        experience: int,
        quantized_from: str | None = None,
    ) -> str | None:
        """Register one artifact; returns its ref (``adapter:N``), or None when disabled."""
        if self.store is None:
            return None
        adapter = registry_name(f"{self.model_tag}-{task}-{self.adapter_cfg.method}")
        self.store.register_task(task)
        self.store.register_adapter(adapter, task=task, base_model=self.base_model)
        parents = []
        if quantized_from is not None:
            parents.append((quantized_from, "quantized_from"))
        elif self.previous is not None:
            parents.append((self.previous, "continued_from"))
        tags = {**self.run_tags(), "experience": str(experience), "stream_task": task}
        existing = self.store.search_versions(
            adapter=adapter, bits=bits, tags={RUN_TAG: self.run_id, "experience": str(experience)}
        ) if self.run_id else []  # no run identity (library use): nothing to be idempotent on
        if existing:  # made by this run before it was killed: the same tensors, bit for bit
            version = existing[0]
        else:
            version = self._register_new(adapter, artifact, bits, metrics, param_count, tags, parents,
                                         experience)
        fault_point("after_register", exp=experience, bits=bits)
        ref = f"{version.adapter}:{version.number}"
        if quantized_from is None:
            self.previous = ref
        return ref

    def _register_new(self, adapter: str, artifact: Path, bits: int, metrics: dict[str, float],
                      param_count: int, tags: dict[str, str], parents: list, experience: int):
        cfg = self.adapter_cfg
        return self.store.register_version(
            adapter,
            artifact,
            files=ARTIFACT_FILES,
            method=cfg.method,
            bits=bits,
            a_out=cfg.a_out if cfg.method == "kron" else None,
            a_in=cfg.a_in if cfg.method == "kron" else None,
            r=cfg.r,
            alpha=float(cfg.alpha),
            param_count=param_count,
            metrics=metrics,
            config={"adapter": cfg.to_dict(), "run": self.run_config},
            mlflow_run_id=self.mlflow_run_id,
            tags=tags,
            parents=parents,
            on_published=lambda: fault_point("registry_publish", exp=experience, bits=bits),
        )
