"""Tracker over HTTP: a real `mlflow server` on loopback, an outage mid-run, a closed port."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from kroncl.metrics import AccuracyMatrix
from kroncl.tracking import Tracker

# The `mlflow_server` and `closed_port` fixtures live in tests/conftest.py (shared with
# tests/pipeline).
HTTP_ENV = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")


def jsonl_metric_steps(tracker: Tracker, key: str) -> list[int]:
    records = [json.loads(line) for line in tracker.jsonl_path.read_text().splitlines()]
    return [r["step"] for r in records if r["event"] == "metrics" and key in r["metrics"]]


def test_http_server_round_trip_then_outage(tmp_path: Path, mlflow_server):
    server = mlflow_server
    env_before = {k: os.environ.get(k) for k in HTTP_ENV}
    tracker = Tracker(server.url, "remote", True, tmp_path / "runs" / "r1", max_consecutive_failures=3)
    run_id = tracker.start("remote-run", tags={"kind": "test"})
    assert run_id is not None, tracker.failures
    tracker.log_params({"train": {"lr": 0.01}})
    for step in range(3):
        tracker.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
    artifact = tmp_path / "summary.txt"
    artifact.write_text("ok")
    tracker.log_artifact(artifact, artifact_path="reports")
    assert tracker.failures == []
    assert {k: os.environ.get(k) for k in HTTP_ENV} == env_before  # env only set during calls

    history = server.get("metrics/get-history", run_id=run_id, metric_key="train/loss")["metrics"]
    assert sorted((m["step"], m["value"]) for m in history) == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    run = server.get("runs/get", run_id=run_id)["run"]
    assert {p["key"]: p["value"] for p in run["data"]["params"]} == {"train.lr": "0.01"}
    listed = server.get("artifacts/list", run_id=run_id, path="reports")
    assert [f["path"] for f in listed["files"]] == ["reports/summary.txt"]

    # The tracking server goes away mid-run: training must go on, quickly.
    server.stop()
    t0 = time.monotonic()
    for step in range(3, 8):
        tracker.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
    tracker.set_tags({"phase": "after-outage"})
    tracker.end("FINISHED")
    elapsed = time.monotonic() - t0

    assert elapsed < 30, f"tracking calls blocked for {elapsed:.1f}s during the outage"
    assert [f.operation for f in tracker.failures] == ["log_metrics"] * 3
    assert tracker.gave_up and not tracker.active
    assert jsonl_metric_steps(tracker, "train/loss") == list(range(8))  # nothing lost locally
    assert {k: os.environ.get(k) for k in HTTP_ENV} == env_before


def test_unreachable_server_never_blocks_or_raises(tmp_path: Path, closed_port: int):
    port = closed_port  # bound and released: nothing listens there
    run_dir = tmp_path / "runs" / "r"
    t0 = time.monotonic()
    tracker = Tracker(f"http://127.0.0.1:{port}", "nowhere", True, run_dir)
    assert tracker.start("offline") is None
    tracker.log_params({"seed": 0})
    for step in range(4):
        tracker.log_metrics({"train/loss": 1.0 - 0.1 * step}, step=step)
    matrix = AccuracyMatrix(["a", "b"], baseline=[0.5, 0.5], rows=[[0.9, 0.4], [0.7, 0.95]])
    files = tracker.log_accuracy_matrix(matrix)
    tracker.end("FINISHED")
    elapsed = time.monotonic() - t0

    assert elapsed < 30, f"tracking took {elapsed:.1f}s against a closed port"
    assert [f.operation for f in tracker.failures] == ["start"]
    assert "127.0.0.1" in tracker.failures[0].error or "Connection" in tracker.failures[0].error
    assert tracker.run_id is None and not tracker.active
    assert jsonl_metric_steps(tracker, "train/loss") == [0, 1, 2, 3]
    assert jsonl_metric_steps(tracker, "stream/bwt") == [1]
    assert files["heatmap_png"].is_file() and files["matrix_csv"].is_file()
    events = [json.loads(line)["event"] for line in tracker.jsonl_path.read_text().splitlines()]
    assert events[0] == "start" and events[1] == "params" and events[-1] == "end"
