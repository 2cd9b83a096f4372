"""The registry store: :class:`RegistryStore`, a thin facade over focused modules.

Each public method validates its arguments (:mod:`registry.validation`), runs one short
transaction through :meth:`RegistryStore._run` (:mod:`registry.session`: commit or roll back,
errors translated into :mod:`registry.errors`, transient ones retried) and returns plain
entities. The row work lives in :mod:`registry.catalog` (base models, tasks, adapters),
:mod:`registry.versions` (publishing, registering, get, delete; the concurrency rules),
:mod:`registry.search`, :mod:`registry.lineage` and :mod:`registry.labels` (aliases, tags,
metrics, MLflow run id), on top of :mod:`registry.lookups` (rows by name/reference, row ->
entity); :mod:`registry.verify` and :mod:`registry.gc` check and clean the artifact root.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from registry import catalog, labels, lineage, migrate, search, versions
from registry import gc as gc_mod
from registry.backend import open_artifacts
from registry.db import default_artifact_root, default_url, safe_url
from registry.entities import (
    Adapter,
    AdapterVersion,
    BaseModel,
    LineageEntry,
    Task,
    VerificationResult,
)
from registry.gc import GcReport
from registry.lookups import RefLike
from registry.names import validate_base_model_name, validate_name, validate_relation
from registry.session import Sessions
from registry.validation import (
    _validated_alias,
    _validated_base_model_revision,
    _validated_metrics,
    _validated_run_id,
    _validated_tags,
)
from registry.verify import progress_bar, verify_one

T = TypeVar("T")


def _take_signature(method: Callable[..., Any], fn: Callable[..., Any], *, bound: int) -> None:
    """Give facade ``method`` the docstring and signature of ``fn`` minus its first ``bound``
    parameters (those the facade supplies), so help() shows the real keyword arguments and
    they are declared once, in the module that implements them."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())[bound:]
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__signature__ = sig.replace(parameters=[self_param, *params])  # type: ignore[attr-defined]
    method.__doc__ = fn.__doc__


