"""SQLAlchemy rows: the database shape of the registry.

Only the store touches these. The Alembic migrations in ``registry/migrations/versions`` create
exactly this schema (a test compares the migrated database against this metadata), so any change
here needs a new migration.

Integrity lives in the database as well as in the store: unique (adapter_id, number) is the last
line of defence for version allocation, and foreign keys keep a version from being deleted while a
lineage edge or alias still points at it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Deterministic constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class SqlBaseModel(Base):
    __tablename__ = "base_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    revision: Mapped[str | None] = mapped_column(String(256))
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SqlTask(Base):
    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SqlAdapter(Base):
    __tablename__ = "adapters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="RESTRICT"), index=True)
    base_model_id: Mapped[int] = mapped_column(
        ForeignKey("base_models.id", ondelete="RESTRICT"), index=True
    )
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Monotonic counter: the next version is last_version + 1, so numbers are never reused.
    last_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    task: Mapped[SqlTask] = relationship(lazy="joined")
    base_model: Mapped[SqlBaseModel] = relationship(lazy="joined")


class SqlAdapterVersion(Base):
    __tablename__ = "adapter_versions"
    __table_args__ = (
        UniqueConstraint("adapter_id", "number"),
        CheckConstraint("number >= 1", name="number_positive"),
        CheckConstraint("bits >= 1 AND bits <= 64", name="bits_range"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="RESTRICT"))
    number: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(32), index=True)
    a_out: Mapped[int | None] = mapped_column(Integer)
    a_in: Mapped[int | None] = mapped_column(Integer)
    r: Mapped[int | None] = mapped_column(Integer)
    alpha: Mapped[float | None] = mapped_column(Float)
    bits: Mapped[int] = mapped_column(Integer)
    param_count: Mapped[int | None] = mapped_column(BigInteger)
    artifact_location: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    adapter: Mapped[SqlAdapter] = relationship(lazy="joined")
    tags: Mapped[list[SqlVersionTag]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", passive_deletes=True
    )


class SqlLineageEdge(Base):
    """``child --relation--> parent``; a version may have several parents (merges)."""

    __tablename__ = "lineage_edges"
    __table_args__ = (CheckConstraint("child_id <> parent_id", name="no_self_loop"),)

    child_id: Mapped[int] = mapped_column(
        ForeignKey("adapter_versions.id", ondelete="CASCADE"), primary_key=True
    )
    parent_id: Mapped[int] = mapped_column(
        ForeignKey("adapter_versions.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    relation: Mapped[str] = mapped_column(String(64))


class SqlAlias(Base):
    __tablename__ = "aliases"

    adapter_id: Mapped[int] = mapped_column(
        ForeignKey("adapters.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("adapter_versions.id", ondelete="RESTRICT"), index=True
    )


class SqlVersionTag(Base):
    __tablename__ = "version_tags"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("adapter_versions.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(String(1024))
