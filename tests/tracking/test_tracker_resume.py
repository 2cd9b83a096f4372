"""Tracker.resume after a crash, and concurrent first use of a fresh SQLite store (real MLflow)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from kroncl.metrics import AccuracyMatrix
from kroncl.tracking import Tracker

TASKS = ["boolq", "piqa", "arc:easy"]
R = [
    [0.80, 0.40, 0.10],
    [0.60, 0.90, 0.35],
    [0.70, 0.50, 0.95],
]
B = [0.25, 0.30, 0.20]
REPO_ROOT = Path(__file__).resolve().parents[2]


def matrix_after(experiences: int) -> AccuracyMatrix:
    matrix = AccuracyMatrix(TASKS)
    for j, acc in enumerate(B):
        matrix.set_baseline(j, acc)
    for i in range(experiences):
        matrix.set_row(i, R[i])
    return matrix


def points(client: MlflowClient, run_id: str) -> Counter:
    """How many points each ``(key, step)`` of the run has."""
    keys = client.get_run(run_id).data.metrics
    return Counter((key, m.step) for key in keys for m in client.get_metric_history(run_id, key))


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_resume_after_crash_logs_each_step_once(runs_root: Path, caplog):
    run_dir = runs_root / "seq"
    first = Tracker(None, "resume", True, run_dir)
    run_id = first.start("seq", tags={"attempt": 1})
    first.log_params({"train": {"lr": 0.002}})
    for step in (0, 1):
        first.log_metrics({"train/loss": 1.0 / (step + 1), "lr": 0.1}, step=step)
    first.log_accuracy_matrix(matrix_after(2))
    client = MlflowClient(tracking_uri=first.tracking_uri)
    del first  # "SIGKILL": no end()
    assert client.get_run(run_id).info.status == "RUNNING"

    second = Tracker(None, "resume", True, run_dir)
    assert second.resume(run_id, tags={"attempt": 2}) == run_id
    assert json.loads((run_dir / "tracking" / "run.json").read_text())["run_id"] == run_id
    with caplog.at_level(logging.WARNING, logger="kroncl.tracking.tracker"):
        second.log_params({"train": {"lr": 0.003}, "seed": 7})  # lr changed: warned, kept
    assert any("'train.lr'='0.003' differs from '0.002'" in r.message for r in caplog.records)
    for step in (1, 2):
        second.log_metrics({"train/loss": 1.0 / (step + 1), "lr": 0.1}, step=step)
    second.log_accuracy_matrix(matrix_after(3))
    second.log_accuracy_matrix(matrix_after(3))
    second.end()
    assert second.failures == []

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["attempt"] == "2"
    assert run.data.params == {"train.lr": "0.002", "seed": "7"}
    counts = points(client, run_id)
    assert counts and set(counts.values()) == {1}, [k for k, n in counts.items() if n > 1]
    assert history(client, run_id, "train/loss") == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    assert history(client, run_id, "acc/boolq") == [(0, 0.80), (1, 0.60), (2, 0.70)]
    assert history(client, run_id, "baseline/piqa") == [(0, 0.30)]
    assert history(client, run_id, "final/forgetting") == [(2, pytest.approx(0.25))]

    # Resuming the finished run once more re-sends nothing, final/* included.
    third = Tracker(None, "resume", True, run_dir)
    assert third.resume(run_id) == run_id
    assert client.get_run(run_id).info.status == "RUNNING"
    third.log_accuracy_matrix(matrix_after(3))
    third.log_params({"train": {"lr": 0.002}})
    third.end()
    assert third.failures == []
    assert client.get_run(run_id).info.status == "FINISHED"
    assert points(client, run_id) == counts

    # The run directory's mirror holds every (key, step) once too.
    mirrored = Counter((key, r["step"]) for r in map(json.loads, second.jsonl_path.read_text().splitlines())
                       if r["event"] == "metrics" for key in r["metrics"])
    assert set(mirrored) == set(counts) and set(mirrored.values()) == {1}


@pytest.mark.parametrize("case", ["unknown", "deleted"])
def test_resume_of_missing_run_starts_a_new_one(runs_root: Path, case: str, caplog):
    run_dir = runs_root / "lost"
    client = MlflowClient(tracking_uri=Tracker(None, "resume", True, run_dir).tracking_uri)
    if case == "unknown":
        old_id = "0" * 32
    else:
        old = Tracker(None, "resume", True, run_dir)
        old_id = old.start("old")
        client.delete_run(old_id)

    tracker = Tracker(None, "resume", True, run_dir)
    with caplog.at_level(logging.WARNING, logger="kroncl.tracking.tracker"):
        new_id = tracker.resume(old_id, tags={"attempt": 2})
    assert new_id is not None and new_id != old_id
    assert [f.operation for f in tracker.failures] == ["resume"]
    assert old_id in tracker.failures[0].error and "started a new run" in tracker.failures[0].error
    assert any(old_id in r.message for r in caplog.records)
    assert not tracker.gave_up
    tracker.log_metrics({"m": 1.0}, step=0)
    tracker.end()
    run = client.get_run(new_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "lost"
    assert run.data.tags["attempt"] == "2" and run.data.metrics == {"m": 1.0}
    assert json.loads((run_dir / "tracking" / "run.json").read_text())["run_id"] == new_id


CHILD = """
import json, sys
import mlflow.tracking  # imported before the handshake: the race is on the store, not imports
from kroncl.tracking import Tracker

tracker = Tracker(None, "race", True, sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()  # "go": both processes are past their imports
run_id = tracker.start(sys.argv[2])
tracker.log_metrics({"m": 1.0}, step=0)
tracker.end()
print(json.dumps({"run_id": run_id, "failures": [f.error for f in tracker.failures]}), flush=True)
"""


def test_two_processes_start_on_a_fresh_store(tmp_path: Path):
    root = tmp_path / "fresh"  # no mlflow.db yet: both processes race to create it
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(root / name), name], cwd=tmp_path, env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("a", "b")]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert [r["failures"] for r in results] == [[], []]
    run_ids = [r["run_id"] for r in results]
    assert all(run_ids) and run_ids[0] != run_ids[1]
    assert (root / "mlflow.db.lock").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    runs = [client.get_run(run_id) for run_id in run_ids]
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert runs[0].info.experiment_id == runs[1].info.experiment_id
    assert client.get_experiment(runs[0].info.experiment_id).name == "race"
