"""Crash-safety of registration: explicit file lists, the on_published hook, stale staging.

Real SQLite files and real processes; no mocks, no sleeps.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from registry import ArtifactStore, InvalidValue, NotFound, RegistryStore, hash_artifact
from registry.artifacts import _hostname

WEIGHTS = "adapter.safetensors"
CONFIG = "adapter_config.json"
STRAY = ".adapter.safetensors.abcd.tmp"


def _adapter_dir_with_stray(root: Path) -> Path:
    """An adapter folder as a killed atomic write leaves it: two real files and a temp file."""
    d = root / "adapter"
    d.mkdir()
    (d / WEIGHTS).write_bytes(b"\x01" * 64)
    (d / CONFIG).write_text('{"r": 4}')
    (d / STRAY).write_bytes(b"half-written")
    return d


def _files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# -- files= ----------------------------------------------------------------------------------------


def test_files_store_exactly_the_listed_files(populated: RegistryStore, tmp_path: Path) -> None:
    src = _adapter_dir_with_stray(tmp_path)

    v = populated.register_version("arc-kron", src, method="kron", files=[WEIGHTS, CONFIG])

    stored = populated.fetch_artifact(v.ref)
    assert _files_under(stored) == [WEIGHTS, CONFIG]
    assert (v.sha256, v.size_bytes) == hash_artifact(src, files=[WEIGHTS, CONFIG])
    assert v.sha256 != hash_artifact(src)[0]  # the walk would have taken the stray file in
    reordered = hash_artifact(src, files=[CONFIG, WEIGHTS])
    assert reordered == hash_artifact(src, files=[WEIGHTS, CONFIG])


def test_files_none_keeps_walking_the_folder(populated: RegistryStore, tmp_path: Path) -> None:
    src = _adapter_dir_with_stray(tmp_path)
    v = populated.register_version("arc-kron", src, method="kron")
    assert _files_under(populated.fetch_artifact(v.ref)) == sorted([WEIGHTS, CONFIG, STRAY])
    assert v.sha256 == hash_artifact(src)[0]


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ("missing.bin", NotFound),
        ("/etc/passwd", InvalidValue),
        ("../outside.bin", InvalidValue),
        ("sub/../../outside.bin", InvalidValue),
        ("link.bin", InvalidValue),
        ("linkdir/x.bin", InvalidValue),
        ("sub", InvalidValue),
        ("", InvalidValue),
    ],
)
def test_bad_files_entries_name_the_entry(
    populated: RegistryStore, tmp_path: Path, entry: str, error: type[Exception]
) -> None:
    src = _adapter_dir_with_stray(tmp_path)
    (tmp_path / "outside.bin").write_bytes(b"secret")
    (src / "sub").mkdir()
    (src / "link.bin").symlink_to(src / WEIGHTS)
    (src / "linkdir").symlink_to(tmp_path)

    with pytest.raises(error) as exc:
        populated.register_version("arc-kron", src, method="kron", files=[WEIGHTS, entry])

    message = str(exc.value)
    assert "\n" not in message
    assert repr(entry) in message
    assert populated.list_versions("arc-kron") == []
    assert _files_under(populated.artifacts.root / "objects") == []


def test_duplicate_and_malformed_files_lists_are_refused(
    populated: RegistryStore, tmp_path: Path
) -> None:
    src = _adapter_dir_with_stray(tmp_path)
    with pytest.raises(InvalidValue, match=r"'\./adapter\.safetensors' twice"):
        populated.register_version(
            "arc-kron", src, method="kron", files=[WEIGHTS, f"./{WEIGHTS}"]
        )
    with pytest.raises(InvalidValue, match="single string"):
        populated.register_version("arc-kron", src, method="kron", files=WEIGHTS)
    with pytest.raises(InvalidValue, match="files= is empty"):
        populated.register_version("arc-kron", src, method="kron", files=[])
    with pytest.raises(InvalidValue, match="needs a directory"):
        populated.register_version("arc-kron", src / WEIGHTS, method="kron", files=[WEIGHTS])
    assert populated.list_versions("arc-kron") == []


# -- on_published ----------------------------------------------------------------------------------


def test_on_published_runs_once_between_publish_and_row(
    populated: RegistryStore, make_artifact: Callable[..., Path]
) -> None:
    src = make_artifact("hooked")
    sha, _ = hash_artifact(src)
    seen: list[tuple[bool, int]] = []

    def hook() -> None:
        obj = populated.artifacts.path(populated.artifacts.location_for(sha))
        seen.append((obj.is_dir(), len(populated.search_versions(adapter="arc-kron"))))

    v = populated.register_version("arc-kron", src, method="kron", on_published=hook)

    assert seen == [(True, 0)]
    assert v.sha256 == sha
    assert [x.number for x in populated.list_versions("arc-kron")] == [1]


def test_raising_on_published_leaves_no_row_and_no_object(
    populated: RegistryStore, make_artifact: Callable[..., Path]
) -> None:
    class Boom(Exception):
        pass

    def hook() -> None:
        raise Boom("injected")

    with pytest.raises(Boom):
        populated.register_version(
            "arc-kron", make_artifact("x"), method="kron", on_published=hook
        )

    assert populated.list_versions("arc-kron") == []
    assert _files_under(populated.artifacts.root / "objects") == []
    assert list((populated.artifacts.root / "tmp").iterdir()) == []


def test_raising_on_published_keeps_content_another_version_uses(
    populated: RegistryStore, make_artifact: Callable[..., Path]
) -> None:
    first = populated.register_version("arc-kron", make_artifact("same"), method="kron")

    def hook() -> None:
        raise RuntimeError("injected")

    with pytest.raises(RuntimeError):
        populated.register_version(
            "arc-kron", make_artifact("same"), method="kron", on_published=hook
        )

    assert [x.number for x in populated.list_versions("arc-kron")] == [1]
    populated.fetch_artifact(first.ref)  # still there and intact


# -- stale staging ---------------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _staging(root: Path, name: str) -> Path:
    d = root / "tmp" / name
    (d / "payload").mkdir(parents=True)
    (d / "payload" / WEIGHTS).write_bytes(b"partial")
    return d


def test_opening_a_store_removes_only_dead_local_staging(
    sqlite_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "artifacts"
    host = _hostname()
    dead = _staging(root, f"{host}-{_dead_pid()}-{uuid.uuid4().hex}")
    live = _staging(root, f"{host}-{os.getpid()}-{uuid.uuid4().hex}")
    foreign = _staging(root, f"not-{host}-{_dead_pid()}-{uuid.uuid4().hex}")
    legacy = _staging(root, uuid.uuid4().hex)  # fresh old-format name: kept
    other = _staging(root, "keep-me")

    with RegistryStore(sqlite_url, artifact_root=root) as store:
        assert store.artifacts.swept == (dead,)

    assert not dead.exists()
    assert live.is_dir() and foreign.is_dir() and legacy.is_dir() and other.is_dir()


def test_old_format_staging_is_removed_after_a_day(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "root")
    legacy = _staging(store.root, uuid.uuid4().hex)
    aside = _staging(store.root, f"removed-{uuid.uuid4().hex}")
    mtime = legacy.stat().st_mtime

    assert store.sweep_stale_staging(now=mtime + 3600) == []
    assert store.sweep_stale_staging(now=mtime + 2 * 86400) == sorted([legacy, aside])
    assert list((store.root / "tmp").iterdir()) == []


def test_staging_folders_are_named_for_their_owner(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "root")
    src = tmp_path / "f.bin"
    src.write_bytes(b"x")
    with store.staged(src) as staged:
        host, pid, uid = staged.path.parent.name.rsplit("-", 2)
    assert (host, pid, len(uid)) == (_hostname(), str(os.getpid()), 32)
    assert host == socket.gethostname() or "_" in host


# -- idempotent re-registration --------------------------------------------------------------------


def test_search_by_tags_finds_a_prior_registration(
    populated: RegistryStore, make_artifact: Callable[..., Path]
) -> None:
    tags = {"run_id": "r-123", "stage": "final"}
    assert populated.search_versions(adapter="arc-kron", bits=32, tags=tags) == []

    v = populated.register_version("arc-kron", make_artifact("a"), method="kron", tags=tags)
    populated.register_version(
        "arc-kron", make_artifact("b"), method="kron", tags={"run_id": "r-1234", "stage": "final"}
    )

    found = populated.search_versions(adapter="arc-kron", bits=32, tags=tags)
    assert [x.number for x in found] == [v.number]
    assert populated.search_versions(adapter="arc-kron", bits=8, tags=tags) == []
    assert populated.search_versions(adapter="arc-kron", tags={"run_id": "r-12"}) == []
    with pytest.raises(NotFound):
        populated.search_versions(adapter="not-registered", tags=tags)
