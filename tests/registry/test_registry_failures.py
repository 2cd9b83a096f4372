"""A failed registration leaves no orphan row and no half-written or orphaned artifact."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from registry import NotFound, RegistryError, RegistryStore

MakeArtifact = Callable[..., Path]


def _files(root: Path, sub: str) -> list[Path]:
    return sorted(p for p in (root / sub).rglob("*") if p.is_file())


def _install_refusing_trigger(store: RegistryStore) -> None:
    """Make every INSERT into adapter_versions fail inside the database, after the artifact
    has been published: the failure the cleanup path exists for."""
    engine = create_engine(store.url)
    with engine.begin() as conn:
        if store.dialect == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_versions BEFORE INSERT ON adapter_versions "
                    "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION refuse_versions() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'refused by test trigger'; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_versions BEFORE INSERT ON adapter_versions "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_versions()"
                )
            )
    engine.dispose()


def _drop_trigger(store: RegistryStore) -> None:
    engine = create_engine(store.url)
    with engine.begin() as conn:
        if store.dialect == "sqlite":
            conn.execute(text("DROP TRIGGER refuse_versions"))
        else:
            conn.execute(text("DROP TRIGGER refuse_versions ON adapter_versions"))
    engine.dispose()


def test_database_failure_after_artifact_write_removes_the_artifact(
    populated: RegistryStore, make_artifact: MakeArtifact
) -> None:
    _install_refusing_trigger(populated)
    with pytest.raises(RegistryError, match="refused by test trigger"):
        populated.register_version("arc-kron", make_artifact("doomed"), method="kron")
    assert populated.search_versions() == []
    assert _files(populated.artifacts.root, "objects") == []
    assert _files(populated.artifacts.root, "tmp") == []
    # The rolled-back transaction did not consume a version number either.
    _drop_trigger(populated)
    assert populated.register_version("arc-kron", make_artifact("fine"), method="kron").number == 1


def test_database_failure_keeps_an_artifact_other_versions_reference(
    populated: RegistryStore, make_artifact: MakeArtifact
) -> None:
    v1 = populated.register_version("arc-kron", make_artifact("shared"), method="kron")
    _install_refusing_trigger(populated)
    with pytest.raises(RegistryError):
        populated.register_version("arc-kron", make_artifact("shared"), method="kron")
    assert [v.ref for v in populated.search_versions()] == ["arc-kron:1"]
    assert populated.fetch_artifact(v1.ref).is_dir()
    assert all(r.ok for r in populated.verify())


def test_unknown_parent_fails_without_leftovers(
    populated: RegistryStore, make_artifact: MakeArtifact
) -> None:
    with pytest.raises(NotFound, match="version 'arc-kron:5' not found"):
        populated.register_version(
            "arc-kron",
            make_artifact("x"),
            method="kron",
            parents=[("arc-kron:5", "continued_from")],
        )
    assert populated.search_versions() == []
    assert _files(populated.artifacts.root, "objects") == []


def test_crash_while_copying_leaves_no_half_written_file(
    populated: RegistryStore, make_artifact: MakeArtifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # first file written, second one half way
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr("registry.artifacts.os.fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        populated.register_version("arc-kron", make_artifact("partial"), method="kron")
    monkeypatch.undo()
    assert calls["n"] == 2
    assert populated.search_versions() == []
    assert _files(populated.artifacts.root, "objects") == []
    assert _files(populated.artifacts.root, "tmp") == []
