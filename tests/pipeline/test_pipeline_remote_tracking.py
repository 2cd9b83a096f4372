"""The main job against a tracking server: a real ``mlflow server`` over HTTP, and none at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TASKS = ["toy_larger", "toy_smaller"]


def jsonl_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "tracking" / "metrics.jsonl").read_text().splitlines()]


def jsonl_history(run_dir: Path, key: str) -> list[tuple[int, float]]:
    return [(r["step"], r["metrics"][key]) for r in jsonl_records(run_dir)
            if r["event"] == "metrics" and key in r["metrics"]]


def test_run_against_an_mlflow_server_over_http(tmp_path: Path, mlflow_server, pipeline_runner):
    run = pipeline_runner(tmp_path / "runs", [f"tracking.uri={mlflow_server.url}", "tracking.experiment=http-e2e",
                                              "registry=off", "quant=none"], "http")
    run_id = run.result.mlflow_run_id
    assert run_id is not None
    assert json.loads((run.run_dir / "summary.json").read_text())["tracking_failures"] == 0
    assert f"MLflow run {run_id} in {mlflow_server.url}" in run.printed
    assert not (tmp_path / "runs" / "mlflow.db").exists()  # nothing went to the embedded store

    m = run.result.matrix
    for j, task in enumerate(TASKS):
        history = mlflow_server.get("metrics/get-history", run_id=run_id, metric_key=f"acc/{task}")["metrics"]
        assert sorted((h["step"], h["value"]) for h in history) == [
            (i, pytest.approx(m.rows[i][j])) for i in range(len(TASKS))
        ]
    acc = mlflow_server.get("metrics/get-history", run_id=run_id, metric_key="final/acc")["metrics"]
    assert [(h["step"], h["value"]) for h in acc] == [(len(TASKS) - 1, pytest.approx(run.result.summary["acc"]))]

    info = mlflow_server.get("runs/get", run_id=run_id)["run"]
    assert info["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in info["data"]["params"]}
    from kroncl.config import DEFAULT_LR

    assert params["train.lr"] == str(DEFAULT_LR[params["adapter.method"]]) and params["tracking.uri"] == mlflow_server.url
    metric_keys = {mm["key"] for mm in info["data"]["metrics"]}
    assert "avalanche/Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp000" in metric_keys
    assert not any(k.startswith("quant/") for k in metric_keys)  # quant=none
    tags = {t["key"]: t["value"] for t in info["data"].get("tags", [])}
    assert not any(k.startswith("registry.") for k in tags)  # registry=off
    experiment = mlflow_server.get("experiments/get", experiment_id=info["info"]["experiment_id"])
    assert experiment["experiment"]["name"] == "http-e2e"

    listed = mlflow_server.get("artifacts/list", run_id=run_id, path="accuracy")
    assert {f["path"] for f in listed["files"]} >= {"accuracy/accuracy_matrix.csv", "accuracy/forgetting_curves.png"}
    # the server stored the uploads in its own artifact folder
    stored = list((mlflow_server.log.parent / "server-artifacts").rglob("accuracy_heatmap.png"))
    assert len(stored) == 1 and stored[0].stat().st_size > 1000


def test_unreachable_mlflow_loses_no_training(offline_int8_run):
    run = offline_int8_run
    result = run.result
    assert result.mlflow_run_id is None
    assert result.matrix.is_complete
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["tracking_failures"] >= 1
    jsonl = run.run_dir / "tracking" / "metrics.jsonl"
    assert f"call(s) failed; every metric is in {jsonl}" in run.printed
    assert run.printed == (run.run_dir / "summary.txt").read_text() + "\n"  # print() adds one

    # every metric is in the run directory's mirror
    m = result.matrix
    for j, task in enumerate(TASKS):
        assert jsonl_history(run.run_dir, f"acc/{task}") == [(i, m.rows[i][j]) for i in range(len(TASKS))]
    assert jsonl_history(run.run_dir, "final/acc") == [(len(TASKS) - 1, result.summary["acc"])]
    assert jsonl_history(run.run_dir, "avalanche/Top1_Acc_Exp/eval_phase/test_stream/Task001/Exp001")
    for i, task in enumerate(TASKS):
        assert [s for s, _ in jsonl_history(run.run_dir, f"quant/{task}/bytes_ratio")] == [i]
    events = [r["event"] for r in jsonl_records(run.run_dir)]
    assert events[0] == "start" and events[-1] == "end" and "params" in events

    # the accuracy matrix and its plots are on disk
    for folder in (run.run_dir / "metrics", run.run_dir / "tracking" / "accuracy"):
        assert json.loads((folder / "accuracy_matrix.json").read_text())["rows"] == m.rows
        assert (folder / "accuracy_matrix.csv").is_file() and (folder / "metrics.json").is_file()
    for png in ("accuracy_heatmap.png", "forgetting_curves.png"):
        assert (run.run_dir / "tracking" / "accuracy" / png).stat().st_size > 1000

    # adapters were still saved and registered (with no MLflow run to point at)
    from registry import CONTINUED_FROM, RegistryStore

    store = RegistryStore(run.registry_url, run.registry_artifacts)
    try:
        versions = store.search_versions()
        assert sorted(v.bits for v in versions) == [8, 8, 32, 32]
        assert all(v.mlflow_run_id is None and v.tags["strategy"] == "per_task" for v in versions)
        (r0, r1) = result.artifacts
        assert [(e.version, e.relation) for e in store.ancestors(r1["fp32_ref"])] == [(r0["fp32_ref"], CONTINUED_FROM)]
    finally:
        store.close()
    # the run was not held up by connection retries (MLflow is tried with short timeouts)
    assert run.seconds < 180
