"""Tracker against a real embedded MLflow store (SQLite + file artifacts) in tmp_path."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from kroncl.metrics import AccuracyMatrix
from kroncl.tracking import Tracker, default_tracking_uri

TASKS = ["boolq", "piqa", "arc:easy"]
R = [
    [0.80, 0.40, 0.10],
    [0.60, 0.90, 0.35],
    [0.70, 0.50, 0.95],
]
B = [0.25, 0.30, 0.20]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for info in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, info.path) if info.is_dir else {info.path}
    return out


@pytest.fixture
def run_dir(runs_root: Path) -> Path:
    return runs_root / "2026-01-01_seq"


def test_default_store_round_trip(run_dir: Path, tmp_path: Path):
    tracker = Tracker(None, "kroncl-test", True, run_dir)
    assert tracker.tracking_uri == default_tracking_uri(tmp_path / "runs")
    assert tracker.tracking_uri.startswith("sqlite:///") and tracker.tracking_uri.endswith("runs/mlflow.db")

    run_id = tracker.start("seq-run", tags={"strategy": "sequential"})
    assert run_id is not None
    tracker.log_params({"train": {"lr": 0.002, "epochs": 3}, "adapter.method": "kron"})
    for step, loss in enumerate([1.0, 0.5, 0.25]):
        tracker.log_metrics({"train/loss": loss, "lr": 0.002 * (1 - step / 3)}, step=step)
    (run_dir / "adapters").mkdir(parents=True)
    (run_dir / "adapters" / "boolq.txt").write_text("weights")
    note = run_dir / "note.txt"
    note.write_text("hello")
    tracker.log_artifact(note)
    tracker.log_artifact(run_dir / "adapters", artifact_path="adapters")
    tracker.set_tags({"registry.version": 7})
    tracker.end("FINISHED")
    assert tracker.failures == []

    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "seq-run"
    assert client.get_experiment(run.info.experiment_id).name == "kroncl-test"
    assert run.data.params == {"train.lr": "0.002", "train.epochs": "3", "adapter.method": "kron"}
    assert run.data.tags["strategy"] == "sequential" and run.data.tags["registry.version"] == "7"
    history = client.get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(0, 1.0), (1, 0.5), (2, 0.25)]
    assert artifact_paths(client, run_id) == {"note.txt", "adapters/boolq.txt"}
    # Artifacts live in the run directory root, next to the database.
    stored = list((tmp_path / "runs" / "mlartifacts").rglob("boolq.txt"))
    assert len(stored) == 1 and stored[0].read_text() == "weights"

    # The run directory has its own record of everything.
    records = read_jsonl(tracker.jsonl_path)
    assert [r["event"] for r in records] == ["start", "params", "metrics", "metrics", "metrics",
                                             "artifact", "artifact", "tags", "end"]
    assert records[2] == {**records[2], "step": 0, "metrics": {"train/loss": 1.0, "lr": 0.002}}
    assert json.loads((run_dir / "tracking" / "run.json").read_text())["run_id"] == run_id


def test_second_tracker_reuses_the_experiment(run_dir: Path):
    first = Tracker(None, "shared", True, run_dir)
    second = Tracker(None, "shared", True, run_dir.parent / "other")
    a, b = first.start("a"), second.start("b")
    assert a and b and a != b
    assert first.experiment_id == second.experiment_id
    first.end(), second.end("FAILED")
    client = MlflowClient(tracking_uri=first.tracking_uri)
    assert client.get_run(b).info.status == "FAILED"
    with pytest.raises(RuntimeError, match="already started"):
        first.start("again")
    with pytest.raises(ValueError, match="not one of"):
        first.end("DONE")


def test_disabled_tracker_is_a_no_op(tmp_path: Path):
    run_dir = tmp_path / "runs" / "r"
    tracker = Tracker(None, "off", False, run_dir)
    assert tracker.start("x") is None
    tracker.log_params({"a": 1})
    tracker.log_metrics({"m": 1.0}, step=0)
    tracker.log_artifact(tmp_path / "missing")
    m = AccuracyMatrix(TASKS, baseline=B, rows=R)
    assert tracker.log_accuracy_matrix(m) == {}
    tracker.end()
    assert not (tmp_path / "runs").exists()
    assert tracker.failures == []


def test_metric_values_and_names_are_cleaned(run_dir: Path, caplog):
    import torch

    tracker = Tracker(None, "clean", True, run_dir)
    run_id = tracker.start("clean")
    with caplog.at_level(logging.WARNING, logger="kroncl.tracking.tracker"):
        tracker.log_metrics({"acc/arc:easy": torch.tensor(0.5), "hist": torch.zeros(4), "none": None,
                             "nan": float("nan")}, step=3)
        tracker.log_metrics({"hist": torch.zeros(4)}, step=4)
    assert sum("'hist' is not a scalar" in r.message for r in caplog.records) == 1  # warned once
    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    metrics = client.get_run(run_id).data.metrics
    assert set(metrics) == {"acc/arc_easy", "nan"}
    assert metrics["acc/arc_easy"] == 0.5
    last = read_jsonl(tracker.jsonl_path)[-1]
    assert last["metrics"] == {"acc/arc_easy": 0.5, "nan": "nan"}


def test_missing_artifact_is_recorded_not_raised(run_dir: Path):
    tracker = Tracker(None, "art", True, run_dir)
    tracker.start("art")
    tracker.log_artifact(run_dir / "nope.bin")
    assert [f.operation for f in tracker.failures] == ["log_artifact"]
    assert "nope.bin" in tracker.failures[0].error
    tracker.log_metrics({"x": 1.0}, step=0)  # a success resets the consecutive-failure count
    assert not tracker.gave_up


def test_log_accuracy_matrix_after_each_experience(run_dir: Path):
    tracker = Tracker(None, "matrix", True, run_dir)
    run_id = tracker.start("matrix")
    matrix = AccuracyMatrix(TASKS)
    for j, acc in enumerate(B):
        matrix.set_baseline(j, acc)
    for i, row in enumerate(R):
        matrix.set_row(i, row)
        files = tracker.log_accuracy_matrix(matrix)  # called after every experience
    tracker.end()
    assert tracker.failures == []

    client = MlflowClient(tracking_uri=tracker.tracking_uri)

    def history(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))

    # One entry per experience: earlier steps are not re-logged by later calls.
    assert history("acc/boolq") == [(0, 0.80), (1, 0.60), (2, 0.70)]
    assert history("acc/arc_easy") == [(0, 0.10), (1, 0.35), (2, 0.95)]
    assert [s for s, _ in history("stream/acc")] == [0, 1, 2]
    assert history("stream/bwt") == [(1, pytest.approx(-0.20)), (2, pytest.approx(-0.25))]  # undefined at step 0
    assert history("stream/fwt")[-1] == (2, pytest.approx(0.125))
    assert history("stream/avalanche_fwt")[0] == (0, pytest.approx(0.40 - 0.30))
    assert history("baseline/piqa") == [(0, 0.30)]
    assert history("final/forgetting") == [(2, pytest.approx(0.25))]

    assert artifact_paths(client, run_id) == {
        "accuracy/accuracy_matrix.json", "accuracy/accuracy_matrix.csv", "accuracy/metrics.json",
        "accuracy/accuracy_heatmap.png", "accuracy/forgetting_curves.png",
    }
    assert set(files) == {"matrix_json", "matrix_csv", "metrics_json", "heatmap_png", "curves_png"}
    assert AccuracyMatrix.load(files["matrix_json"].parent) == matrix
    local = client.download_artifacts(run_id, "accuracy/metrics.json", str(run_dir.parent / "dl"))
    assert json.loads(Path(local).read_text())["bwt"] == pytest.approx(-0.25)


def test_explicit_sqlite_uri_and_artifact_root(tmp_path: Path):
    db = tmp_path / "db" / "store.db"
    db.parent.mkdir()
    tracker = Tracker(f"sqlite:///{db}", "explicit", True, tmp_path / "r", artifact_root=tmp_path / "arts")
    run_id = tracker.start("e")
    f = tmp_path / "a.txt"
    f.write_text("a")
    tracker.log_artifact(f)
    tracker.end()
    assert tracker.failures == []
    assert list((tmp_path / "arts").rglob("a.txt"))
    run = MlflowClient(tracking_uri=f"sqlite:///{db}").get_run(run_id)
    assert run.info.artifact_uri.startswith((tmp_path / "arts").as_uri())


def test_from_config_and_pickling(run_dir: Path):
    import pickle

    from kroncl.config import TrackingConfig

    tracker = Tracker.from_config(TrackingConfig(enabled=True, uri=None, experiment="cfg"), run_dir)
    run_id = tracker.start("cfg")
    tracker.log_metrics({"m": 1.0}, step=0)
    # Avalanche checkpoints pickle the evaluator and its loggers; the MLflow client is rebuilt.
    clone = pickle.loads(pickle.dumps(tracker))
    assert clone.run_id == run_id and clone._client is None
    clone.log_metrics({"m": 2.0}, step=1)
    clone.end()
    assert clone.failures == []
    history = MlflowClient(tracking_uri=tracker.tracking_uri).get_metric_history(run_id, "m")
    assert sorted((m.step, m.value) for m in history) == [(0, 1.0), (1, 2.0)]
