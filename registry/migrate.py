"""Schema management through Alembic, run programmatically (no alembic.ini needed).

The migration scripts live in ``registry/migrations``. :func:`ensure_schema` is what the store
calls on open: it migrates an empty or older database to the head revision and refuses one
stamped with a revision this code does not know (written by newer code).

Alembic is imported only when a migration has to run: opening an up-to-date database reads the
stamp with one SELECT and compares it with :data:`HEAD`, which keeps the CLI quick to start.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from registry.db import safe_url
from registry.errors import DatabaseError, SchemaTooNew
from registry.rows import Base

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

HEAD = "0001_initial"
"""The newest revision in ``migrations/versions``; update it with every new migration (a test
checks it against Alembic's own view of the scripts)."""

# Any constant works; it only has to be the same for every process migrating this database.
_PG_MIGRATION_LOCK = 0x6B726F6E636C01  # "kroncl" + 1


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the package's migrations.

    Args:
        connection: when given, ``env.py`` runs the migrations on it, inside its transaction.
    """
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script_directory() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def code_head() -> str:
    """The newest migration revision this code knows."""
    head = script_directory().get_current_head()
    assert head is not None, "registry/migrations/versions holds no migration"
    return head


def known_revisions() -> set[str]:
    return {s.revision for s in script_directory().walk_revisions()}


def database_revision(conn: Connection) -> str | None:
    """The revision stamped in the database, ``None`` when it has never been migrated."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def ensure_schema(engine: Engine, *, upgrade: bool = True) -> str:
    """Bring the database to the code's head revision, or refuse it.

    Safe to call from many processes at once: the check-and-upgrade runs in one write
    transaction (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock),
    so exactly one process migrates and the others find the work done.

    Args:
        engine: the write engine (``execution_options(kroncl_write=True)``).
        upgrade: migrate an empty or older database; when False, an outdated database raises.

    Returns:
        The database's revision after the call (the code head).

    Raises:
        SchemaTooNew: the database carries a revision unknown to this code; names both.
        DatabaseError: registry tables exist without an Alembic stamp, or ``upgrade`` is False
            and the database is behind.
    """
    with engine.connect() as conn:
        current = database_revision(conn)
    if current == HEAD:
        return HEAD
    head = code_head()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        current = database_revision(conn)  # again, now that we hold the lock
        if current == head:
            return head
        where = safe_url(str(engine.url))
        if current is not None and current not in known_revisions():
            raise SchemaTooNew(
                f"registry database {where!r} is at schema revision {current!r}, newer than this "
                f"code's head {head!r}: upgrade kroncl, or point --url at another database",
                database_revision=current,
                code_head=head,
            )
        if current is None:
            ours = set(Base.metadata.tables) & set(inspect(conn).get_table_names())
            if ours:
                raise DatabaseError(
                    f"registry database {where!r} has tables {sorted(ours)} but no Alembic "
                    "revision stamp: it was not created by this registry; use an empty database"
                )
        if not upgrade:
            raise DatabaseError(
                f"registry database {where!r} is at schema revision {current!r}, behind the "
                f"code's head {head!r}: open it with auto_upgrade=True to migrate"
            )
        from alembic import command

        command.upgrade(alembic_config(conn), "head")
    return head
