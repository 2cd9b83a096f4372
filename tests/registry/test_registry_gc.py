"""``gc`` and per-file ``verify`` on real SQLite registries (no mocks, no sleeps).

The crash case is real: a subprocess registers a version and SIGKILLs itself from the
``on_published`` hook, i.e. after the object is published and before its row commits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from registry import RegistryStore
from registry.artifacts import _hostname
from registry.cli import main

REPO = Path(__file__).resolve().parents[2]

KILLED_WRITER = """
import os, signal, sys
from registry import RegistryStore
store = RegistryStore(sys.argv[1], sys.argv[2])
store.register_version(
    "arc-kron", sys.argv[3], method="kron",
    on_published=lambda: os.kill(os.getpid(), signal.SIGKILL),
)
"""


def make_src(tmp_path: Path, name: str, files: dict[str, bytes]) -> Path:
    src = tmp_path / name
    src.mkdir()
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    return src


@pytest.fixture
def reg(tmp_path: Path) -> tuple[str, RegistryStore]:
    """Three versions of arc-kron, each a two-file artifact."""
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    store = RegistryStore(url)
    store.register_base_model("org/tiny-bert")
    store.register_task("arc-easy")
    store.register_adapter("arc-kron", "arc-easy", "org/tiny-bert")
    for i in range(3):
        src = make_src(
            tmp_path, f"src{i}", {"adapter.safetensors": b"w" * (i + 1), "cfg.json": b"{}"}
        )
        store.register_version("arc-kron", src, method="kron")
    return url, store


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        status = main(list(args))
    except SystemExit as e:
        status = int(e.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def gc_json(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> dict:
    status, out, err = run_cli(capsys, "--url", url, "--json", "gc", "--grace", "0", *args)
    assert status == 0, err
    return json.loads(out)


def test_gc_after_writer_killed_between_publish_and_commit(
    reg: tuple[str, RegistryStore], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, store = reg
    src = make_src(tmp_path, "crash", {"adapter.safetensors": b"never committed"})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    root = str(store.artifacts.root)
    r = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, url, root, str(src)], env=env, timeout=120
    )
    assert r.returncode == -signal.SIGKILL
    assert len(store.list_versions("arc-kron")) == 3  # no row was committed

    referenced = {v.artifact_location for v in store.list_versions("arc-kron")}
    dry = gc_json(capsys, url)
    removable = [i for i in dry["items"] if i["action"] == "remove"]
    orphans = [i for i in removable if i["kind"] == "orphan-object"]
    assert len(orphans) == 1 and orphans[0]["path"] not in referenced
    assert {i["kind"] for i in removable} <= {"orphan-object", "staging"}
    assert dry["reclaimable_bytes"] >= len(b"never committed")
    assert (store.artifacts.root / orphans[0]["path"]).is_dir()  # dry run changed nothing

    status, out, _ = run_cli(capsys, "--url", url, "gc", "--grace", "0")
    assert status == 0 and "would remove" in out and orphans[0]["path"] in out
    assert out.splitlines()[-1].startswith(f"total: {len(removable)} item(s)")

    applied = gc_json(capsys, url, "--apply")
    assert sorted(i["path"] for i in applied["items"] if i["action"] == "removed") == sorted(
        i["path"] for i in removable
    )
    assert not (store.artifacts.root / orphans[0]["path"]).exists()
    assert not Path(root, orphans[0]["path"] + ".manifest.json").exists()
    assert gc_json(capsys, url)["items"] == []  # nothing left to find
    assert all(res.ok for res in store.verify())


def test_gc_never_removes_referenced_objects_and_reports_missing_rows(
    reg: tuple[str, RegistryStore], capsys: pytest.CaptureFixture[str]
) -> None:
    url, store = reg
    assert gc_json(capsys, url, "--apply")["items"] == []
    assert all(res.ok for res in store.verify())
    gone = store.get_version("arc-kron:2")
    store.artifacts.remove(gone.sha256)
    report = gc_json(capsys, url, "--apply")
    assert [(i["kind"], i["version"], i["action"]) for i in report["items"]] == [
        ("missing-artifact", "arc-kron:2", "report")
    ]
    assert "--delete-missing-rows" in report["items"][0]["reason"]
    assert len(store.list_versions("arc-kron")) == 3  # reported, not deleted
    report = gc_json(capsys, url, "--apply", "--delete-missing-rows")
    assert [i["action"] for i in report["items"]] == ["removed"]
    assert [v.number for v in store.list_versions("arc-kron")] == [1, 3]


def test_gc_keeps_young_objects_and_live_or_foreign_staging(
    reg: tuple[str, RegistryStore], tmp_path: Path
) -> None:
    _, store = reg
    orphan = store.artifacts.put(make_src(tmp_path, "orphan", {"x.bin": b"x"}))
    live = store.artifacts.root / "tmp" / f"{_hostname()}-{os.getpid()}-{'a' * 32}"
    foreign = store.artifacts.root / "tmp" / f"other-host.example-1-{'b' * 32}"
    live.mkdir()
    foreign.mkdir()
    report = store.gc(apply=True)  # default grace: everything here is seconds old
    by_path = {i.path: i for i in report.items}
    assert by_path[orphan.location].action == "keep" and "grace" in by_path[orphan.location].reason
    assert by_path[f"tmp/{foreign.name}"].action == "keep"
    assert by_path[f"tmp/{live.name}"].action == "keep"
    assert "is alive" in by_path[f"tmp/{live.name}"].reason
    assert store.artifacts.exists(orphan.sha256) and foreign.is_dir() and live.is_dir()
    store.gc(apply=True, grace_s=0, include_other_hosts=True)
    assert not foreign.exists() and not store.artifacts.exists(orphan.sha256)
    assert live.is_dir()  # a live writer's folder survives any grace and any flag


def test_gc_keeps_object_whose_row_commits_while_gc_waits_for_the_lock(
    reg: tuple[str, RegistryStore], tmp_path: Path
) -> None:
    """Writer publishes, pauses (holding the sha lock); gc sees no row, reaches the lock; the
    writer commits and releases; gc re-reads under the lock and keeps the object."""
    url, store = reg
    published, gc_waiting = threading.Event(), threading.Event()
    result: dict[str, object] = {}

    def writer_hook() -> None:
        published.set()
        assert gc_waiting.wait(60)

    def writer() -> None:
        with RegistryStore(url, store.artifacts.root) as w:
            src = make_src(tmp_path, "race", {"r.bin": b"race"})
            result["version"] = w.register_version(
                "arc-kron", src, method="kron", on_published=writer_hook
            )

    t = threading.Thread(target=writer)
    t.start()
    assert published.wait(60)
    with RegistryStore(url, store.artifacts.root) as g:
        report = g.gc(apply=True, grace_s=0, before_lock=lambda sha: gc_waiting.set())
    t.join(60)
    v = result["version"]
    [item] = [i for i in report.items if i.kind == "orphan-object"]
    assert all(i.action == "keep" for i in report.items)  # the writer's staging folder is live
    assert item.path == v.artifact_location and item.action == "keep"  # type: ignore[attr-defined]
    assert "committed meanwhile" in item.reason
    assert store.verify(v.ref)[0].ok  # type: ignore[attr-defined]


def test_gc_refuses_to_apply_on_an_empty_database(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    full = RegistryStore(f"sqlite:///{tmp_path / 'a.db'}", root)
    full.artifacts.put(make_src(tmp_path, "s", {"a": b"a"}))
    empty = RegistryStore(f"sqlite:///{tmp_path / 'empty.db'}", root)
    assert [i.action for i in empty.gc(grace_s=0).items] == ["remove"]  # dry run lists it
    with pytest.raises(Exception, match="database holds no versions"):
        empty.gc(apply=True, grace_s=0)


def test_verify_names_changed_files_and_reports_every_bad_row(
    reg: tuple[str, RegistryStore], capsys: pytest.CaptureFixture[str]
) -> None:
    url, store = reg
    v1, v2, v3 = (store.get_version(f"arc-kron:{n}") for n in (1, 2, 3))
    d1, d3 = (store.artifacts.path(v.artifact_location) for v in (v1, v3))
    data = bytearray((d1 / "adapter.safetensors").read_bytes())
    data[0] ^= 1  # one flipped bit
    (d1 / "adapter.safetensors").write_bytes(bytes(data))
    (d3 / "cfg.json").unlink()
    (d3 / "extra.txt").write_text("planted")
    results = {r.version: r for r in store.verify()}
    assert results[v2.ref].ok and not results[v1.ref].ok and not results[v3.ref].ok
    assert results[v1.ref].problems == ("file 'adapter.safetensors' differs",)
    assert results[v3.ref].problems == ("file 'cfg.json' is missing", "extra file 'extra.txt'")

    status, out, err = run_cli(capsys, "--url", url, "verify")
    assert status == 2 and out.splitlines()[-1] == "3 versions checked, 3 problems"
    lines = err.strip().splitlines()
    assert len(lines) == 3 and "Traceback" not in err
    assert lines[0].startswith("error: arc-kron:1: file 'adapter.safetensors' differs (expected")
    assert lines[1].startswith("error: arc-kron:3: file 'cfg.json' is missing")
    assert lines[2].startswith("error: arc-kron:3: extra file 'extra.txt'")


def test_verify_falls_back_without_manifest(reg: tuple[str, RegistryStore]) -> None:
    """Objects published before manifests existed (or with a tampered one) say so."""
    _, store = reg
    v = store.get_version("arc-kron:1")
    d = store.artifacts.path(v.artifact_location)
    (d.parent / f"{d.name}.manifest.json").write_text('{"files": {"x": "0"}}')
    (d / "cfg.json").write_bytes(b"[]")
    [res] = store.verify(v.ref)
    assert not res.ok and res.problems[0].startswith("tree hash differs")
    store.artifacts.remove(v.sha256)
    assert store.verify(v.ref)[0].problems == ("artifact directory is missing",)
