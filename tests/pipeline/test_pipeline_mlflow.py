"""What one run of the main job leaves in MLflow, read back through MLflow's own client.

The run (``int4_run`` in conftest.py) used the embedded SQLite store under its ``paths.runs``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from kroncl.metrics import AccuracyMatrix
from kroncl.tracking import flatten_config
from registry.mlflow_models import MODEL_METRIC_PREFIX

TASKS = ["toy_larger", "toy_smaller"]


@pytest.fixture(scope="module")
def mlflow_run(int4_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=int4_run.tracking_uri)
    return client, client.get_run(int4_run.result.mlflow_run_id)


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_run_is_finished_in_the_configured_experiment(int4_run, mlflow_run):
    client, run = mlflow_run
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == int4_run.resolved["tracking"]["experiment"]
    assert run.info.run_name == "toy · kron · sequential · seed 0"  # the run dir is a tag
    assert run.data.tags["kroncl.stream"] == "toy"
    assert run.data.tags["kroncl.run_dir"] == str(int4_run.run_dir)
    import kroncl

    assert run.data.tags["kroncl.version"] == kroncl.__version__ != "0+unknown"  # installed: a real version
    # The Tracker's record of the run in the run directory names the same run.
    info = json.loads((int4_run.run_dir / "tracking" / "run.json").read_text())
    assert info["run_id"] == run.info.run_id


def test_params_are_the_flattened_composed_config(int4_run, mlflow_run):
    _, run = mlflow_run
    params = run.data.params
    from kroncl.config import DEFAULT_LR

    assert params["train.lr"] == str(DEFAULT_LR[params["adapter.method"]])  # the method's default lr
    assert params["stream.name"] == "toy"
    assert params["stream.max_train"] == "48"
    assert params["quant.scheme"] == "int4"
    assert params["strategy.mode"] == "sequential"
    assert params["stream.tasks"] == json.dumps(TASKS)
    counts = json.loads((int4_run.run_dir / "summary.json").read_text())["param_counts"]
    expected = {**flatten_config(int4_run.resolved), **{f"params.{k}": str(v) for k, v in counts.items()}}
    assert params == expected
    assert int(params["params.adapter_set"]) > 0 and int(params["params.adapted_layers"]) > 0


def test_forgetting_curves_have_one_step_per_experience(int4_run, mlflow_run):
    client, run = mlflow_run
    m = int4_run.result.matrix
    for j, task in enumerate(TASKS):
        assert history(client, run.info.run_id, f"acc/{task}") == [
            (i, pytest.approx(m.rows[i][j])) for i in range(len(TASKS))
        ]
        assert history(client, run.info.run_id, f"baseline/{task}") == [(0, pytest.approx(m.baseline[j]))]
    over_time = m.over_time()
    for key in ("acc", "bwt", "fwt", "forgetting", "avalanche_forgetting", "avalanche_bwt"):
        expected = [(i, pytest.approx(row[key])) for i, row in enumerate(over_time)
                    if row.get(key) is not None and not math.isnan(row[key])]
        assert expected, key
        assert history(client, run.info.run_id, f"stream/{key}") == expected, key
    # stream/acc after the last experience is the run's ACC.
    assert history(client, run.info.run_id, "stream/acc")[-1][1] == pytest.approx(int4_run.result.summary["acc"])


def test_final_metrics_are_logged_once(int4_run, mlflow_run):
    client, run = mlflow_run
    final = [k for k in run.data.metrics if k.startswith("final/")]
    assert {"final/acc", "final/bwt", "final/fwt", "final/forgetting"} <= set(final)
    last = len(TASKS) - 1
    for key in final:
        summary_value = int4_run.result.summary[key.removeprefix("final/")]
        assert history(client, run.info.run_id, key) == [(last, pytest.approx(summary_value))], key


def test_quantization_metrics_per_experience(int4_run, mlflow_run):
    client, run = mlflow_run
    for i, (task, rec) in enumerate(zip(TASKS, int4_run.result.artifacts)):
        ratio = history(client, run.info.run_id, f"quant/{task}/bytes_ratio")
        assert ratio == [(i, pytest.approx(rec["quant_bytes"] / rec["fp32_bytes"]))]
        assert 0 < ratio[0][1] < 0.25  # 4-bit codes plus scales: far below fp32's 32 bits
        err = history(client, run.info.run_id, f"quant/{task}/delta_rel_error_mean")
        assert err == [(i, pytest.approx(rec["delta_rel_error"]["quant_rel_err_mean"]))]
        assert 0 < err[0][1] < 0.5


def test_avalanche_metrics_agree_with_the_accuracy_matrix(int4_run, mlflow_run):
    """Avalanche's own per-experience accuracy (through MLflowLogger) is kroncl's matrix column."""
    client, run = mlflow_run
    m = int4_run.result.matrix
    for j in range(len(TASKS)):
        key = f"avalanche/Top1_Acc_Exp/eval_phase/test_stream/Task{j:03d}/Exp{j:03d}"
        steps, values = zip(*history(client, run.info.run_id, key))
        # zero-shot evaluation, then one evaluation after each experience, at growing iterations
        assert list(values) == pytest.approx([m.baseline[j]] + [m.rows[i][j] for i in range(len(TASKS))])
        assert list(steps) == sorted(set(steps)) and steps[0] == 0
    # avalanche's forgetting/BWT/forward-transfer metrics keep history inside the process (wrong
    # after a resume): not logged; the same values come from R (test_stream_metrics_over_time,
    # tests/metrics/test_avalanche_reference.py checks them against avalanche itself).
    assert not [k for k in run.data.metrics if k.startswith("avalanche/") and
                any(w in k for w in ("Forgetting", "BWT", "ForwardTransfer"))]
    last = len(TASKS) - 1
    assert history(client, run.info.run_id, "stream/avalanche_forgetting")[-1] == \
        (last, pytest.approx(int4_run.result.summary["avalanche_forgetting"]))
    assert history(client, run.info.run_id, "stream/avalanche_bwt")[-1] == \
        (last, pytest.approx(int4_run.result.summary["avalanche_bwt"]))
    for j in range(len(TASKS)):
        loss = history(client, run.info.run_id, f"avalanche/Loss_Epoch/train_phase/train_stream/Task{j:03d}")
        assert len(loss) == 1 and 0 < loss[0][1] < 10  # train.epochs=1
        # The stuck-at-chance check reads the same loss avalanche logs (sequential: no penalty
        # terms), next to ln(2) for the toy tasks' two choices, also in MLflow.
        ours = json.loads((int4_run.run_dir / "summary.json").read_text())["artifacts"][j]["train_loss"]
        assert ours["epochs"] == [pytest.approx(loss[0][1], rel=1e-5)]
        assert ours["chance"] == pytest.approx(math.log(2))
        assert history(client, run.info.run_id, f"reference/{TASKS[j]}/chance_loss") == [(0, pytest.approx(math.log(2)))]


def test_artifacts_are_the_run_directory_files(int4_run, mlflow_run, tmp_path: Path):
    client, run = mlflow_run
    run_id = run.info.run_id
    assert sorted(a.path for a in client.list_artifacts(run_id)) == ["accuracy", "config.yaml"]
    assert sorted(a.path for a in client.list_artifacts(run_id, "accuracy")) == [
        "accuracy/accuracy_heatmap.png", "accuracy/accuracy_matrix.csv", "accuracy/accuracy_matrix.json",
        "accuracy/forgetting_curves.png", "accuracy/metrics.json",
    ]
    local = Path(client.download_artifacts(run_id, "", str(tmp_path)))
    assert (local / "config.yaml").read_text() == (int4_run.run_dir / "config.yaml").read_text()
    assert yaml.safe_load((local / "config.yaml").read_text())["quant"]["scheme"] == "int4"
    for png in ("accuracy_heatmap.png", "forgetting_curves.png"):
        data = (local / "accuracy" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    matrix = int4_run.result.matrix
    stored = AccuracyMatrix.from_dict(json.loads((local / "accuracy" / "accuracy_matrix.json").read_text()))
    assert stored.to_dict() == matrix.to_dict()
    with (local / "accuracy" / "accuracy_matrix.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == TASKS
    cells = [float(c) for row in rows[1:] for c in row[1:] if c not in ("", "nan")]
    expected = [v for row in [matrix.baseline, *matrix.rows] for v in row]
    assert cells == pytest.approx(expected)


def test_registry_tags_point_at_versions_of_this_run(int4_run, mlflow_run):
    from registry import RegistryStore

    _, run = mlflow_run
    store = RegistryStore(int4_run.registry_url, int4_run.registry_artifacts)
    try:
        for task, rec in zip(TASKS, int4_run.result.artifacts):
            ref = run.data.tags[f"registry.{task}"]
            assert ref == rec["quant_ref"]
            version = store.get_version(ref)
            assert version.task == task and version.bits == 4
            assert version.mlflow_run_id == run.info.run_id
            assert store.get_version(rec["fp32_ref"]).mlflow_run_id == run.info.run_id
    finally:
        store.close()
    assert int4_run.result.registry_refs == [run.data.tags[f"registry.{t}"] for t in TASKS]


def test_every_metric_is_mirrored_in_the_run_directory(int4_run, mlflow_run):
    """metrics.jsonl holds every (key, step, value) MLflow holds, so nothing depends on MLflow."""
    client, run = mlflow_run
    mirrored: set[tuple[str, int, float]] = set()
    for line in (int4_run.run_dir / "tracking" / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["event"] == "metrics":
            mirrored |= {(k, record["step"], round(v, 6)) for k, v in record["metrics"].items()}
    # The registry's own version metrics, attached to the LoggedModels, are the exception: the
    # registry holds them (test_pipeline_mlflow_models.py checks they equal its values).
    in_mlflow = {(key, m.step, round(m.value, 6))
                 for key in run.data.metrics if not key.startswith(MODEL_METRIC_PREFIX)
                 for m in client.get_metric_history(run.info.run_id, key)}
    assert in_mlflow == mirrored
