"""What can be changed on a version after it is registered: aliases, tags, metrics and the
MLflow run id (functions of a session; values are validated by the store beforehand)."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.entities import AdapterVersion
from registry.errors import NotFound
from registry.lookups import RefLike, adapter_row, version_entity, version_row
from registry.names import LATEST, VersionRef, validate_name
from registry.rows import SqlAdapterVersion, SqlAlias, SqlVersionTag


def upsert_alias(s: Session, adapter_id: int, name: str, version_id: int) -> None:
    row = s.get(SqlAlias, (adapter_id, name))
    if row is None:
        s.add(SqlAlias(adapter_id=adapter_id, name=name, version_id=version_id))
    else:
        row.version_id = version_id


def set_alias(s: Session, adapter: str, alias: str, number: int) -> AdapterVersion:
    row = version_row(s, VersionRef(validate_name(adapter, "adapter name"), number=number))
    upsert_alias(s, row.adapter_id, alias, row.id)
    s.flush()
    return version_entity(s, row)


def delete_alias(s: Session, adapter: str, alias: str) -> None:
    arow = adapter_row(s, adapter)
    row = s.get(SqlAlias, (arow.id, alias))
    if row is None:
        raise NotFound(f"alias {alias!r} not found for adapter {adapter!r}")
    s.delete(row)


def list_aliases(s: Session, adapter: str) -> dict[str, int]:
    arow = adapter_row(s, adapter)
    out: dict[str, int] = {}
    top = s.scalar(
        select(func.max(SqlAdapterVersion.number)).where(SqlAdapterVersion.adapter_id == arow.id)
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


def set_tag(s: Session, ref: RefLike, key: str, value: str) -> AdapterVersion:
    row = version_row(s, ref)
    tag = s.get(SqlVersionTag, (row.id, key))
    if tag is None:
        row.tags.append(SqlVersionTag(key=key, value=value))
    else:
        tag.value = value
    s.flush()
    return version_entity(s, row)


def delete_tag(s: Session, ref: RefLike, key: str) -> None:
    row = version_row(s, ref)
    tag = s.get(SqlVersionTag, (row.id, key))
    if tag is None:
        raise NotFound(f"tag {key!r} not set on {row.adapter.name}:{row.number}")
    row.tags.remove(tag)


def set_mlflow_run_id(s: Session, ref: RefLike, run_id: str | None) -> AdapterVersion:
    row = version_row(s, ref)
    row.mlflow_run_id = run_id
    s.flush()
    return version_entity(s, row)


def log_metrics(s: Session, ref: RefLike, metrics: Mapping[str, float]) -> AdapterVersion:
    row = version_row(s, ref)
    row.metrics = {**(row.metrics or {}), **metrics}  # reassign: JSON columns track by identity
    s.flush()
    return version_entity(s, row)
