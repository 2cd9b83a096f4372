"""The ``s3://`` artifact root against a real S3 API: moto's server on loopback, real HTTP through
boto3, real processes. No mocks of S3, no sleeps: ages are judged with an explicit ``now``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from registry import HashMismatch, RegistryStore
from registry.cli import main as cli_main
from registry.errors import StorageError
from registry.faults import ENV_VAR as FAULT_ENV
from registry.s3store import S3ArtifactStore

sys.path.insert(0, str(Path(__file__).resolve().parent))  # spawned children inherit sys.path
import s3_worker as worker  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(worker.__file__).resolve()
WEIGHTS, CONFIG = "adapter.safetensors", "adapter_config.json"


def _start() -> tuple[ThreadedMotoServer, str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server, endpoint = _start()
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A fresh bucket on the loopback server; credentials and endpoint in the environment (as a
    team would set them), so child processes inherit them. Yields ``(client, uri, endpoint)``."""
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto_endpoint,
                 "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv(FAULT_ENV, raising=False)
    bucket = f"kroncl-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto_endpoint)
    client.create_bucket(Bucket=bucket)
    return client, f"s3://{bucket}/team/registry", moto_endpoint


def _keys(client, uri: str, under: str = "") -> list[str]:
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/{under}")
    return sorted(o["Key"][len(prefix) + 1:] for page in pages for o in page.get("Contents", []))


def _open(s3, tmp_path: Path, cache: str = "cache") -> S3ArtifactStore:
    _, uri, endpoint = s3
    return S3ArtifactStore(uri, endpoint_url=endpoint, cache_dir=tmp_path / cache)


def _files(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_publish_then_fetch_elsewhere_round_trips_verified(s3, tmp_path: Path) -> None:
    client, uri, _ = s3
    src = worker.write_artifact(tmp_path / "src", "w")
    writer = _open(s3, tmp_path, "writer-cache")

    stored = writer.put(src)

    assert stored.created and writer.exists(stored.sha256)
    loc = stored.location
    # The files and the manifest, nothing else: no tmp/ keys left behind.
    assert _keys(client, uri) == sorted([f"{loc}.manifest.json", f"{loc}/{WEIGHTS}", f"{loc}/{CONFIG}"])
    manifest = json.loads(client.get_object(Bucket=uri.split("/")[2], Key=f"team/registry/{loc}.manifest.json")["Body"].read())
    assert manifest["sha256"] == stored.sha256 and sorted(manifest["files"]) == [WEIGHTS, CONFIG]
    reader = _open(s3, tmp_path, "reader-cache")  # another machine: a cold cache
    fetched = reader.fetch(loc, stored.sha256)
    assert fetched.is_relative_to(tmp_path / "reader-cache") and _files(fetched) == _files(src)
    assert reader.verify(loc, stored.sha256) == stored.sha256
    again = _open(s3, tmp_path, "third-cache").put(src)
    assert (again.sha256, again.created) == (stored.sha256, False)
    assert writer.path(loc) == f"{uri}/{loc}"


def test_an_object_removed_between_staging_and_publishing_is_uploaded_again(s3, tmp_path: Path) -> None:
    client, uri, _ = s3
    src = worker.write_artifact(tmp_path / "src", "w")
    store = _open(s3, tmp_path)
    first = store.put(src)
    with store.staged(src) as staged, store.lock(staged.sha256):
        assert staged.tmp_prefix is None  # published already: nothing uploaded
        assert store.remove(staged.sha256) and not store.exists(staged.sha256)
        again = store.publish(staged)
    assert again.created and _open(s3, tmp_path, "reader").verify(again.location, first.sha256)
    assert _keys(client, uri, "tmp/") == []


def test_an_object_overwritten_in_the_bucket_is_refused_on_load(s3, tmp_path: Path) -> None:
    client, uri, _ = s3
    stored = _open(s3, tmp_path, "writer").put(worker.write_artifact(tmp_path / "src", "w"))
    bucket = uri.split("/")[2]
    client.put_object(Bucket=bucket, Key=f"team/registry/{stored.location}/{WEIGHTS}", Body=b"tampered")

    reader = _open(s3, tmp_path, "reader")
    with pytest.raises(HashMismatch) as err:
        reader.fetch(stored.location, stored.sha256)
    assert err.value.path == f"{uri}/{stored.location}" and err.value.path in err.value.message
    assert err.value.problems == (f"file {WEIGHTS!r} differs",)
    assert not reader.cache.exists(stored.sha256)  # nothing unverified was kept
    with pytest.raises(HashMismatch):  # verify reads the bucket, not the writer's cached copy
        _open(s3, tmp_path, "writer").verify(stored.location, stored.sha256)


def test_a_damaged_cached_copy_is_downloaded_again(s3, tmp_path: Path) -> None:
    src = worker.write_artifact(tmp_path / "src", "w")
    store = _open(s3, tmp_path)
    stored = store.put(src)
    cached = store.cache.path(stored.location)
    (cached / WEIGHTS).write_bytes(b"bit rot")

    assert _files(store.fetch(stored.location, stored.sha256)) == _files(src)


def test_eight_concurrent_writers_publish_one_object_per_content(s3, tmp_path: Path) -> None:
    client, uri, endpoint = s3
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    # Even writers share one content, odd ones each have their own: 1 + 4 objects.
    contents = {w: "shared" if w % 2 == 0 else f"own-{w}" for w in range(8)}
    procs = [
        ctx.Process(target=worker.racing_put, args=(
            uri, endpoint, str(tmp_path / f"cache{w}"),
            str(worker.write_artifact(tmp_path / f"src{w}", contents[w])), w, barrier, results))
        for w in range(8)
    ]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=240) for _ in procs)
    for p in procs:
        p.join(timeout=60)

    assert not {w: o for w, o in outcomes.items() if isinstance(o, str)}, outcomes
    by_content: dict[str, set[str]] = {}
    for w, o in outcomes.items():
        by_content.setdefault(contents[w], set()).add(o["sha256"])
    assert all(len(shas) == 1 for shas in by_content.values()) and len(by_content) == 5
    shas = {next(iter(s)) for s in by_content.values()}
    manifests = [k for k in _keys(client, uri, "objects/") if k.endswith(".manifest.json")]
    assert sorted(m.rsplit("/", 1)[1].removesuffix(".manifest.json") for m in manifests) == sorted(shas)
    assert _keys(client, uri, "tmp/") == []
    reader = _open(s3, tmp_path, "reader")
    for sha in shas:
        assert reader.verify(reader.location_for(sha), sha) == sha


