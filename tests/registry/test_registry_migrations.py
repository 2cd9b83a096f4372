"""Alembic migrations: empty -> head, head matches the models, newer databases are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from registry import RegistryStore, SchemaTooNew, migrate
from registry.errors import DatabaseError
from registry.migrate import alembic_config, code_head
from registry.rows import Base


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_store_migrates_an_empty_database_to_head(backend_url: str, tmp_path: Path) -> None:
    assert _tables(backend_url) == set()
    with RegistryStore(backend_url, tmp_path / "art") as store:
        assert store.schema_revision == code_head()
    assert _tables(backend_url) == set(Base.metadata.tables) | {"alembic_version"}
    # Opening again is a no-op.
    with RegistryStore(backend_url, tmp_path / "art") as store:
        assert store.schema_revision == code_head()


def test_migrated_schema_matches_the_models(backend_url: str, tmp_path: Path) -> None:
    RegistryStore(backend_url, tmp_path / "art").close()
    engine = create_engine(backend_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            diff = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_downgrade_to_empty_and_upgrade_again(backend_url: str, tmp_path: Path) -> None:
    RegistryStore(backend_url, tmp_path / "art").close()
    engine = create_engine(backend_url)
    try:
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        assert _tables(backend_url) <= {"alembic_version"}
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
        assert set(Base.metadata.tables) <= _tables(backend_url)
    finally:
        engine.dispose()


def test_newer_schema_is_refused_naming_both_revisions(backend_url: str, tmp_path: Path) -> None:
    RegistryStore(backend_url, tmp_path / "art").close()
    engine = create_engine(backend_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    engine.dispose()

    with pytest.raises(SchemaTooNew) as info:
        RegistryStore(backend_url, tmp_path / "art")
    err = info.value
    assert err.code == "SCHEMA_TOO_NEW"
    assert (err.database_revision, err.code_head) == ("9999_from_the_future", code_head())
    assert "'9999_from_the_future'" in str(err) and repr(code_head()) in str(err)
    assert "newer than this code" in str(err)


def test_unstamped_foreign_tables_and_disabled_upgrade_are_refused(
    backend_url: str, tmp_path: Path
) -> None:
    with pytest.raises(DatabaseError, match="behind the code's head"):
        RegistryStore(backend_url, tmp_path / "art", auto_upgrade=False)
    engine = create_engine(backend_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE tasks (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(
        DatabaseError, match=r"has tables \['tasks'\] but no Alembic revision stamp"
    ):
        RegistryStore(backend_url, tmp_path / "art")


def test_fast_path_head_constant_matches_the_scripts() -> None:
    # ensure_schema skips importing Alembic when the database is stamped with HEAD, so HEAD
    # must name the newest script or an outdated database would never be upgraded.
    assert code_head() == migrate.HEAD
