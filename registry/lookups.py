"""Row lookups by name or version reference, and row -> entity conversion (inside a session).

Every ``*_row`` raises :class:`NotFound` with a message saying what exists or how to register
it; every ``*_entity`` builds the frozen dataclass callers see (datetimes as UTC).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.entities import Adapter, AdapterVersion, BaseModel, Task
from registry.errors import NotFound
from registry.names import LATEST, VersionRef, parse_ref
from registry.rows import SqlAdapter, SqlAdapterVersion, SqlAlias, SqlBaseModel, SqlTask

RefLike = str | VersionRef
R = TypeVar("R", SqlBaseModel, SqlTask, SqlAdapter)


def utcnow() -> datetime:
    return datetime.now(UTC)


def utc(dt: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt


def as_ref(ref: RefLike) -> VersionRef:
    return ref if isinstance(ref, VersionRef) else parse_ref(ref)


# ================================================================================================
# Row lookups
# ================================================================================================


def _named_row(s: Session, table: type[R], name: str, what: str, register_with: str) -> R:
    row = s.scalar(select(table).where(table.name == name))
    if row is None:
        raise NotFound(f"{what} {name!r} not found; register it with {register_with}()")
    return row


def base_model_row(s: Session, name: str) -> SqlBaseModel:
    return _named_row(s, SqlBaseModel, name, "base model", "register_base_model")


def task_row(s: Session, name: str) -> SqlTask:
    return _named_row(s, SqlTask, name, "task", "register_task")


def adapter_row(s: Session, name: str) -> SqlAdapter:
    return _named_row(s, SqlAdapter, name, "adapter", "register_adapter")


def version_row(s: Session, ref: RefLike) -> SqlAdapterVersion:
    vref = as_ref(ref)
    adapter = adapter_row(s, vref.adapter)
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
                f"version {str(vref)!r} not found; adapter {vref.adapter!r} has versions: {shown}"
            )
        return row
    if vref.alias == LATEST:
        row = s.scalar(q.order_by(SqlAdapterVersion.number.desc()).limit(1))
        if row is None:
            raise NotFound(
                f"adapter {vref.adapter!r} has no versions, so {str(vref)!r} resolves to nothing"
            )
        return row
    alias = s.scalar(
        select(SqlAlias).where(SqlAlias.adapter_id == adapter.id, SqlAlias.name == vref.alias)
    )
    if alias is None:
        names = sorted(s.scalars(select(SqlAlias.name).where(SqlAlias.adapter_id == adapter.id)))
        raise NotFound(
            f"alias {vref.alias!r} not found for adapter {vref.adapter!r}; "
            f"its aliases: {', '.join([LATEST, *names])}"
        )
    return s.get_one(SqlAdapterVersion, alias.version_id)


# ================================================================================================
# Row -> entity
# ================================================================================================


def base_model_entity(row: SqlBaseModel) -> BaseModel:
    return BaseModel(row.name, row.revision, row.description, utc(row.created_at))  # type: ignore[arg-type]


def task_entity(row: SqlTask) -> Task:
    return Task(row.name, row.description, utc(row.created_at))  # type: ignore[arg-type]


def adapter_entity(row: SqlAdapter) -> Adapter:
    return Adapter(
        name=row.name,
        task=row.task.name,
        base_model=row.base_model.name,
        description=row.description,
        created_at=utc(row.created_at),  # type: ignore[arg-type]
        latest_version=row.last_version,
    )


def version_entity_of(r: SqlAdapterVersion, aliases: tuple[str, ...]) -> AdapterVersion:
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
        created_at=utc(r.created_at),
        tags={t.key: t.value for t in r.tags},
        aliases=aliases,
    )


def version_entities(s: Session, rows: Sequence[SqlAdapterVersion]) -> list[AdapterVersion]:
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
        out.append(version_entity_of(r, tuple(names)))
    return out


def version_entity(s: Session, row: SqlAdapterVersion) -> AdapterVersion:
    return version_entities(s, [row])[0]