def _killed_writer(s3, tmp_path: Path, fault: str) -> Path:
    """Run a writer process that SIGKILLs itself at ``fault``; return its source folder."""
    _, uri, endpoint = s3
    src = worker.write_artifact(tmp_path / "src", "w")
    env = {**os.environ, FAULT_ENV: fault, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(WORKER), uri, endpoint, str(tmp_path / "dead-cache"), str(src)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return src


def test_a_writer_killed_mid_upload_leaves_only_tmp_keys_that_the_sweep_removes(s3, tmp_path: Path) -> None:
    client, uri, _ = s3
    src = _killed_writer(s3, tmp_path, f"s3_upload:file={WEIGHTS}")  # after 1 of 2 files

    left = _keys(client, uri)
    assert left and all(k.startswith("tmp/") for k in left), left
    store = S3ArtifactStore(uri, cache_dir=tmp_path / "next", sweep=False)
    with store.cache.staged(src) as staged:  # what the killed writer was publishing
        sha = staged.sha256
    assert not store.exists(sha)
    with pytest.raises(HashMismatch, match="manifest"):
        store.fetch(store.location_for(sha), sha)

    stored = store.put(src)  # the next writer publishes fine
    assert stored.created and store.verify(stored.location, sha) == sha
    assert store.sweep_stale_staging(max_age_s=3600) == []  # young: might be a slow writer
    assert _keys(client, uri, "tmp/") == left
    swept = store.sweep_stale_staging(max_age_s=3600, now=time.time() + 7200)
    assert len(swept) == 1 and swept[0].startswith(f"{uri}/tmp/")
    assert _keys(client, uri, "tmp/") == []


def test_opening_a_store_sweeps_uploads_older_than_its_age(s3, tmp_path: Path) -> None:
    client, uri, _ = s3
    _killed_writer(s3, tmp_path, f"s3_upload:file={WEIGHTS}")
    left = _keys(client, uri, "tmp/")
    assert left and S3ArtifactStore(uri, cache_dir=tmp_path / "a").swept == ()  # a day: kept
    # An age below zero makes every upload "old" without waiting for the clock.
    opened = S3ArtifactStore(uri, cache_dir=tmp_path / "b", staging_max_age_s=-60)
    assert [u.removeprefix(f"{uri}/") for u in opened.swept] == [left[0].rsplit("/", 1)[0] + "/"]
    assert _keys(client, uri, "tmp/") == []


def test_a_writer_killed_before_its_manifest_publishes_nothing_visible(s3, tmp_path: Path) -> None:
    client, uri, _ = s3
    src = _killed_writer(s3, tmp_path, "s3_publish")

    store = S3ArtifactStore(uri, cache_dir=tmp_path / "next", sweep=False)
    objects = _keys(client, uri, "objects/")
    assert objects and not any(k.endswith(".manifest.json") for k in objects)  # files, no manifest
    with store.cache.staged(src) as staged:
        sha = staged.sha256
    assert not store.exists(sha)
    stored = store.put(src)
    assert stored.created and store.exists(sha)
    assert store.verify(stored.location, sha) == sha


def test_full_registry_on_sql_and_s3_register_resolve_load(s3, backend_url: str, tmp_path: Path) -> None:
    """SQLite, and (marked ``postgres``) PostgreSQL: the team set-up of the README."""
    client, uri, endpoint = s3
    url = backend_url
    src = worker.write_artifact(tmp_path / "src", "w")
    with RegistryStore(url, uri, s3_endpoint_url=endpoint, artifact_cache=tmp_path / "c1") as store:
        store.register_base_model("org/tiny-bert", revision="rev1")
        store.register_task("arc-easy")
        store.register_adapter("arc-kron", "arc-easy", "org/tiny-bert")
        v = store.register_version("arc-kron", src, method="kron", files=[WEIGHTS, CONFIG],
                                   aliases=["production"])
        assert f"{v.artifact_location}.manifest.json" in _keys(client, uri)

    # Another machine: same database, same bucket, its own empty cache.
    with RegistryStore(url, uri, artifact_cache=tmp_path / "c2") as store:
        resolved = store.get_version("arc-kron@production")
        assert resolved.sha256 == v.sha256
        loaded = store.fetch_artifact("arc-kron@production")
        assert loaded.is_relative_to(tmp_path / "c2") and _files(loaded) == _files(src)
        assert [r.ok for r in store.verify()] == [True]
        assert store.verify()[0].path == f"{uri}/{v.artifact_location}"
        assert store.gc().items == ()
        store.delete_alias("arc-kron", "production")
        store.delete_version("arc-kron:1")
        assert _keys(client, uri) == []


def test_gc_on_s3_removes_old_uploads_and_unreferenced_objects(s3, tmp_path: Path) -> None:
    client, uri, endpoint = s3
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    _killed_writer(s3, tmp_path, f"s3_upload:file={WEIGHTS}")
    with RegistryStore(url, uri, artifact_cache=tmp_path / "c") as store:
        store.register_base_model("org/tiny-bert")
        store.register_task("arc-easy")
        store.register_adapter("arc-kron", "arc-easy", "org/tiny-bert")
        kept = store.register_version("arc-kron", worker.write_artifact(tmp_path / "a", "kept"), method="kron")
        orphan = store.artifacts.put(worker.write_artifact(tmp_path / "b", "orphan"))

        dry = store.gc()
        assert {(i.kind, i.action) for i in dry.items} == {("orphan-object", "keep"), ("staging", "keep")}
        report = store.gc(apply=True, now=time.time() + 7200)
        assert {(i.kind, i.action) for i in report.items} == {("orphan-object", "removed"), ("staging", "removed")}
        assert not store.artifacts.exists(orphan.sha256) and _keys(client, uri, "tmp/") == []
        assert [r.ok for r in store.verify()] == [True] and store.artifacts.exists(kept.sha256)


def test_cli_accepts_an_s3_artifact_root(s3, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, uri, _ = s3  # endpoint and credentials from the environment, as a shell would have them
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with RegistryStore(url, uri, artifact_cache=tmp_path / "c") as store:
        store.register_base_model("org/tiny-bert")
        store.register_task("arc-easy")
        store.register_adapter("arc-kron", "arc-easy", "org/tiny-bert")
        v = store.register_version("arc-kron", worker.write_artifact(tmp_path / "a", "w"), method="kron")
    os.environ["KRONCL_ARTIFACT_CACHE"] = str(tmp_path / "cli-cache")
    try:
        assert cli_main(["--url", url, "--artifacts", uri, "verify"]) == 0
        assert "1 versions checked, 0 problems" in capsys.readouterr().out
        assert cli_main(["--url", url, "--artifacts", uri, "show", "arc-kron:1"]) == 0
        assert f"{uri}/{v.artifact_location}" in capsys.readouterr().out
        os.environ["KRONCL_ARTIFACT_ROOT"] = uri  # the root from the environment, no --artifacts
        assert cli_main(["--url", url, "verify"]) == 0
        assert "1 versions checked, 0 problems" in capsys.readouterr().out
    finally:
        os.environ.pop("KRONCL_ARTIFACT_CACHE", None)
        os.environ.pop("KRONCL_ARTIFACT_ROOT", None)


# -- clear errors ------------------------------------------------------------------------------------


def test_a_missing_bucket_names_the_uri_and_what_to_do(s3, tmp_path: Path) -> None:
    _, _, endpoint = s3
    with pytest.raises(StorageError, match=r"s3://no-such-bucket-x/p .*does not exist; create it"):
        S3ArtifactStore("s3://no-such-bucket-x/p", endpoint_url=endpoint, cache_dir=tmp_path / "c")


def test_an_unreachable_endpoint_says_what_to_set(s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, uri, _ = s3
    with socket.socket() as s:  # a port nothing listens on once it is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(StorageError, match=rf"{uri}: cannot reach .*127.0.0.1:{port}.*set AWS_ENDPOINT_URL"):
        S3ArtifactStore(uri, endpoint_url=f"http://127.0.0.1:{port}", cache_dir=tmp_path / "c")
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with pytest.raises(StorageError):
        RegistryStore(url, uri, s3_endpoint_url=f"http://127.0.0.1:{port}", artifact_cache=tmp_path / "c")


def test_missing_credentials_say_what_to_set(s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, uri, _ = s3
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StorageError, match=rf"{uri}: no credentials .*set AWS_ACCESS_KEY_ID"):
        S3ArtifactStore(uri, cache_dir=tmp_path / "c")


def test_refused_credentials_say_what_to_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    server, endpoint = _start()  # its own server: authentication is switched on for all requests
    try:
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(k, v)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="kroncl-auth")
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=30).raise_for_status()
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
        with pytest.raises(StorageError, match=r"s3://kroncl-auth/p .*refused the credentials.*AWS_ACCESS_KEY_ID"):
            S3ArtifactStore("s3://kroncl-auth/p", endpoint_url=endpoint, cache_dir=tmp_path / "c")
    finally:
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf", timeout=30)
        server.stop()


# -- the team set-up of the README: one bucket for the registry's objects and MLflow's artifacts ----


def test_registry_and_an_mlflow_server_share_one_bucket(s3, start_mlflow_server, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from registry.mlflow_models import mirror_version

    client, uri, endpoint = s3  # registry objects under s3://<bucket>/team/registry
    bucket = uri.split("/")[2]
    server = start_mlflow_server(artifacts_destination=f"s3://{bucket}/team/mlflow",
                                 extra_env={"MLFLOW_S3_ENDPOINT_URL": endpoint})
    ml = MlflowClient(server.url)  # the client uploads through the server: it needs no S3 access
    run_id = ml.create_run(ml.create_experiment("kroncl")).info.run_id
    src = worker.write_artifact(tmp_path / "src", "w")
    with RegistryStore(f"sqlite:///{tmp_path / 'registry.db'}", uri, artifact_cache=tmp_path / "c") as store:
        store.register_base_model("org/tiny-bert")
        store.register_task("arc-easy")
        store.register_adapter("arc-kron", "arc-easy", "org/tiny-bert")
        v = store.register_version("arc-kron", src, method="kron", mlflow_run_id=run_id)
        mirrored = mirror_version(store, v.ref, ml)

    team = f"s3://{bucket}/team"
    mlflow_keys = _keys(client, team, "mlflow/")
    weights = [k for k in mlflow_keys if k.endswith(f"/{WEIGHTS}")]
    assert len(weights) == 1, mlflow_keys
    body = client.get_object(Bucket=bucket, Key=f"team/{weights[0]}")["Body"].read()
    assert body == (src / WEIGHTS).read_bytes()
    assert f"registry/{v.artifact_location}/{WEIGHTS}" in _keys(client, team, "registry/")
    assert ml.get_logged_model(mirrored.model_id).artifact_location.startswith("mlflow-artifacts:")
