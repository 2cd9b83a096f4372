"""Fixtures shared by several test packages: real MLflow stores and a real ``mlflow server``.

* ``mlflow_db_template``: a migrated MLflow SQLite database. Creating one runs all of MLflow's
  Alembic migrations (seconds on a busy machine); copying the migrated file is instant and
  still gives each test its own real store.
* ``mlflow_server``: ``python -m mlflow server`` on a free loopback port, with its own SQLite
  store and artifact folder, stopped (its whole process group) at teardown.
* ``closed_port``: a loopback port nothing listens on (for "tracking unreachable" tests).
* ``shared_data``: the real offline datasets in ``../shared/data`` (or ``$KRONCL_SHARED_DATA``).
* ``closed_hub`` / ``hanging_hub`` / ``answering_hub``: stand-in Hugging Face endpoints on
  127.0.0.1 only (refused at once; accepts and never answers; answers HEAD with 200).

(``tests`` cannot be imported as a package here: a site-packages distribution ships its own
top-level ``tests``, so shared helpers live in this conftest as fixtures.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import datasets.config
import huggingface_hub.constants
import pytest

from kroncl.data import hub as hub_module

SERVER_START_TIMEOUT_S = 150  # the server imports FastAPI, MLflow and migrates SQLite: slow on a busy box


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A running ``mlflow server`` subprocess: ``url``, its ``log`` file, ``get`` and ``stop``."""

    def __init__(self, proc: subprocess.Popen, url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def get(self, endpoint: str, **params: Any) -> dict:
        """GET ``/api/2.0/mlflow/<endpoint>?<params>`` and return the decoded JSON body."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/2.0/mlflow/{endpoint}?{query}", timeout=10) as resp:
            return json.loads(resp.read())

    def wait_healthy(self, timeout_s: float = SERVER_START_TIMEOUT_S) -> None:
        """Block until ``/health`` answers 200; fail the test if the server dies or times out."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after {timeout_s}s:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Terminate the server and every process it spawned (its own process group)."""
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        # uvicorn's worker may outlive the parent for a moment; make sure the group is gone.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def launch_mlflow_server(root: Path, *, artifacts_destination: str | None = None,
                         extra_env: dict[str, str] | None = None) -> MlflowServer:
    """Start (without waiting for) an ``mlflow server`` storing everything under ``root``
    (artifacts in ``artifacts_destination`` when given, e.g. ``s3://bucket/prefix``)."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = root / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job workers in tests
    env.update(extra_env or {})
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination", artifacts_destination or str(root / "server-artifacts"),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return MlflowServer(proc, f"http://127.0.0.1:{port}", log)


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    """A healthy ``mlflow server`` on loopback (stopping it mid-test is allowed)."""
    server = launch_mlflow_server(tmp_path / "mlflow-server")
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_mlflow_server(tmp_path: Path) -> Iterator[Callable[..., MlflowServer]]:
    """``start_mlflow_server(**options of launch_mlflow_server)``: a healthy server; every one
    started is stopped after the test."""
    started: list[MlflowServer] = []

    def start(**options: Any) -> MlflowServer:
        server = launch_mlflow_server(tmp_path / f"mlflow-server-{len(started)}", **options)
        started.append(server)
        server.wait_healthy()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()  # creates + migrates
    return db


def shared_data_dir() -> Path:
    env = os.environ.get("KRONCL_SHARED_DATA")
    return Path(env) if env else (Path(__file__).resolve().parents[1].parent / "shared" / "data").resolve()


@pytest.fixture
def shared_data() -> Path:
    folder = shared_data_dir()
    assert (folder / "arc_challenge" / "train.jsonl").is_file(), f"offline data not found at {folder}; set KRONCL_SHARED_DATA"
    return folder


def _online_mode(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Point the HF libraries at ``endpoint`` in online mode, with a 1 s probe timeout."""
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("KRONCL_HUB_TIMEOUT", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    hub_module._probe.cache_clear()


@pytest.fixture
def closed_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A hub endpoint on a loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    _online_mode(monkeypatch, endpoint)
    yield endpoint
    hub_module._probe.cache_clear()


@pytest.fixture
def hanging_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A hub endpoint that accepts TCP connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    _online_mode(monkeypatch, endpoint)
    yield endpoint
    server.close()
    hub_module._probe.cache_clear()


class _Ok(BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A hub endpoint that answers HEAD with 200."""
    server = HTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    _online_mode(monkeypatch, endpoint)
    yield endpoint
    server.shutdown()
    server.server_close()
    hub_module._probe.cache_clear()
