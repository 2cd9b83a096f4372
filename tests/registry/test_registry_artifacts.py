"""Content-addressed artifact store: hashing definition, atomic publish, verification."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from registry import ArtifactStore, HashMismatch, hash_artifact, tree_sha256
from registry.errors import InvalidValue, NotFound


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_tree_hash_matches_the_documented_definition(tmp_path: Path) -> None:
    d = tmp_path / "a"
    (d / "sub").mkdir(parents=True)
    (d / "z.bin").write_bytes(b"zz")
    (d / "sub" / "b.json").write_bytes(b"{}")
    # Hand-built: sorted (relative posix path, file sha256) pairs, "path NUL sha LF" each.
    expected = _sha(
        b"sub/b.json\0" + _sha(b"{}").encode() + b"\n" + b"z.bin\0" + _sha(b"zz").encode() + b"\n"
    )
    assert hash_artifact(d) == (expected, 4)
    assert tree_sha256([("z.bin", _sha(b"zz")), ("sub/b.json", _sha(b"{}"))]) == expected


def test_single_file_hash_covers_name_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"x")
    (tmp_path / "b.bin").write_bytes(b"x")
    ha, _ = hash_artifact(tmp_path / "a.bin")
    hb, _ = hash_artifact(tmp_path / "b.bin")
    assert ha == tree_sha256([("a.bin", _sha(b"x"))])
    assert ha != hb


def test_put_publishes_a_verified_copy_and_deduplicates(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "root")
    src = tmp_path / "src"
    src.mkdir()
    (src / "adapter.safetensors").write_bytes(b"\x00" * 1000)
    (src / "adapter_config.json").write_text('{"r": 4}')

    first = store.put(src)
    again = store.put(src)

    assert first.created and not again.created
    assert first.sha256 == again.sha256 == hash_artifact(src)[0]
    assert first.size_bytes == 1000 + len('{"r": 4}')
    assert first.location == f"objects/{first.sha256[:2]}/{first.sha256}"
    stored = store.fetch(first.location, first.sha256)
    assert sorted(p.name for p in stored.iterdir()) == [
        "adapter.safetensors",
        "adapter_config.json",
    ]
    assert list((store.root / "tmp").iterdir()) == []  # staging copies are gone


def test_verify_reports_expected_actual_and_path_on_mismatch(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "root")
    src = tmp_path / "w.bin"
    src.write_bytes(b"original")
    art = store.put(src)
    target = store.path(art.location) / "w.bin"
    target.write_bytes(b"tampered")

    with pytest.raises(HashMismatch) as info:
        store.fetch(art.location, art.sha256)
    err = info.value
    actual = tree_sha256([("w.bin", _sha(b"tampered"))])
    assert err.code == "HASH_MISMATCH"
    assert (err.expected, err.actual, err.path) == (
        art.sha256,
        actual,
        str(store.path(art.location)),
    )
    assert art.sha256 in str(err) and actual in str(err) and err.path in str(err)


def test_verify_missing_artifact_is_a_mismatch_with_no_actual(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "root")
    src = tmp_path / "w.bin"
    src.write_bytes(b"x")
    art = store.put(src)
    with store.lock(art.sha256):
        assert store.remove(art.sha256)
    with pytest.raises(HashMismatch, match="missing") as info:
        store.verify(art.location, art.sha256)
    assert info.value.actual is None


def test_publish_replaces_a_damaged_copy(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "root")
    src = tmp_path / "w.bin"
    src.write_bytes(b"good")
    art = store.put(src)
    (store.path(art.location) / "w.bin").write_bytes(b"bad!")
    again = store.put(src)
    assert again.created  # the damaged copy was swapped out
    assert store.verify(art.location, art.sha256) == art.sha256


def test_refuses_symlinks_empty_dirs_missing_paths_and_escaping_locations(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "root")
    real = tmp_path / "real.bin"
    real.write_bytes(b"x")
    d = tmp_path / "withlink"
    d.mkdir()
    os.symlink(real, d / "link.bin")
    with pytest.raises(InvalidValue, match="symlink"):
        store.put(d)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidValue, match="holds no files"):
        store.put(tmp_path / "empty")
    with pytest.raises(NotFound, match="does not exist"):
        store.put(tmp_path / "nope")
    with pytest.raises(InvalidValue, match="outside the artifact root"):
        store.path("../../etc")
    with pytest.raises(InvalidValue, match="invalid sha256"):
        store.location_for("../x")
    assert list((store.root / "tmp").iterdir()) == []
