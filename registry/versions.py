"""Adapter versions: publishing an artifact and registering it, get and delete.

Concurrency: version numbers come from ``adapters.last_version``, bumped by
``UPDATE ... SET last_version = last_version + 1 RETURNING`` (:func:`allocate_number`). On
PostgreSQL that UPDATE holds the adapter's row lock until commit; on SQLite every write
transaction is ``BEGIN IMMEDIATE``. Either way concurrent registrations of one adapter queue up
and get 1, 2, 3, ... with no gaps and no reuse after a delete. Artifacts are published before
the row commits, under a per-hash file lock held until the commit; when the insert fails and no
row references the hash, the artifact is removed again (:func:`remove_artifact_if_unreferenced`).

Session functions take a :class:`~sqlalchemy.orm.Session`; :func:`register_version`,
:func:`is_referenced` and :func:`remove_artifact_if_unreferenced` take the store's ``run``
(:meth:`registry.session.Sessions.run`) since they span transactions and files. Searching
lives in :mod:`registry.search`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import delete, exists, select, update
from sqlalchemy.orm import Session

from registry.backend import ArtifactBackend
from registry.entities import AdapterVersion
from registry.errors import Conflict, InvalidValue, RegistryError
from registry.labels import upsert_alias
from registry.lookups import (
    RefLike,
    adapter_row,
    as_ref,
    utcnow,
    version_entity,
    version_entity_of,
    version_row,
)
from registry.names import LATEST, VersionRef, validate_name, validate_relation
from registry.rows import (
    SqlAdapter,
    SqlAdapterVersion,
    SqlLineageEdge,
    SqlVersionTag,
)
from registry.validation import (
    _validated_alias,
    _validated_version_fields,
)

T = TypeVar("T")
Run = Callable[..., Any]  # Sessions.run: run(fn, *, write=True)


# ================================================================================================
# Registering
# ================================================================================================


def register_version(
    run: Run,
    artifacts: ArtifactBackend,
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
    parent_refs = [(as_ref(ref), validate_relation(rel)) for ref, rel in parents]
    alias_names = [_validated_alias(a) for a in aliases]
    validate_name(adapter, "adapter name")
    return _publish_and_insert(
        run,
        artifacts,
        adapter,
        artifact_path,
        files,
        fields,
        parent_refs,
        alias_names,
        on_published,
    )


def _publish_and_insert(
    run: Run,
    artifacts: ArtifactBackend,
    adapter: str,
    artifact_path: str | Path,
    files: Sequence[str] | None,
    fields: dict[str, Any],
    parents: list[tuple[VersionRef, str]],
    aliases: list[str],
    on_published: Callable[[], None] | None,
) -> AdapterVersion:
    """Stage, hash and publish the artifact, then insert the row while holding its hash lock;
    on any failure remove the artifact again unless another version references it."""
    staging = artifacts.staged(artifact_path, files)
    with staging as staged, artifacts.lock(staged.sha256):
        stored = artifacts.publish(staged)
        try:
            if on_published is not None:
                on_published()
            return run(
                lambda s: insert(
                    s,
                    adapter,
                    fields,
                    stored.location,
                    stored.sha256,
                    stored.size_bytes,
                    parents,
                    aliases,
                )
            )
        except BaseException:
            remove_artifact_if_unreferenced(run, artifacts, stored.sha256)
            raise


def insert(
    s: Session,
    adapter: str,
    fields: dict[str, Any],
    location: str,
    sha256: str,
    size_bytes: int,
    parents: list[tuple[VersionRef, str]],
    aliases: list[str],
) -> AdapterVersion:
    """Insert the next version of ``adapter`` with its tags, lineage edges and aliases."""
    arow = adapter_row(s, adapter)
    parent_rows: dict[int, tuple[SqlAdapterVersion, str]] = {}
    for ref, relation in parents:
        prow = version_row(s, ref)
        if prow.id in parent_rows:
            raise InvalidValue(f"parent {str(ref)!r} is listed twice in parents=")
        parent_rows[prow.id] = (prow, relation)
    number = allocate_number(s, arow.id)
    row = SqlAdapterVersion(
        adapter=arow,
        number=number,
        artifact_location=location,
        sha256=sha256,
        size_bytes=size_bytes,
        created_at=utcnow(),
        **{k: v for k, v in fields.items() if k != "tags"},
    )
    row.tags = [SqlVersionTag(key=k, value=v) for k, v in fields["tags"].items()]
    s.add(row)
    s.flush()
    for prow, relation in parent_rows.values():
        s.add(SqlLineageEdge(child_id=row.id, parent_id=prow.id, relation=relation))
    for name in aliases:
        upsert_alias(s, arow.id, name, row.id)
    s.flush()
    # Built without queries: on PostgreSQL the adapter row stays locked until commit. A new
    # number is the highest ever allocated, so the version is the adapter's latest.
    return version_entity_of(row, (LATEST, *sorted(set(aliases))))


def allocate_number(s: Session, adapter_id: int) -> int:
    """Next version number; the UPDATE's row lock (PG) / BEGIN IMMEDIATE (SQLite) serialises
    concurrent writers of the same adapter until commit."""
    return s.execute(
        update(SqlAdapter)
        .where(SqlAdapter.id == adapter_id)
        .values(last_version=SqlAdapter.last_version + 1)
        .returning(SqlAdapter.last_version)
        .execution_options(synchronize_session=False)
    ).scalar_one()


def is_referenced(run: Run, sha256: str) -> bool:
    """Whether any version row references this content hash (a fresh read)."""
    return bool(
        run(
            lambda s: s.scalar(select(exists().where(SqlAdapterVersion.sha256 == sha256))),
            write=False,
        )
    )


def remove_artifact_if_unreferenced(run: Run, artifacts: ArtifactBackend, sha256: str) -> None:
    """Remove an artifact no version references (caller holds ``artifacts.lock(sha256)``)."""
    try:
        if not is_referenced(run, sha256):
            artifacts.remove(sha256)
    except RegistryError:
        # The database is unreachable: keep the file, an orphan is safer than a lost artifact.
        pass


# ================================================================================================
# Reading
# ================================================================================================


def resolve_ref(ref: RefLike, number: int | None, alias: str | None) -> VersionRef:
    """The reference ``get_version(ref, number, alias=...)`` means (validated, no queries)."""
    if number is not None and alias is not None:
        raise InvalidValue("pass number= or alias=, not both")
    if number is None and alias is None:
        return as_ref(ref)
    name = validate_name(ref if isinstance(ref, str) else ref.adapter, "adapter name")
    if number is not None:
        if not isinstance(number, int) or number < 1:
            raise InvalidValue(f"invalid version number {number!r}: expected an int >= 1")
        return VersionRef(name, number=number)
    return VersionRef(name, alias=validate_name(alias, "alias"))


def get(s: Session, ref: RefLike) -> AdapterVersion:
    return version_entity(s, version_row(s, ref))


# ================================================================================================
# Deleting
# ================================================================================================


def delete_row(s: Session, ref: RefLike) -> AdapterVersion:
    """Delete a version row nothing depends on (its tags and outgoing edges go with it); the
    artifact is left to the caller. Returns the version as it was."""
    row = version_row(s, ref)
    entity = version_entity(s, row)
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
            f"cannot delete {entity.ref}: versions depend on it: {listed}; delete those first"
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
