"""Engines for the two supported backends, and where defaults come from.

SQLite (default, one file) is tuned so several processes can write to it: WAL journal (readers
never block the writer), a busy timeout (a writer waits for the lock instead of failing), and
write transactions opened with ``BEGIN IMMEDIATE`` so a writer takes the lock up front rather than
failing half way when it upgrades a read snapshot. PostgreSQL needs none of this: its row locks do
the serialising (see ``RegistryStore._allocate_number``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from registry.errors import InvalidValue

ENV_URL = "KRONCL_REGISTRY_URL"
ENV_ARTIFACT_ROOT = "KRONCL_ARTIFACT_ROOT"
DEFAULT_URL = "sqlite:///runs/registry.db"

SQLITE_BUSY_TIMEOUT_S = 60.0
"""How long a SQLite writer waits for another writer's lock before giving up."""

WRITE_OPTION = "kroncl_write"
"""Execution option marking an engine whose transactions will write (SQLite: BEGIN IMMEDIATE)."""


def default_url() -> str:
    """``$KRONCL_REGISTRY_URL`` when set, else ``sqlite:///runs/registry.db``."""
    return os.environ.get(ENV_URL) or DEFAULT_URL


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL holds no password we could mask reliably
        return url


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URL, ``None`` for other URLs or in-memory."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def default_artifact_root(url: str) -> Path | str:
    """Where artifacts go when not given: ``$KRONCL_ARTIFACT_ROOT`` (a folder, or an
    ``s3://bucket/prefix`` URI, returned as text), else beside the SQLite file.

    Raises:
        InvalidValue: for a non-file URL (e.g. PostgreSQL) with no ``$KRONCL_ARTIFACT_ROOT``.
    """
    env = os.environ.get(ENV_ARTIFACT_ROOT)
    if env:
        return env if env.startswith("s3://") else Path(env)
    db_file = sqlite_file(url)
    if db_file is None:
        raise InvalidValue(
            f"no artifact root for registry URL {safe_url(url)!r}: pass artifact_root= "
            f"(CLI: --artifacts DIR or s3://BUCKET/PREFIX) or set {ENV_ARTIFACT_ROOT}"
        )
    return db_file.resolve().parent / "registry_artifacts"


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine for ``url`` with the backend's concurrency settings applied.

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:///runs/registry.db`` or
            ``postgresql+psycopg://user:pw@host:5432/db``.
        echo: log SQL statements.

    Returns:
        The engine. Use ``engine.execution_options(kroncl_write=True)`` for transactions that
        write, so SQLite takes its write lock at BEGIN.

    Raises:
        InvalidValue: when the URL cannot be parsed or names an unsupported backend.
    """
    try:
        u = make_url(url)
    except Exception as e:
        raise InvalidValue(f"cannot parse registry URL {url!r}: {e}") from e
    backend = u.get_backend_name()
    if backend == "sqlite":
        db_file = sqlite_file(url)
        if db_file is not None:
            db_file.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        _tune_sqlite(engine)
        return engine
    if backend == "postgresql":
        return create_engine(u, echo=echo, pool_pre_ping=True)
    raise InvalidValue(
        f"unsupported registry backend {backend!r} in {safe_url(url)!r}: use sqlite:///FILE or "
        "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
    )


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not the sqlite3 module, decide how transactions start.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA journal_mode = WAL")
        # WAL + NORMAL stays consistent after a crash; power loss may undo only the last commits.
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        writing = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")
