"""The run directory a run leaves behind, and several runs in one process not mixing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from kroncl.metrics import AccuracyMatrix


def test_run_directory_holds_the_whole_record(int4_run):
    d = int4_run.run_dir
    assert yaml.safe_load((d / "config.yaml").read_text()) == int4_run.resolved
    assert OmegaConf.to_container(OmegaConf.load(d / "config.yaml")) == int4_run.resolved
    assert AccuracyMatrix.load(d / "metrics").to_dict() == int4_run.result.matrix.to_dict()
    assert int4_run.printed == (d / "summary.txt").read_text() + "\n"
    summary = json.loads((d / "summary.json").read_text())
    assert summary["mlflow_run_id"] == int4_run.result.mlflow_run_id and summary["tracking_failures"] == 0
    assert summary["summary"]["acc"] == int4_run.result.summary["acc"]
    assert [a["quant_ref"] for a in summary["artifacts"]] == int4_run.result.registry_refs
    assert sorted(p.name for p in (d / "checkpoints").iterdir()) == ["LATEST", "exp-0000", "exp-0001"]
    for rec in int4_run.result.artifacts:
        for key in ("fp32_dir", "quant_dir"):
            assert sorted(p.name for p in Path(rec[key]).iterdir()) == [
                "adapter.safetensors", "adapter_config.json"]
        assert rec["quant_bytes"] < rec["fp32_bytes"] / 4
    log = (d / "run.log").read_text()
    assert "experience 1: accuracy" in log and f"run directory: {d}" in log


def test_runs_in_one_process_keep_their_own_log(int4_run, offline_int8_run):
    """Library use: a second run must not write into the first run's run.log."""
    first, second = (r.run_dir / "run.log" for r in (int4_run, offline_int8_run))
    assert f"run directory: {offline_int8_run.run_dir}" in second.read_text()
    assert str(offline_int8_run.run_dir) not in first.read_text()
    assert str(int4_run.run_dir) not in second.read_text()
    # and no file handler stays attached (open) after a run returned
    handlers = logging.getLogger("kroncl").handlers
    assert not [h for h in handlers if isinstance(h, logging.FileHandler)
                and h.baseFilename in (str(first), str(second))]


def test_summary_records_references_predictions_and_the_selected_epochs(int4_run):
    summary = json.loads((int4_run.run_dir / "summary.json").read_text())
    assert set(summary["reference"]) == {"toy_larger", "toy_smaller"}
    assert all(r["chance"] == 0.5 and 0.5 <= r["majority"] <= 1 for r in summary["reference"].values())
    for rec in summary["artifacts"]:
        assert set(rec["top_choice"]) == {"toy_larger", "toy_smaller"}
        sel = rec["selection"]
        assert 1 <= sel["selected_epoch"] <= sel["epochs_run"] == len(sel["val_acc"])
    assert "(chance)" in int4_run.printed and "by validation" in int4_run.printed


def test_unknown_task_labels_are_recorded_in_the_matrix_files_summary_and_mlflow(
        pipeline_runner, tmp_path, mlflow_db_template):
    import shutil

    from mlflow.tracking import MlflowClient

    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copyfile(mlflow_db_template, runs / "mlflow.db")
    run = pipeline_runner(runs, ["strategy=per_task", "eval.task_labels=unknown", "registry=off"], "unknown")
    metrics = run.run_dir / "metrics"
    assert json.loads((metrics / "accuracy_matrix.json").read_text())["task_labels"] == "unknown"
    assert json.loads((metrics / "metrics.json").read_text())["task_labels"] == "unknown"
    assert AccuracyMatrix.load(metrics).task_labels == "unknown"
    routing = json.loads((run.run_dir / "summary.json").read_text())["artifacts"][-1]["routing_acc"]
    assert set(routing) == {"toy_larger", "toy_smaller"} and all(0 <= a <= 1 for a in routing.values())
    assert "task labels at test time: unknown" in run.printed and "toy_smaller " in run.printed
    client = MlflowClient(tracking_uri=run.tracking_uri)
    mlflow_run = client.get_run(run.result.mlflow_run_id)
    assert mlflow_run.data.params["eval.task_labels"] == "unknown"
    assert [m.step for m in client.get_metric_history(mlflow_run.info.run_id, "routing/toy_larger/acc")] == [0, 1]
