"""Fixtures for the kroncl.data tests: the real offline data and stand-in hub endpoints.

The hub endpoints live on 127.0.0.1 only: a closed port (refused at once), a server that accepts
connections and never answers (exercises the probe timeout), and one that answers HEAD with 200
(the hub "is reachable", so the real hub loading code runs up to ``datasets.load_dataset``).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import datasets.config
import huggingface_hub.constants
import pytest

from kroncl.data import hub as hub_module


def shared_data_dir() -> Path:
    env = os.environ.get("KRONCL_SHARED_DATA")
    return Path(env) if env else (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()


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