class RegistryStore:
    """Adapter registry over SQLite (default) or PostgreSQL, with content-addressed artifacts.

    Args:
        url: SQLAlchemy URL; default ``$KRONCL_REGISTRY_URL`` or ``sqlite:///runs/registry.db``.
        artifact_root: directory for artifacts, or ``s3://bucket/prefix`` for an S3-compatible
            object store (:mod:`registry.s3store`); default ``$KRONCL_ARTIFACT_ROOT`` or
            ``registry_artifacts/`` beside the SQLite file.
        s3_endpoint_url: the object store's S3 API address (default ``$AWS_ENDPOINT_URL``).
        artifact_cache: local folder for an object store's staging and verified copies
            (default ``$KRONCL_ARTIFACT_CACHE`` or ``~/.cache/kroncl/artifacts``).
        auto_upgrade: migrate an empty or older database to this code's schema on open.
        echo: log SQL.

    Raises:
        SchemaTooNew: the database was migrated by newer code.
        InvalidValue: bad URL, or no artifact root can be derived (PostgreSQL without one).
        DatabaseError: the database cannot be reached.
        StorageError: an object-store root's bucket, credentials or endpoint are wrong.
    """

    def __init__(
        self,
        url: str | None = None,
        artifact_root: str | Path | None = None,
        *,
        auto_upgrade: bool = True,
        echo: bool = False,
        s3_endpoint_url: str | None = None,
        artifact_cache: str | Path | None = None,
    ) -> None:
        self.url = url or default_url()
        self._sessions = Sessions(self.url, echo=echo)
        self._engine = self._sessions.engine
        self._write_engine = self._sessions.write_engine
        self.dialect = self._sessions.dialect
        root = artifact_root if artifact_root is not None else default_artifact_root(self.url)
        try:
            self.artifacts = open_artifacts(
                root, endpoint_url=s3_endpoint_url, cache_dir=artifact_cache
            )
        except BaseException:
            self._engine.dispose()
            raise
        try:
            self.schema_revision = migrate.ensure_schema(self._write_engine, upgrade=auto_upgrade)
        except SQLAlchemyError as e:
            self._engine.dispose()
            raise self._sessions.translate(e) from e
        except BaseException:
            self._engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"RegistryStore({safe_url(self.url)!r}, artifact_root={str(self.artifacts.root)!r})"

    def close(self) -> None:
        """Release pooled connections."""
        self._sessions.dispose()

    def __enter__(self) -> RegistryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- Transactions (registry.session) ---------------------------------------------------------

    def _run(self, fn: Callable[[Session], T], *, write: bool = True) -> T:
        """Run ``fn`` in a managed session, retrying transient failures with jittered backoff."""
        return self._sessions.run(fn, write=write)

    # ---- Base models, tasks, adapters (registry.catalog) -----------------------------------------

    def register_base_model(
        self, name: str, revision: str | None = None, description: str | None = None
    ) -> BaseModel:
        """Get or create a base model.

        Args:
            name: ``name`` or ``org/name`` (hub id style).
            revision: hub revision or content hash pinning the weights.
            description: free text (only used when creating).

        Returns:
            The stored base model. An existing unpinned model gets ``revision`` recorded.

        Raises:
            InvalidName: bad name.
            Conflict: the model exists pinned to a different revision.
        """
        validate_base_model_name(name)
        _validated_base_model_revision(revision)
        return self._run(lambda s: catalog.register_base_model(s, name, revision, description))

    def get_base_model(self, name: str) -> BaseModel:
        """Raises NotFound when missing."""
        return self._run(lambda s: catalog.get_base_model(s, name), write=False)

    def list_base_models(self) -> list[BaseModel]:
        """All base models, by name."""
        return self._run(catalog.list_base_models, write=False)

    def register_task(self, name: str, description: str | None = None) -> Task:
        """Get or create a task. Raises InvalidName on a bad name."""
        validate_name(name, "task name")
        return self._run(lambda s: catalog.register_task(s, name, description))

    def get_task(self, name: str) -> Task:
        """Raises NotFound when missing."""
        return self._run(lambda s: catalog.get_task(s, name), write=False)

    def list_tasks(self) -> list[Task]:
        """All tasks, by name."""
        return self._run(catalog.list_tasks, write=False)

    def register_adapter(
        self, name: str, task: str, base_model: str, description: str | None = None
    ) -> Adapter:
        """Get or create an adapter for ``task`` on ``base_model`` (both must be registered).

        Raises:
            InvalidName: bad name.
            NotFound: the task or base model is not registered.
            Conflict: the adapter exists for a different task or base model.
        """
        validate_name(name, "adapter name")
        return self._run(lambda s: catalog.register_adapter(s, name, task, base_model, description))

    def get_adapter(self, name: str) -> Adapter:
        """Raises NotFound when missing."""
        return self._run(lambda s: catalog.get_adapter(s, name), write=False)

    def list_adapters(
        self, *, task: str | None = None, base_model: str | None = None
    ) -> list[Adapter]:
        """Adapters, by name, optionally only those of one task and/or base model."""
        return self._run(lambda s: catalog.list_adapters(s, task, base_model), write=False)

    # ---- Versions (registry.versions) ------------------------------------------------------------

    def register_version(self, adapter: str, artifact_path: str | Path, **fields: Any) -> AdapterVersion:
        return versions.register_version(self._run, self.artifacts, adapter, artifact_path, **fields)

    _take_signature(register_version, versions.register_version, bound=2)

    def get_version(
        self, ref: RefLike, number: int | None = None, *, alias: str | None = None
    ) -> AdapterVersion:
        """One version by reference.

        Args:
            ref: ``"ADAPTER:NUMBER"``, ``"ADAPTER@ALIAS"``, ``"ADAPTER"`` (latest), a
                :class:`VersionRef`, or an adapter name when ``number`` or ``alias`` is given.
            number: version number within the adapter named by ``ref``.
            alias: alias of the adapter named by ``ref``.

        Raises:
            NotFound: unknown adapter, number or alias (the message lists what exists).
            InvalidName: malformed reference.
        """
        vref = versions.resolve_ref(ref, number, alias)
        return self._run(lambda s: versions.get(s, vref), write=False)

    def list_versions(self, adapter: str) -> list[AdapterVersion]:
        """All versions of one adapter, by number. Raises NotFound for an unknown adapter."""
        return self.search_versions(adapter=adapter)

    def search_versions(self, **filters: Any) -> list[AdapterVersion]:
        return search.search_versions(self._run, **filters)

    _take_signature(search_versions, search.search_versions, bound=1)

    def delete_version(self, ref: RefLike, *, delete_artifact: bool = True) -> AdapterVersion:
        """Delete a version nothing depends on.

        Args:
            ref: the version.
            delete_artifact: also remove its artifact when no other version shares the hash.

        Returns:
            The deleted version, as it was.

        Raises:
            Conflict: other versions derive from it (named with their relation), or an alias
                other than ``latest`` points at it.
        """
        entity = self._run(lambda s: versions.delete_row(s, ref))
        if delete_artifact:
            with self.artifacts.lock(entity.sha256):
                versions.remove_artifact_if_unreferenced(self._run, self.artifacts, entity.sha256)
        return entity

    # ---- Lineage (registry.lineage) --------------------------------------------------------------

    def add_lineage(self, child: RefLike, parent: RefLike, relation: str) -> None:
        """Record ``child --relation--> parent`` between existing versions.

        Raises:
            Conflict: the edge would close a cycle (the message gives the path), or
                ``child`` and ``parent`` are the same version.
            AlreadyExists: an edge between the two already exists.
        """
        validate_relation(relation)
        self._run(lambda s: lineage.add_lineage(s, self.dialect, child, parent, relation))

    def ancestors(self, ref: RefLike, *, max_depth: int | None = None) -> list[LineageEntry]:
        """Versions ``ref`` derives from, transitively: one entry per edge walked.

        Returns:
            Entries ordered by depth, then version; ``depth`` is the shortest distance from
            ``ref`` at which the edge was reached.
        """
        return self._run(lambda s: lineage.ancestors(s, ref, max_depth), write=False)

    def descendants(self, ref: RefLike, *, max_depth: int | None = None) -> list[LineageEntry]:
        """Versions derived from ``ref``, transitively (see :meth:`ancestors`)."""
        return self._run(lambda s: lineage.descendants(s, ref, max_depth), write=False)

    # ---- Aliases, tags, metadata updates (registry.labels) ---------------------------------------

    def set_alias(self, adapter: str, alias: str, number: int) -> AdapterVersion:
        """Point ``adapter@alias`` at version ``number`` (creating or moving the alias).

        Raises:
            InvalidName: bad alias, or ``latest`` (reserved: it always means the highest number).
            NotFound: unknown adapter or version.
        """
        _validated_alias(alias)
        return self._run(lambda s: labels.set_alias(s, adapter, alias, number))

    def delete_alias(self, adapter: str, alias: str) -> None:
        """Remove ``adapter@alias``. Raises NotFound when it does not exist."""
        _validated_alias(alias)
        self._run(lambda s: labels.delete_alias(s, adapter, alias))

    def list_aliases(self, adapter: str) -> dict[str, int]:
        """Alias -> version number for one adapter, ``latest`` included when it has versions."""
        return self._run(lambda s: labels.list_aliases(s, adapter), write=False)

    def set_tag(self, ref: RefLike, key: str, value: str) -> AdapterVersion:
        """Set (or overwrite) a tag on a version. Raises InvalidName/InvalidValue, NotFound."""
        tags = _validated_tags({key: value})
        return self._run(lambda s: labels.set_tag(s, ref, key, tags[key]))

    def delete_tag(self, ref: RefLike, key: str) -> None:
        """Remove a tag. Raises NotFound when the version lacks it."""
        self._run(lambda s: labels.delete_tag(s, ref, key))

    def set_mlflow_run_id(self, ref: RefLike, run_id: str | None) -> AdapterVersion:
        """Attach (or clear, with ``None``) the MLflow run id of a version."""
        _validated_run_id(run_id)
        return self._run(lambda s: labels.set_mlflow_run_id(s, ref, run_id))

    def log_metrics(self, ref: RefLike, metrics: Mapping[str, float]) -> AdapterVersion:
        """Merge metrics into a version's metrics (new values overwrite same-named ones)."""
        new = _validated_metrics(metrics)
        return self._run(lambda s: labels.log_metrics(s, ref, new))

    # ---- Artifacts: fetch, gc, verify ------------------------------------------------------------

    def fetch_artifact(self, ref: RefLike) -> Path:
        """Verify a version's artifact and return its directory.

        Raises:
            HashMismatch: the files changed or vanished since registration (expected/actual/path).
        """
        v = self.get_version(ref)
        return self.artifacts.fetch(v.artifact_location, v.sha256)

    def gc(self, **options: Any) -> GcReport:
        """Find (and with ``apply=True`` remove) orphan objects, staging leftovers and rows whose
        artifact is missing; a dry run by default. Options and safety rules:
        :func:`registry.gc.collect` (an ``s3://`` root: :func:`registry.s3gc.collect`)."""
        from registry import s3gc  # the object-store root's own listing rules
        from registry.s3store import S3ArtifactStore

        collect = s3gc.collect if isinstance(self.artifacts, S3ArtifactStore) else gc_mod.collect
        return collect(
            self.artifacts,  # type: ignore[arg-type]
            self.search_versions(),
            lambda sha256: versions.is_referenced(self._run, sha256),
            lambda ref: self.delete_version(ref, delete_artifact=False),
            **options,
        )

    def verify(
        self, ref: RefLike | None = None, *, progress: bool = False
    ) -> list[VerificationResult]:
        """Re-hash the artifact of one version (``ref``) or of every version.

        Never raises for a bad artifact: each result says ``ok`` or why not.

        Args:
            ref: one version; ``None`` for all.
            progress: show a progress bar on stderr.
        """
        versions = [self.get_version(ref)] if ref is not None else self.search_versions()
        return [verify_one(self.artifacts, v) for v in progress_bar(versions, progress, "verify")]
