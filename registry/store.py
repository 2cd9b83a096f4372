"""The registry store: one class, one managed-session context manager.

``RegistryStore`` is the only code that touches rows. Each public method runs one short
transaction through :meth:`RegistryStore._session` (commit on success, roll back on error,
database errors translated into :mod:`registry.errors`) and returns plain entities.

Concurrency, in one place:

* Version numbers come from ``adapters.last_version``, bumped by
  ``UPDATE ... SET last_version = last_version + 1 RETURNING``. On PostgreSQL that UPDATE holds
  the adapter's row lock until commit; on SQLite every write transaction is ``BEGIN IMMEDIATE``.
  Either way, concurrent registrations of one adapter queue up and get 1, 2, 3, ... with no gaps
  and no reuse after a delete. The unique (adapter_id, number) constraint backs this up, and any
  unique violation (also from get-or-create races) is retried a few times.
* Artifacts are published before the row commits, under a per-hash file lock held until the
  commit; when the insert fails and no row references the hash, the artifact is removed again.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Integer, delete, exists, func, literal_column, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from registry import migrate
from registry import gc as gc_mod
from registry.artifacts import ArtifactStore
from registry.gc import GcReport
from registry.db import WRITE_OPTION, default_artifact_root, default_url, make_engine, safe_url
from registry.entities import (
    Adapter,
    AdapterVersion,
    BaseModel,
    LineageEntry,
    Task,
    VerificationResult,
)
from registry.errors import (
    AlreadyExists,
    Conflict,
    DatabaseError,
    HashMismatch,
    InvalidName,
    InvalidValue,
    NotFound,
    RegistryError,
)
from registry.names import (
    LATEST,
    VersionRef,
    parse_ref,
    validate_base_model_name,
    validate_name,
    validate_relation,
)
from registry.rows import (
    SqlAdapter,
    SqlAdapterVersion,
    SqlAlias,
    SqlBaseModel,
    SqlLineageEdge,
    SqlTask,
    SqlVersionTag,
)

T = TypeVar("T")
RefLike = str | VersionRef

METHOD_RULE = r"^[a-z][a-z0-9_]{0,31}$"
METRIC_RULE = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$"
RUN_ID_RULE = r"^[A-Za-z0-9_-]{1,64}$"
MAX_TAG_VALUE = 1024
MAX_LINEAGE_DEPTH = 10_000
"""Walks stop here: a guard against a cycle planted in the database behind the store's back."""

_WRITE_ATTEMPTS = 8
_PG_LINEAGE_LOCK = 0x6B726F6E636C02  # serialises cycle checks with edge inserts on PostgreSQL


