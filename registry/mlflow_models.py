"""Mirror registry versions into MLflow: a LoggedModel of the producing run and a version of an
MLflow registered model, so the adapters show on MLflow's *Models* pages and on the run's page.

kroncl's SQL registry stays the source of truth: the mirror is written after the version is
committed, a failed mirror loses nothing (the version simply lacks the :data:`MODEL_VERSION_TAG`
tag) and ``python -m registry sync-mlflow`` mirrors whatever is missing and re-points the
aliases. Every step is idempotent: a LoggedModel and a model version are found again by their
``kroncl.ref`` tag before anything is created, so a mirror killed half way is completed, not
duplicated.

What MLflow gets per version (never the base model's weights):

- LoggedModel ``<adapter>`` in the run's experiment, ``source_run_id`` = the version's run:
  params method, A size, r, alpha, bits, base model, param count; the version's metrics (e.g.
  ``acc``) as model metrics; the artifact files; tags ``kroncl.ref`` and ``kroncl.sha256``;
  linked as an output of the run (its *Logged models* list).
- Registered model ``<adapter>`` (the kroncl adapter name), version source ``models:/<id>``,
  same tags; kroncl's aliases (``production``…) set on the mirrored versions, ``latest`` aside
  (MLflow reserves it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from registry.entities import AdapterVersion
from registry.errors import InvalidValue

LOGGED_MODEL_TAG = "mlflow.logged_model_id"
MODEL_VERSION_TAG = "mlflow.model_version"
"""Tags on the kroncl version once mirrored: the LoggedModel id, and "<registered name>/<version>"."""
REF_TAG, SHA_TAG = "kroncl.ref", "kroncl.sha256"
DEFAULT_EXPERIMENT = "kroncl"
MODEL_METRIC_PREFIX = "registered/"
"""Run metrics ``registered/<task>/<bits>bit/<key>``: a version's registry metrics, attached to its
LoggedModel (MLflow logs model metrics through a run). Copies of the registry's: not in the run's
metrics.jsonl, and rebuilt from the registry by ``sync-mlflow``."""
_VERSIONS_TAG = "mlflow.modelVersions"  # what MLflow's own register_model writes on a LoggedModel


@contextmanager
def _store_uri(client: Any) -> Iterator[None]:
    """Point MLflow's process-wide tracking URI at ``client``'s store for the block.

    MLflow's SQL model registry resolves a ``models:/<id>`` version source with a client of the
    *global* URI (its own TODO says so), not the client's: without this a registry on another
    store than the default fails to find the LoggedModel. A server resolves it on its side."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


@dataclass(frozen=True)
class Mirrored:
    ref: str
    model_id: str
    registered: str
    version: str
    created: bool
    """False when everything existed already (a repeated sync)."""


def _experiment_id(client: Any, run_id: str | None, experiment: str) -> str:
    if run_id:
        try:
            return client.get_run(run_id).info.experiment_id
        except Exception:  # the run is gone (another store, deleted): fall back to the name
            pass
    found = client.get_experiment_by_name(experiment)
    return found.experiment_id if found is not None else client.create_experiment(experiment)


def _logged_model(client: Any, v: AdapterVersion, ref: str, files_dir: str, experiment: str) -> tuple[str, bool]:
    """The LoggedModel of ``v`` (found by its ref tag, or created READY with params, metrics
    and files); returns (model id, created)."""
    exp_id = _experiment_id(client, v.mlflow_run_id, experiment)
    found = client.search_logged_models(experiment_ids=[exp_id], filter_string=f"tags.`{REF_TAG}` = '{ref}'")
    ready = [m for m in found if str(m.status).endswith("READY")]
    if ready:
        return ready[0].model_id, False
    for half_made in found:  # a mirror killed before it finalized: its files may be partial
        client.delete_logged_model(half_made.model_id)
    params = {"method": v.method, "bits": v.bits, "r": v.r, "alpha": v.alpha, "base_model": v.base_model,
              "param_count": v.param_count, "task": v.task}
    if v.a_out is not None:
        params["A"] = f"{v.a_out}x{v.a_in}"
    model = client.create_logged_model(
        exp_id, name=v.adapter, source_run_id=v.mlflow_run_id or None,
        params={k: str(val) for k, val in params.items() if val is not None},
        tags={REF_TAG: ref, SHA_TAG: v.sha256}, model_type="kroncl-adapter")
    client.log_model_artifacts(model.model_id, files_dir)
    if v.mlflow_run_id:
        # Model metrics are logged through the run (MLflow links them to the model by model_id);
        # the key names task and bits, since fp32 and quantized versions of a task share the run.
        step = int(v.tags.get("experience", 0))
        for key, value in sorted(v.metrics.items()):
            client.log_metric(v.mlflow_run_id, f"{MODEL_METRIC_PREFIX}{v.task}/{v.bits}bit/{key}", float(value),
                              step=step, model_id=model.model_id)
        from mlflow.entities import LoggedModelOutput

        client.log_outputs(v.mlflow_run_id, [LoggedModelOutput(model.model_id, step=step)])
    client.finalize_logged_model(model.model_id, "READY")
    return model.model_id, True


