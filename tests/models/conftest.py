"""Fixtures for the kroncl.models tests."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
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
    assert (folder / "arc_challenge" / "test.jsonl").is_file(), f"offline data not found at {folder}; set KRONCL_SHARED_DATA"
    return folder


@pytest.fixture
def closed_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Online mode, with the hub endpoint on a loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("KRONCL_HUB_TIMEOUT", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    hub_module._probe.cache_clear()
    yield endpoint
    hub_module._probe.cache_clear()