class _Retry(Exception):
    """Internal: a transient database failure; the whole transaction is run again."""

    def __init__(self, error: RegistryError) -> None:
        super().__init__(error.message)
        self.error = error


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _utc(dt: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt


class RegistryStore:
    """Adapter registry over SQLite (default) or PostgreSQL, with content-addressed artifacts.

    Args:
        url: SQLAlchemy URL; default ``$KRONCL_REGISTRY_URL`` or ``sqlite:///runs/registry.db``.
        artifact_root: directory for artifacts; default ``$KRONCL_ARTIFACT_ROOT`` or
            ``registry_artifacts/`` beside the SQLite file.
        auto_upgrade: migrate an empty or older database to this code's schema on open.
        echo: log SQL.

    Raises:
        SchemaTooNew: the database was migrated by newer code.
        InvalidValue: bad URL, or no artifact root can be derived (PostgreSQL without one).
        DatabaseError: the database cannot be reached.
    """

    def __init__(
        self,
        url: str | None = None,
        artifact_root: str | Path | None = None,
        *,
        auto_upgrade: bool = True,
        echo: bool = False,
    ) -> None:
        self.url = url or default_url()
        self._engine = make_engine(self.url, echo=echo)
        self._write_engine = self._engine.execution_options(**{WRITE_OPTION: True})
        self.dialect = self._engine.dialect.name
        root = Path(artifact_root) if artifact_root is not None else default_artifact_root(self.url)
        self.artifacts = ArtifactStore(root)
        try:
            self.schema_revision = migrate.ensure_schema(self._write_engine, upgrade=auto_upgrade)
        except SQLAlchemyError as e:
            self._engine.dispose()
            raise self._translate(e) from e
        except BaseException:
            self._engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"RegistryStore({safe_url(self.url)!r}, artifact_root={str(self.artifacts.root)!r})"

    def close(self) -> None:
        """Release pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> RegistryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ============================================================================================
    # Session management and error translation
    # ============================================================================================

    @contextmanager
    def _session(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any error.

        Database exceptions leave as :class:`RegistryError` subclasses (transient ones as the
        internal ``_Retry``, which :meth:`_run` handles).
        """
        session = Session(self._write_engine if write else self._engine, expire_on_commit=False)
        try:
            yield session
            session.commit()
        except SQLAlchemyError as e:
            session.rollback()
            err = self._translate(e)
            if err.retryable:
                raise _Retry(err) from e
            raise err from e
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def _run(self, fn: Callable[[Session], T], *, write: bool = True) -> T:
        """Run ``fn`` in a managed session, retrying transient failures with jittered backoff."""
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                with self._session(write=write) as session:
                    return fn(session)
            except _Retry as r:
                if attempt == _WRITE_ATTEMPTS - 1:
                    raise r.error from r.__cause__
                time.sleep(random.uniform(0.005, 0.05) * (2**attempt))
        raise AssertionError("unreachable")

    def _translate(self, e: SQLAlchemyError) -> RegistryError:
        """Map a SQLAlchemy/DBAPI exception to a registry error (``retryable`` set if transient)."""
        orig = getattr(e, "orig", None)
        sqlstate = getattr(orig, "sqlstate", None) or ""
        msg = (str(orig if orig is not None else e).strip().splitlines() or [type(e).__name__])[0]
        err: RegistryError
        retryable = False
        if isinstance(e, IntegrityError):
            if sqlstate == "23505" or msg.startswith("UNIQUE constraint failed"):
                err, retryable = AlreadyExists(f"record already exists: {msg}"), True
            elif sqlstate == "23503" or msg.startswith("FOREIGN KEY constraint failed"):
                err = Conflict(f"a referenced record is missing or still referenced: {msg}")
            elif sqlstate == "23514" or msg.startswith("CHECK constraint failed"):
                err = InvalidValue(f"value rejected by the database: {msg}")
            else:
                err = Conflict(f"integrity error: {msg}")
        elif (
            sqlstate in ("40001", "40P01")
            or "database is locked" in msg
            or "database is busy" in msg
        ):
            err, retryable = DatabaseError(f"database busy: {msg}"), True
        elif isinstance(e, DBAPIError):
            err = DatabaseError(f"database error on {safe_url(self.url)!r}: {msg}")
        else:
            err = DatabaseError(
                f"database error on {safe_url(self.url)!r}: {type(e).__name__}: {msg}"
            )
        err.retryable = retryable
        return err

    # ============================================================================================
    # Row lookups (inside a session)
    # ============================================================================================

    @staticmethod
    def _base_model_row(s: Session, name: str) -> SqlBaseModel:
        row = s.scalar(select(SqlBaseModel).where(SqlBaseModel.name == name))
        if row is None:
            raise NotFound(f"base model {name!r} not found; register it with register_base_model()")
        return row

    @staticmethod
    def _task_row(s: Session, name: str) -> SqlTask:
        row = s.scalar(select(SqlTask).where(SqlTask.name == name))
        if row is None:
            raise NotFound(f"task {name!r} not found; register it with register_task()")
        return row

    @staticmethod
    def _adapter_row(s: Session, name: str) -> SqlAdapter:
        row = s.scalar(select(SqlAdapter).where(SqlAdapter.name == name))
        if row is None:
            raise NotFound(f"adapter {name!r} not found; register it with register_adapter()")
        return row

    def _version_row(self, s: Session, ref: RefLike) -> SqlAdapterVersion:
        vref = self._as_ref(ref)
        adapter = self._adapter_row(s, vref.adapter)
        q = select(SqlAdapterVersion).where(SqlAdapterVersion.adapter_id == adapter.id)
        if vref.number is not None:
            row = s.scalar(q.where(SqlAdapterVersion.number == vref.number))
            if row is None:
                numbers = s.scalars(
                    select(SqlAdapterVersion.number)
                    .where(SqlAdapterVersion.adapter_id == adapter.id)
                    .order_by(SqlAdapterVersion.number)
                ).all()
                shown = ", ".join(map(str, numbers[-20:])) or "none"
                raise NotFound(
                    f"version {str(vref)!r} not found; "
                    f"adapter {vref.adapter!r} has versions: {shown}"
                )
            return row
        if vref.alias == LATEST:
            row = s.scalar(q.order_by(SqlAdapterVersion.number.desc()).limit(1))
            if row is None:
                raise NotFound(
                    f"adapter {vref.adapter!r} has no versions, "
                    f"so {str(vref)!r} resolves to nothing"
                )
            return row
        alias = s.scalar(
            select(SqlAlias).where(SqlAlias.adapter_id == adapter.id, SqlAlias.name == vref.alias)
        )
        if alias is None:
            names = sorted(
                s.scalars(select(SqlAlias.name).where(SqlAlias.adapter_id == adapter.id))
            )
            raise NotFound(
                f"alias {vref.alias!r} not found for adapter {vref.adapter!r}; "
                f"its aliases: {', '.join([LATEST, *names])}"
            )
        return s.get_one(SqlAdapterVersion, alias.version_id)

    @staticmethod
    def _as_ref(ref: RefLike) -> VersionRef:
        return ref if isinstance(ref, VersionRef) else parse_ref(ref)

    # ============================================================================================
    # Row -> entity
    # ============================================================================================

    @staticmethod
    def _base_model_entity(row: SqlBaseModel) -> BaseModel:
        return BaseModel(row.name, row.revision, row.description, _utc(row.created_at))  # type: ignore[arg-type]

    @staticmethod
    def _task_entity(row: SqlTask) -> Task:
        return Task(row.name, row.description, _utc(row.created_at))  # type: ignore[arg-type]

    @staticmethod
    def _adapter_entity(row: SqlAdapter) -> Adapter:
        return Adapter(
            name=row.name,
            task=row.task.name,
            base_model=row.base_model.name,
            description=row.description,
            created_at=_utc(row.created_at),  # type: ignore[arg-type]
            latest_version=row.last_version,
        )

    @staticmethod
    def _version_entities(s: Session, rows: Sequence[SqlAdapterVersion]) -> list[AdapterVersion]:
        """Build entities for many rows with two extra queries (aliases, latest numbers)."""
        if not rows:
            return []
        ids = [r.id for r in rows]
        adapter_ids = {r.adapter_id for r in rows}
        aliases: dict[int, list[str]] = {}
        for version_id, name in s.execute(
            select(SqlAlias.version_id, SqlAlias.name).where(SqlAlias.version_id.in_(ids))
        ):
            aliases.setdefault(version_id, []).append(name)
        latest: dict[int, int] = {
            adapter_id: top
            for adapter_id, top in s.execute(
                select(SqlAdapterVersion.adapter_id, func.max(SqlAdapterVersion.number))
                .where(SqlAdapterVersion.adapter_id.in_(adapter_ids))
                .group_by(SqlAdapterVersion.adapter_id)
            )
        }
        out = []
        for r in rows:
            names = sorted(aliases.get(r.id, []))
            if latest.get(r.adapter_id) == r.number:
                names.insert(0, LATEST)
            out.append(_entity(r, tuple(names)))
        return out

    def _version_entity(self, s: Session, row: SqlAdapterVersion) -> AdapterVersion:
        return self._version_entities(s, [row])[0]

    # ============================================================================================
    # Base models, tasks, adapters
    # ============================================================================================

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
        if revision is not None and (not isinstance(revision, str) or not 0 < len(revision) <= 256):
            raise InvalidValue(
                f"invalid base model revision {revision!r}: expected 1-256 characters"
            )

        def op(s: Session) -> BaseModel:
            row = s.scalar(select(SqlBaseModel).where(SqlBaseModel.name == name))
            if row is None:
                row = SqlBaseModel(
                    name=name, revision=revision, description=description, created_at=_utcnow()
                )
                s.add(row)
                s.flush()
            elif revision is not None:
                if row.revision is None:
                    row.revision = revision
                elif row.revision != revision:
                    raise Conflict(
                        f"base model {name!r} is registered with revision {row.revision!r}, not "
                        f"{revision!r}; register the other revision under a different name"
                    )
            return self._base_model_entity(row)

        return self._run(op)

    def get_base_model(self, name: str) -> BaseModel:
        """Raises NotFound when missing."""
        return self._run(
            lambda s: self._base_model_entity(self._base_model_row(s, name)), write=False
        )

    def list_base_models(self) -> list[BaseModel]:
        """All base models, by name."""
        return self._run(
            lambda s: [
                self._base_model_entity(r)
                for r in s.scalars(select(SqlBaseModel).order_by(SqlBaseModel.name))
            ],
            write=False,
        )

    def register_task(self, name: str, description: str | None = None) -> Task:
        """Get or create a task. Raises InvalidName on a bad name."""
        validate_name(name, "task name")

        def op(s: Session) -> Task:
            row = s.scalar(select(SqlTask).where(SqlTask.name == name))
            if row is None:
                row = SqlTask(name=name, description=description, created_at=_utcnow())
                s.add(row)
                s.flush()
            return self._task_entity(row)

        return self._run(op)

    def get_task(self, name: str) -> Task:
        """Raises NotFound when missing."""
        return self._run(lambda s: self._task_entity(self._task_row(s, name)), write=False)

    def list_tasks(self) -> list[Task]:
        """All tasks, by name."""
        return self._run(
            lambda s: [
                self._task_entity(r) for r in s.scalars(select(SqlTask).order_by(SqlTask.name))
            ],
            write=False,
        )

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

        def op(s: Session) -> Adapter:
            row = s.scalar(select(SqlAdapter).where(SqlAdapter.name == name))
            if row is not None:
                if row.task.name != task or row.base_model.name != base_model:
                    raise Conflict(
                        f"adapter {name!r} exists for task {row.task.name!r} on base model "
                        f"{row.base_model.name!r}, not task {task!r} on {base_model!r}; "
                        "choose another adapter name"
                    )
                return self._adapter_entity(row)
            task_row = self._task_row(s, task)
            model_row = self._base_model_row(s, base_model)
            row = SqlAdapter(
                name=name,
                task=task_row,
                base_model=model_row,
                description=description,
                created_at=_utcnow(),
                last_version=0,
            )
            s.add(row)
            s.flush()
            return self._adapter_entity(row)

        return self._run(op)

    def get_adapter(self, name: str) -> Adapter:
        """Raises NotFound when missing."""
        return self._run(lambda s: self._adapter_entity(self._adapter_row(s, name)), write=False)

    def list_adapters(
        self, *, task: str | None = None, base_model: str | None = None
    ) -> list[Adapter]:
        """Adapters, by name, optionally only those of one task and/or base model."""

        def op(s: Session) -> list[Adapter]:
            q = select(SqlAdapter).join(SqlAdapter.task).join(SqlAdapter.base_model)
            if task is not None:
                q = q.where(SqlTask.name == task)
            if base_model is not None:
                q = q.where(SqlBaseModel.name == base_model)
            return [self._adapter_entity(r) for r in s.scalars(q.order_by(SqlAdapter.name))]

        return self._run(op, write=False)

    # ============================================================================================
    # Versions
    # ============================================================================================

    def register_version(
        self,
        adapter: str,
        artifact_path: str | Path,
        *,
        method: str,
        bits: int = 32,
        a_out: int | None = None,
        a_in: int | None = None,
        r: int | None = None,
        alpha: float | None = None,
        param_count: int | None = None,
        metrics: Mapping[str, float] | None = None,
        config: Mapping[str, Any] | None = None,
        mlflow_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        parents: Sequence[tuple[RefLike, str]] = (),
        aliases: Sequence[str] = (),
        files: Sequence[str] | None = None,
        on_published: Callable[[], None] | None = None,
    ) -> AdapterVersion:
        """Store an artifact and register it as the adapter's next version.

        The artifact is copied, hashed and published (atomically) before the row commits. If
        the row cannot be committed, the artifact is removed again unless another version
        already references the same content, so a failed call leaves neither row nor file.

        Args:
            adapter: registered adapter name.
            artifact_path: a directory of files (e.g. ``adapter.safetensors`` +
                ``adapter_config.json``) or a single file.
            method: adapter method, e.g. ``"kron"`` or ``"lora"``.
            bits: weight precision as stored (32, 16, 8, 4, ...).
            a_out, a_in: Kronecker factor shape (``None`` for non-Kronecker methods).
            r: rank; alpha: scale numerator; param_count: trainable parameter count.
            metrics: name -> finite number, e.g. ``{"acc": 0.61}``.
            config: JSON-serialisable dict (training / adapter config).
            mlflow_run_id: the MLflow run that produced the artifact.
            tags: free key -> value strings.
            parents: ``(version reference, relation)`` lineage edges from the new version,
                e.g. ``[("arc-easy:3", "continued_from")]``.
            aliases: aliases to point at the new version (``latest`` needs no setting).
            files: relative names inside the directory ``artifact_path`` that make up the
                artifact; nothing else there is read or stored (stray ``.*.tmp`` files from an
                interrupted write stay out). ``None``: every file under it. The hash equals
                ``hash_artifact(artifact_path, files=files)``.
            on_published: called with no arguments once the artifact is complete under
                ``objects/`` (holding its hash lock) and before the version row is inserted or
                committed, i.e. while no version exists yet (a fault-injection point). If it
                raises, no row is written and the artifact is removed unless another version
                references it; the exception propagates.

        Returns:
            The new version.

        Raises:
            NotFound: adapter, parent version, artifact path or a listed file missing.
            InvalidName: bad method, relation, tag key, alias or metric name.
            InvalidValue: out-of-range numbers, non-JSON config, symlinks, empty artifact, or a
                ``files`` entry that is absolute, has ``..``, is not a regular file or repeats.
        """
        fields = _validated_version_fields(
            method=method,
            bits=bits,
            a_out=a_out,
            a_in=a_in,
            r=r,
            alpha=alpha,
            param_count=param_count,
            metrics=metrics,
            config=config,
            mlflow_run_id=mlflow_run_id,
            tags=tags,
        )
        parent_refs = [(self._as_ref(ref), validate_relation(rel)) for ref, rel in parents]
        alias_names = [_validated_alias(a) for a in aliases]
        validate_name(adapter, "adapter name")

        staging = self.artifacts.staged(artifact_path, files)
        with staging as staged, self.artifacts.lock(staged.sha256):
            stored = self.artifacts.publish(staged)
            try:
                if on_published is not None:
                    on_published()
                return self._run(
                    lambda s: self._insert_version(
                        s,
                        adapter,
                        fields,
                        stored.location,
                        stored.sha256,
                        stored.size_bytes,
                        parent_refs,
                        alias_names,
                    )
                )
            except BaseException:
                self._remove_artifact_if_unreferenced(stored.sha256)
                raise

    def _insert_version(
        self,
        s: Session,
        adapter: str,
        fields: dict[str, Any],
        location: str,
        sha256: str,
        size_bytes: int,
        parents: list[tuple[VersionRef, str]],
        aliases: list[str],
    ) -> AdapterVersion:
        adapter_row = self._adapter_row(s, adapter)
        parent_rows: dict[int, tuple[SqlAdapterVersion, str]] = {}
        for ref, relation in parents:
            prow = self._version_row(s, ref)
            if prow.id in parent_rows:
                raise InvalidValue(f"parent {str(ref)!r} is listed twice in parents=")
            parent_rows[prow.id] = (prow, relation)
        number = self._allocate_number(s, adapter_row.id)
        row = SqlAdapterVersion(
            adapter=adapter_row,
            number=number,
            artifact_location=location,
            sha256=sha256,
            size_bytes=size_bytes,
            created_at=_utcnow(),
            **{k: v for k, v in fields.items() if k != "tags"},
        )
        row.tags = [SqlVersionTag(key=k, value=v) for k, v in fields["tags"].items()]
        s.add(row)
        s.flush()
        for prow, relation in parent_rows.values():
            s.add(SqlLineageEdge(child_id=row.id, parent_id=prow.id, relation=relation))
        for name in aliases:
            self._upsert_alias(s, adapter_row.id, name, row.id)
        s.flush()
        # Built without queries: on PostgreSQL the adapter row stays locked until commit. A new
        # number is the highest ever allocated, so the version is the adapter's latest.
        return _entity(row, (LATEST, *sorted(set(aliases))))

    @staticmethod
    def _allocate_number(s: Session, adapter_id: int) -> int:
        """Next version number; the UPDATE's row lock (PG) / BEGIN IMMEDIATE (SQLite) serialises
        concurrent writers of the same adapter until commit."""
        return s.execute(
            update(SqlAdapter)
            .where(SqlAdapter.id == adapter_id)
            .values(last_version=SqlAdapter.last_version + 1)
            .returning(SqlAdapter.last_version)
            .execution_options(synchronize_session=False)
        ).scalar_one()

    def _is_referenced(self, sha256: str) -> bool:
        """Whether any version row references this content hash (a fresh read)."""
        return bool(
            self._run(
                lambda s: s.scalar(select(exists().where(SqlAdapterVersion.sha256 == sha256))),
                write=False,
            )
        )

    def _remove_artifact_if_unreferenced(self, sha256: str) -> None:
        """Remove an artifact no version references (caller holds ``artifacts.lock(sha256)``)."""
        try:
            if not self._is_referenced(sha256):
                self.artifacts.remove(sha256)
        except RegistryError:
            # The database is unreachable: keep the file, an orphan is safer than a lost artifact.
            pass

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
        if number is not None and alias is not None:
            raise InvalidValue("pass number= or alias=, not both")
        if number is not None or alias is not None:
            name = validate_name(ref if isinstance(ref, str) else ref.adapter, "adapter name")
            if number is not None:
                if not isinstance(number, int) or number < 1:
                    raise InvalidValue(f"invalid version number {number!r}: expected an int >= 1")
                vref = VersionRef(name, number=number)
            else:
                vref = VersionRef(name, alias=validate_name(alias, "alias"))
        else:
            vref = self._as_ref(ref)
        return self._run(lambda s: self._version_entity(s, self._version_row(s, vref)), write=False)

    def list_versions(self, adapter: str) -> list[AdapterVersion]:
        """All versions of one adapter, by number. Raises NotFound for an unknown adapter."""
        return self.search_versions(adapter=adapter)

    def search_versions(
        self,
        *,
        adapter: str | None = None,
        task: str | None = None,
        base_model: str | None = None,
        method: str | None = None,
        bits: int | None = None,
        tags: Mapping[str, str | None] | None = None,
        metric: str | None = None,
        min_value: float | None = None,
        max_value: float | None = None,
        min_metrics: Mapping[str, float] | None = None,
        mlflow_run_id: str | None = None,
        limit: int | None = None,
    ) -> list[AdapterVersion]:
        """Versions matching every given filter, ordered by adapter name then number.

        Args:
            adapter, task, base_model, method, bits, mlflow_run_id: exact matches.
            tags: key -> value that must all be set (value ``None``: the key only).
            metric: metric name for ``min_value`` / ``max_value`` (inclusive bounds); versions
                without the metric never match a bound.
            min_metrics: more lower bounds, name -> minimum.
            limit: at most this many results.

        Raises:
            NotFound: ``adapter``, ``task`` or ``base_model`` names nothing registered (a typo
                would otherwise look like an empty result).
            InvalidValue: a bound without ``metric``.
        """
        if (min_value is not None or max_value is not None) and metric is None:
            raise InvalidValue("min_value/max_value need metric= naming the metric to compare")
        bounds: list[tuple[str, float | None, float | None]] = []
        if metric is not None:
            bounds.append((_validated_metric_name(metric), min_value, max_value))
        for name, lo in (min_metrics or {}).items():
            bounds.append((_validated_metric_name(name), float(lo), None))

        def op(s: Session) -> list[AdapterVersion]:
            if adapter is not None:
                self._adapter_row(s, adapter)
            if task is not None:
                self._task_row(s, task)
            if base_model is not None:
                self._base_model_row(s, base_model)
            V = SqlAdapterVersion
            q = (
                select(V).join(V.adapter).join(SqlAdapter.task).join(SqlAdapter.base_model)
            )
            if adapter is not None:
                q = q.where(SqlAdapter.name == adapter)
            if task is not None:
                q = q.where(SqlTask.name == task)
            if base_model is not None:
                q = q.where(SqlBaseModel.name == base_model)
            if method is not None:
                q = q.where(V.method == method)
            if bits is not None:
                q = q.where(V.bits == bits)
            if mlflow_run_id is not None:
                q = q.where(V.mlflow_run_id == mlflow_run_id)
            for key, value in (tags or {}).items():
                cond = [SqlVersionTag.version_id == V.id, SqlVersionTag.key == key]
                if value is not None:
                    cond.append(SqlVersionTag.value == value)
                q = q.where(exists().where(*cond))
            for name, lo, hi in bounds:
                val = V.metrics[name].as_float()
                if lo is not None:
                    q = q.where(val >= lo)
                if hi is not None:
                    q = q.where(val <= hi)
            q = q.order_by(SqlAdapter.name, V.number)
            if limit is not None:
                q = q.limit(limit)
            return self._version_entities(s, s.scalars(q).unique().all())

        return self._run(op, write=False)

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

        def op(s: Session) -> AdapterVersion:
            row = self._version_row(s, ref)
            entity = self._version_entity(s, row)
            dependents = s.execute(
                select(SqlAdapter.name, SqlAdapterVersion.number, SqlLineageEdge.relation)
                .join(SqlAdapterVersion, SqlAdapterVersion.id == SqlLineageEdge.child_id)
                .join(SqlAdapter, SqlAdapter.id == SqlAdapterVersion.adapter_id)
                .where(SqlLineageEdge.parent_id == row.id)
                .order_by(SqlAdapter.name, SqlAdapterVersion.number)
            ).all()
            if dependents:
                listed = ", ".join(f"{a}:{n} ({rel})" for a, n, rel in dependents)
                raise Conflict(
                    f"cannot delete {entity.ref}: versions depend on it: {listed}; "
                    "delete those first"
                )
            pinned = [a for a in entity.aliases if a != LATEST]
            if pinned:
                raise Conflict(
                    f"cannot delete {entity.ref}: alias(es) {', '.join(pinned)} point at it; "
                    "move or delete them first"
                )
            s.execute(
                delete(SqlLineageEdge)
                .where(SqlLineageEdge.child_id == row.id)
                .execution_options(synchronize_session=False)
            )
            s.delete(row)  # its tags go with it (ORM cascade, ON DELETE CASCADE as backup)
            return entity

        entity = self._run(op)
        if delete_artifact:
            with self.artifacts.lock(entity.sha256):
                self._remove_artifact_if_unreferenced(entity.sha256)
        return entity

    # ============================================================================================
    # Lineage
    # ============================================================================================

    def add_lineage(self, child: RefLike, parent: RefLike, relation: str) -> None:
        """Record ``child --relation--> parent`` between existing versions.

        Raises:
            Conflict: the edge would close a cycle (the message gives the path), or
                ``child`` and ``parent`` are the same version.
            AlreadyExists: an edge between the two already exists.
        """
        validate_relation(relation)

        def op(s: Session) -> None:
            if self.dialect == "postgresql":
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LINEAGE_LOCK})
            crow, prow = self._version_row(s, child), self._version_row(s, parent)
            cref, pref = f"{crow.adapter.name}:{crow.number}", f"{prow.adapter.name}:{prow.number}"
            if crow.id == prow.id:
                raise Conflict(f"cannot link {cref} to itself: lineage must stay acyclic")
            if s.get(SqlLineageEdge, (crow.id, prow.id)) is not None:
                raise AlreadyExists(f"lineage edge {cref} -> {pref} already exists")
            # A cycle appears iff the child is already an ancestor of the parent.
            path = _lineage_path(self._walk(s, prow.id, up=True, max_depth=None), pref, cref)
            if path:
                raise Conflict(
                    f"cannot add {cref} --{relation}--> {pref}: {pref} already derives from "
                    f"{cref} ({' -> '.join(path)}), so the edge would make a cycle"
                )
            s.add(SqlLineageEdge(child_id=crow.id, parent_id=prow.id, relation=relation))

        self._run(op)

    def ancestors(self, ref: RefLike, *, max_depth: int | None = None) -> list[LineageEntry]:
        """Versions ``ref`` derives from, transitively: one entry per edge walked.

        Returns:
            Entries ordered by depth, then version; ``depth`` is the shortest distance from
            ``ref`` at which the edge was reached.
        """
        return self._run(
            lambda s: self._walk(s, self._version_row(s, ref).id, up=True, max_depth=max_depth),
            write=False,
        )

    def descendants(self, ref: RefLike, *, max_depth: int | None = None) -> list[LineageEntry]:
        """Versions derived from ``ref``, transitively (see :meth:`ancestors`)."""
        return self._run(
            lambda s: self._walk(s, self._version_row(s, ref).id, up=False, max_depth=max_depth),
            write=False,
        )

    @staticmethod
    def _walk(s: Session, start_id: int, *, up: bool, max_depth: int | None) -> list[LineageEntry]:
        """Recursive CTE over lineage edges from ``start_id`` (up: towards parents)."""
        E = SqlLineageEdge
        near, far = (E.child_id, E.parent_id) if up else (E.parent_id, E.child_id)
        cap = min(max_depth if max_depth is not None else MAX_LINEAGE_DEPTH, MAX_LINEAGE_DEPTH)
        if cap < 1:
            return []
        walk = (
            select(
                near.label("via"),
                far.label("node"),
                E.relation.label("relation"),
                literal_column("1", Integer).label("depth"),
            )
            .where(near == start_id)
            .cte("walk", recursive=True)
        )
        step = (
            select(near, far, E.relation, walk.c.depth + 1)
            .join(walk, near == walk.c.node)
            .where(walk.c.depth < cap)
        )
        walk = walk.union(step)
        edges = s.execute(
            select(walk.c.via, walk.c.node, walk.c.relation, func.min(walk.c.depth)).group_by(
                walk.c.via, walk.c.node, walk.c.relation
            )
        ).all()
        ids = {i for via, node, _, _ in edges for i in (via, node)}
        names = {
            vid: f"{a}:{n}"
            for vid, a, n in s.execute(
                select(SqlAdapterVersion.id, SqlAdapter.name, SqlAdapterVersion.number)
                .join(SqlAdapter, SqlAdapter.id == SqlAdapterVersion.adapter_id)
                .where(SqlAdapterVersion.id.in_(ids))
            )
        }
        # Report each edge at the depth its far end is first reached.
        node_depth: dict[int, int] = {}
        for _, node, _, depth in edges:
            node_depth[node] = min(depth, node_depth.get(node, depth))
        entries = [
            LineageEntry(version=names[node], relation=rel, depth=node_depth[node], via=names[via])
            for via, node, rel, _ in edges
        ]
        return sorted(entries, key=lambda e: (e.depth, e.version, e.via))

    # ============================================================================================
    # Aliases, tags, metadata updates
    # ============================================================================================

    @staticmethod
    def _upsert_alias(s: Session, adapter_id: int, name: str, version_id: int) -> None:
        row = s.get(SqlAlias, (adapter_id, name))
        if row is None:
            s.add(SqlAlias(adapter_id=adapter_id, name=name, version_id=version_id))
        else:
            row.version_id = version_id

    def set_alias(self, adapter: str, alias: str, number: int) -> AdapterVersion:
        """Point ``adapter@alias`` at version ``number`` (creating or moving the alias).

        Raises:
            InvalidName: bad alias, or ``latest`` (reserved: it always means the highest number).
            NotFound: unknown adapter or version.
        """
        _validated_alias(alias)

        def op(s: Session) -> AdapterVersion:
            row = self._version_row(
                s, VersionRef(validate_name(adapter, "adapter name"), number=number)
            )
            self._upsert_alias(s, row.adapter_id, alias, row.id)
            s.flush()
            return self._version_entity(s, row)

        return self._run(op)

    def delete_alias(self, adapter: str, alias: str) -> None:
        """Remove ``adapter@alias``. Raises NotFound when it does not exist."""
        _validated_alias(alias)

        def op(s: Session) -> None:
            arow = self._adapter_row(s, adapter)
            row = s.get(SqlAlias, (arow.id, alias))
            if row is None:
                raise NotFound(f"alias {alias!r} not found for adapter {adapter!r}")
            s.delete(row)

        self._run(op)

    def list_aliases(self, adapter: str) -> dict[str, int]:
        """Alias -> version number for one adapter, ``latest`` included when it has versions."""

        def op(s: Session) -> dict[str, int]:
            arow = self._adapter_row(s, adapter)
            out: dict[str, int] = {}
            top = s.scalar(
                select(func.max(SqlAdapterVersion.number)).where(
                    SqlAdapterVersion.adapter_id == arow.id
                )
            )
            if top is not None:
                out[LATEST] = top
            for name, number in s.execute(
                select(SqlAlias.name, SqlAdapterVersion.number)
                .join(SqlAdapterVersion, SqlAdapterVersion.id == SqlAlias.version_id)
                .where(SqlAlias.adapter_id == arow.id)
                .order_by(SqlAlias.name)
            ):
                out[name] = number
            return out

        return self._run(op, write=False)

    def set_tag(self, ref: RefLike, key: str, value: str) -> AdapterVersion:
        """Set (or overwrite) a tag on a version. Raises InvalidName/InvalidValue, NotFound."""
        tags = _validated_tags({key: value})

        def op(s: Session) -> AdapterVersion:
            row = self._version_row(s, ref)
            tag = s.get(SqlVersionTag, (row.id, key))
            if tag is None:
                row.tags.append(SqlVersionTag(key=key, value=tags[key]))
            else:
                tag.value = tags[key]
            s.flush()
            return self._version_entity(s, row)

        return self._run(op)

    def delete_tag(self, ref: RefLike, key: str) -> None:
        """Remove a tag. Raises NotFound when the version lacks it."""

        def op(s: Session) -> None:
            row = self._version_row(s, ref)
            tag = s.get(SqlVersionTag, (row.id, key))
            if tag is None:
                raise NotFound(f"tag {key!r} not set on {row.adapter.name}:{row.number}")
            row.tags.remove(tag)

        self._run(op)

    def set_mlflow_run_id(self, ref: RefLike, run_id: str | None) -> AdapterVersion:
        """Attach (or clear, with ``None``) the MLflow run id of a version."""
        if run_id is not None and not re.fullmatch(RUN_ID_RULE, str(run_id)):
            raise InvalidValue(f"invalid MLflow run id {run_id!r}: must match {RUN_ID_RULE}")

        def op(s: Session) -> AdapterVersion:
            row = self._version_row(s, ref)
            row.mlflow_run_id = run_id
            s.flush()
            return self._version_entity(s, row)

        return self._run(op)

    def log_metrics(self, ref: RefLike, metrics: Mapping[str, float]) -> AdapterVersion:
        """Merge metrics into a version's metrics (new values overwrite same-named ones)."""
        new = _validated_metrics(metrics)

        def op(s: Session) -> AdapterVersion:
            row = self._version_row(s, ref)
            row.metrics = {**(row.metrics or {}), **new}  # reassign: JSON columns track by identity
            s.flush()
            return self._version_entity(s, row)

        return self._run(op)

    # ============================================================================================
    # Artifacts
    # ============================================================================================

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
        :func:`registry.gc.collect`."""
        return gc_mod.collect(
            self.artifacts,
            self.search_versions(),
            self._is_referenced,
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
        return [self._verify_one(v) for v in _progress(versions, progress, "verify")]

    def _verify_one(self, v: AdapterVersion) -> VerificationResult:
        """One version's result; a bad row (location outside the root, unreadable files) is a
        failed result too, so one bad row never hides the others."""
        try:
            path = str(self.artifacts.path(v.artifact_location))
            actual = self.artifacts.verify(v.artifact_location, v.sha256)
            return VerificationResult(v.ref, True, v.sha256, actual, path)
        except HashMismatch as e:
            return VerificationResult(
                v.ref, False, e.expected, e.actual, e.path, e.message, e.problems
            )
        except (InvalidValue, OSError) as e:
            msg = e.message if isinstance(e, InvalidValue) else str(e)
            return VerificationResult(
                v.ref, False, v.sha256, None, v.artifact_location, msg, (msg,)
            )


# ================================================================================================
# Validation helpers (pure)
# ================================================================================================


def _entity(r: SqlAdapterVersion, aliases: tuple[str, ...]) -> AdapterVersion:
    """Row -> entity; ``r.adapter`` (with task and base model) and ``r.tags`` must be loaded."""
    return AdapterVersion(
        adapter=r.adapter.name,
        number=r.number,
        task=r.adapter.task.name,
        base_model=r.adapter.base_model.name,
        method=r.method,
        a_out=r.a_out,
        a_in=r.a_in,
        r=r.r,
        alpha=r.alpha,
        bits=r.bits,
        param_count=r.param_count,
        artifact_location=r.artifact_location,
        sha256=r.sha256,
        size_bytes=r.size_bytes,
        metrics=dict(r.metrics or {}),
        mlflow_run_id=r.mlflow_run_id,
        config=dict(r.config or {}),
        created_at=_utc(r.created_at),
        tags={t.key: t.value for t in r.tags},
        aliases=aliases,
    )


def _lineage_path(ancestors: Sequence[LineageEntry], start: str, goal: str) -> list[str]:
    """Shortest ``start -> ... -> goal`` path along ancestor entries, ``[]`` when unreachable."""
    parents: dict[str, list[str]] = {}
    for e in ancestors:
        parents.setdefault(e.via, []).append(e.version)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for parent in sorted(parents.get(node, [])):
                if parent not in previous and parent != start:
                    previous[parent] = node
                    nxt.append(parent)
        frontier = nxt
    if goal not in previous:
        return []
    path = [goal]
    while path[-1] != start:
        path.append(previous[path[-1]])
    return path[::-1]


def _progress(items: Sequence[T], enabled: bool, desc: str) -> Sequence[T] | Iterator[T]:
    if not enabled:
        return items
    from tqdm import tqdm  # only the CLI asks for bars; keep the import off the library path

    return tqdm(items, desc=desc, unit="artifact")


def _validated_alias(alias: object) -> str:
    name = validate_name(alias, "alias")
    if name == LATEST:
        raise InvalidName(
            f"alias {LATEST!r} is reserved: it always resolves to the adapter's highest version "
            "number; choose another alias name"
        )
    return name


def _validated_metric_name(name: object) -> str:
    if not isinstance(name, str) or not re.fullmatch(METRIC_RULE, name):
        raise InvalidName(f"invalid metric name {name!r}: must match {METRIC_RULE}")
    return name


def _validated_metrics(metrics: Mapping[str, float] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in (metrics or {}).items():
        _validated_metric_name(name)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise InvalidValue(f"metric {name!r} has value {value!r}: expected a finite number")
        out[name] = float(value)
    return out


def _validated_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (tags or {}).items():
        validate_name(key, "tag key")
        if not isinstance(value, str) or len(value) > MAX_TAG_VALUE:
            raise InvalidValue(
                f"tag {key!r} has value {value!r}: "
                f"expected a string of at most {MAX_TAG_VALUE} chars"
            )
        out[key] = value
    return out


def _positive_int(name: str, value: object, *, allow_zero: bool = False) -> int | None:
    if value is None:
        return None
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidValue(f"{name}={value!r}: expected an int >= {low} or None")
    return value


def _validated_version_fields(
    *,
    method: str,
    bits: int,
    a_out: int | None,
    a_in: int | None,
    r: int | None,
    alpha: float | None,
    param_count: int | None,
    metrics: Mapping[str, float] | None,
    config: Mapping[str, Any] | None,
    mlflow_run_id: str | None,
    tags: Mapping[str, str] | None,
) -> dict[str, Any]:
    """Check every user-supplied version field before any file is written."""
    if not isinstance(method, str) or not re.fullmatch(METHOD_RULE, method):
        raise InvalidName(
            f"invalid method {method!r}: must match {METHOD_RULE} (e.g. 'kron', 'lora')"
        )
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 64:
        raise InvalidValue(f"bits={bits!r}: expected an int in 1..64 (e.g. 32, 16, 8, 4)")
    if alpha is not None and (
        isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha)
    ):
        raise InvalidValue(f"alpha={alpha!r}: expected a finite number or None")
    if mlflow_run_id is not None and not re.fullmatch(RUN_ID_RULE, str(mlflow_run_id)):
        raise InvalidValue(f"invalid MLflow run id {mlflow_run_id!r}: must match {RUN_ID_RULE}")
    cfg = dict(config or {})
    try:
        # Round trip: what comes back from the database must equal what was passed in.
        cfg = json.loads(json.dumps(cfg, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise InvalidValue(f"config is not JSON-serialisable without NaN/inf: {e}") from e
    return {
        "method": method,
        "bits": bits,
        "a_out": _positive_int("a_out", a_out),
        "a_in": _positive_int("a_in", a_in),
        "r": _positive_int("r", r),
        "alpha": float(alpha) if alpha is not None else None,
        "param_count": _positive_int("param_count", param_count, allow_zero=True),
        "metrics": _validated_metrics(metrics),
        "config": cfg,
        "mlflow_run_id": mlflow_run_id,
        "tags": _validated_tags(tags),
    }