def _model_version(client: Any, v: AdapterVersion, ref: str, model_id: str) -> tuple[str, bool]:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(v.adapter, tags={"kroncl.task": v.task, "kroncl.base_model": v.base_model},
                                       description=f"kroncl adapter {v.adapter} (task {v.task}, base {v.base_model})")
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    for mv in client.search_model_versions(f"name = '{v.adapter}'"):
        if mv.tags.get(REF_TAG) == ref:
            return str(mv.version), False
    with _store_uri(client):
        mv = client.create_model_version(v.adapter, source=f"models:/{model_id}", run_id=v.mlflow_run_id or None,
                                         tags={REF_TAG: ref, SHA_TAG: v.sha256}, model_id=model_id,
                                         description=f"{ref}: {v.method} {v.bits}-bit, sha256 {v.sha256[:12]}",
                                         await_creation_for=0)
    # The LoggedModel's page lists the registered versions it was promoted to from this tag.
    links = [{"name": v.adapter, "version": mv.version}]  # as MLflow writes it
    client.set_logged_model_tags(model_id, {_VERSIONS_TAG: json.dumps(links)})
    return str(mv.version), True


def mirror_version(store: Any, ref: str, client: Any, experiment: str = DEFAULT_EXPERIMENT) -> Mirrored:
    """Mirror version ``ref`` (LoggedModel + registered-model version), then its adapter's
    aliases; record the result as tags on the kroncl version. Idempotent."""
    mirrored = _mirror(store, store.get_version(ref), client, experiment)
    sync_aliases(store, mirrored.registered, client)
    return mirrored


def _mirror(store: Any, v: AdapterVersion, client: Any, experiment: str) -> Mirrored:
    """:func:`mirror_version` without the aliases (:func:`sync_mlflow` moves them once per adapter)."""
    ref = f"{v.adapter}:{v.number}"
    files = store.fetch_artifact(ref)  # verified against its sha256: MLflow gets what the registry holds
    model_id, new_model = _logged_model(client, v, ref, str(files), experiment)
    version, new_version = _model_version(client, v, ref, model_id)
    store.set_tag(ref, LOGGED_MODEL_TAG, model_id)
    store.set_tag(ref, MODEL_VERSION_TAG, f"{v.adapter}/{version}")
    return Mirrored(ref, model_id, v.adapter, version, new_model or new_version)


def sync_aliases(store: Any, adapter: str, client: Any) -> dict[str, str]:
    """Point each kroncl alias of ``adapter`` (``latest`` aside) at its mirrored MLflow version;
    an alias whose kroncl version is not mirrored yet is left as it is. Returns alias -> version."""
    mirrored = {v.number: v.tags[MODEL_VERSION_TAG].rsplit("/", 1)[1]
                for v in store.list_versions(adapter) if MODEL_VERSION_TAG in v.tags}
    out = {}
    for alias, number in store.list_aliases(adapter).items():
        if alias != "latest" and number in mirrored:
            client.set_registered_model_alias(adapter, alias, mirrored[number])
            out[alias] = mirrored[number]
    return out


@dataclass
class SyncResult:
    mirrored: list[Mirrored] = field(default_factory=list)
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)
    """adapter -> {alias: MLflow version} as set in MLflow."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(ref or adapter, error) of what could not be mirrored."""


def sync_mlflow(store: Any, client: Any, versions: Iterable[AdapterVersion] | None = None,
                experiment: str = DEFAULT_EXPERIMENT) -> SyncResult:
    """Mirror ``versions`` (default: every version lacking the mirror tag), then re-point the
    aliases of their adapters (default: of every adapter)."""
    if versions is None:
        adapters = sorted(a.name for a in store.list_adapters())
        todo = [v for a in adapters for v in store.list_versions(a) if MODEL_VERSION_TAG not in v.tags]
    else:
        todo = list(versions)
        adapters = sorted({v.adapter for v in todo})
    out = SyncResult()
    for v in todo:
        ref = f"{v.adapter}:{v.number}"
        try:
            out.mirrored.append(_mirror(store, v, client, experiment))
        except Exception as exc:  # one bad version (a missing artifact) must not stop the others
            out.failed.append((ref, f"{type(exc).__name__}: {exc}"))
    for adapter in adapters:
        try:
            if aliases := sync_aliases(store, adapter, client):
                out.aliases[adapter] = aliases
        except Exception as exc:
            out.failed.append((adapter, f"aliases: {type(exc).__name__}: {exc}"))
    return out


def sync_report(store: Any, tracking_uri: str, experiment: str = DEFAULT_EXPERIMENT) -> tuple[Any, str, int]:
    """``python -m registry sync-mlflow``: (JSON payload, text, exit status 1 if any failed)."""
    from mlflow import MlflowClient

    try:
        client = MlflowClient(tracking_uri)  # a SQL store is opened (and created) here
    except Exception as exc:
        raise InvalidValue(f"cannot open the MLflow store {tracking_uri!r} ({type(exc).__name__}: {exc}); "
                           "pass the URI your runs log to as --tracking-uri") from None
    res = sync_mlflow(store, client, experiment=experiment)
    lines = [f"mirrored {m.ref} -> {m.registered} v{m.version} (logged model {m.model_id})" for m in res.mirrored]
    lines += [f"alias    {adapter}@{alias} -> v{version}"
              for adapter, aliases in res.aliases.items() for alias, version in sorted(aliases.items())]
    lines += [f"failed   {ref}: {error}" for ref, error in res.failed]
    lines.append(f"{len(res.mirrored)} mirrored" + ("" if res.mirrored or res.failed else " (nothing missing)"))
    if res.failed:  # the CLI prints the part after "error: " to stderr
        lines.append(f"error: {len(res.failed)} could not be mirrored (see above); fix the cause and run sync-mlflow again")
    payload = {"mirrored": [m.__dict__ for m in res.mirrored], "aliases": res.aliases,
               "failed": [{"ref": r, "error": e} for r, e in res.failed]}
    return payload, "\n".join(lines), 1 if res.failed else 0
