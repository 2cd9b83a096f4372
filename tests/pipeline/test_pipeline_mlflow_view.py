"""How one run of the main job reads in the MLflow UI: its name, description, steps and chart.

Everything is read back from the run's real MLflow store (``int4_run`` in conftest.py:
``strategy=sequential quant=int4``, default adapter ``kron``, seed 0, two toy tasks).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from kroncl.metrics import AccuracyMatrix
from kroncl.tracking.run_view import CURVES_ARTIFACT, DESCRIPTION_TAG

TASKS = ["toy_larger", "toy_smaller"]


@pytest.fixture(scope="module")
def mlflow_run(int4_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=int4_run.tracking_uri)
    return client, client.get_run(int4_run.result.mlflow_run_id)


def steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_run_is_named_by_what_it_is_and_the_run_dir_is_a_tag(int4_run, mlflow_run):
    _, run = mlflow_run
    assert run.info.run_name == "toy · kron · sequential · seed 0"
    tags = run.data.tags
    assert tags["kroncl.run_dir_name"] == int4_run.run_dir.name == "int4-sequential"
    assert tags["kroncl.run_dir"] == str(int4_run.run_dir)
    assert (tags["kroncl.stream"], tags["kroncl.adapter"], tags["kroncl.strategy"], tags["kroncl.seed"]) == \
        ("toy", "kron", "sequential", "0")


def test_the_run_can_be_found_by_its_tags(int4_run, mlflow_run):
    client, run = mlflow_run
    found = client.search_runs([run.info.experiment_id],
                               "tags.`kroncl.adapter` = 'kron' and tags.`kroncl.strategy` = 'sequential'")
    assert [r.info.run_id for r in found] == [run.info.run_id]
    by_name = client.search_runs([run.info.experiment_id], "attributes.run_name LIKE 'toy · kron%'")
    assert [r.info.run_id for r in by_name] == [run.info.run_id]


def test_description_says_what_the_run_is_and_what_to_open(int4_run, mlflow_run):
    _, run = mlflow_run
    note = run.data.tags[DESCRIPTION_TAG]
    assert "stream `toy` (`toy_larger` → `toy_smaller`)" in note
    assert "adapter `kron`" in note and "strategy `sequential`" in note and "seed 0" in note
    assert f"`{CURVES_ARTIFACT}`" in note and "`accuracy/metrics.json`" in note
    assert "`accuracy/accuracy_matrix.csv`" in note and "`final/*`" in note
    assert "`stream/bwt`" in note and "last value is `final/bwt`" in note
    assert "`avalanche/*`" in note and "training iteration" in note
    assert str(int4_run.run_dir) in note
    # the chart itself, embedded: the MLflow server's get-artifact route for this run's PNG
    url = f"get-artifact?path=accuracy%2Fforgetting_curves.png&run_uuid={run.info.run_id}"
    assert f"[![forgetting curves]({url})]({url})" in note


def test_every_metric_is_an_experience_step_or_under_the_avalanche_prefix(mlflow_run):
    """avalanche's metrics (step = training iteration) sit apart under ``avalanche/``; every
    kroncl per-experience metric has one point per experience, at the experience index."""
    client, run = mlflow_run
    run_id, T = run.info.run_id, len(TASKS)
    keys = sorted(run.data.metrics)
    avalanche = [k for k in keys if k.startswith("avalanche/")]
    assert any(k.startswith("avalanche/Top1_Acc_Exp/") for k in avalanche)
    assert all(k.startswith("avalanche/") for k in keys if "Top1_" in k or "Loss_" in k)
    iteration_steps = {s for k in avalanche for s in steps(client, run_id, k)}
    assert max(iteration_steps) > T - 1  # iterations, not experiences: kept apart by the prefix
    families = {k.split("/")[0] for k in keys if not k.startswith("avalanche/")}
    assert families == {"acc", "stream", "predictions", "select", "quant", "baseline", "final", "reference", "val",
                        "registered"}
    for key in keys:
        if key.startswith(("acc/", "predictions/", "stream/acc", "stream/avalanche_")):
            assert steps(client, run_id, key) == list(range(T)), key
        elif key.startswith(("stream/bwt", "stream/fwt", "stream/forgetting")):
            assert steps(client, run_id, key) == list(range(1, T)), key  # defined once two tasks are seen
        elif key.startswith(("select/", "quant/", "registered/")):  # registered/: the LoggedModels' metrics
            task = key.split("/")[1]
            assert steps(client, run_id, key) == [TASKS.index(task)], key
        elif key.startswith("final/"):
            assert steps(client, run_id, key) == [T - 1], key
        elif key.startswith(("baseline/", "reference/")):
            assert steps(client, run_id, key) == [0], key
        elif key.startswith("val/"):
            assert steps(client, run_id, key) == [1], key  # step = epoch; train.epochs=1
        else:
            assert key.startswith("avalanche/"), key


def test_forgetting_chart_is_one_image_with_every_task(int4_run, mlflow_run, tmp_path: Path):
    from kroncl.tracking import forgetting_curves_figure

    client, run = mlflow_run
    run_id = run.info.run_id
    assert CURVES_ARTIFACT in [a.path for a in client.list_artifacts(run_id, "accuracy")]
    png = Path(client.download_artifacts(run_id, CURVES_ARTIFACT, str(tmp_path)))
    image = Image.open(png)
    image.verify()
    image = Image.open(png)
    assert image.format == "PNG" and image.width > 400 and image.height > 300
    # The same chart rebuilt from the run's stored matrix and reference chance levels.
    matrix_json = client.download_artifacts(run_id, "accuracy/accuracy_matrix.json", str(tmp_path))
    matrix = AccuracyMatrix.from_dict(json.loads(Path(matrix_json).read_text()))
    assert matrix.to_dict() == int4_run.result.matrix.to_dict()
    chance = {t: run.data.metrics[f"reference/{t}/chance"] for t in TASKS}
    labels = [line.get_label() for line in forgetting_curves_figure(matrix, chance=chance).axes[0].get_lines()]
    named = [x for x in labels if not x.startswith("_")]
    assert named[: len(TASKS) + 1] == [*TASKS, "ACC (tasks seen)"]
    assert [x for x in named if x.startswith("chance")] in (["chance"], [f"chance {t}" for t in TASKS])
    # the local copy in the run directory is the uploaded one
    assert png.read_bytes() == (int4_run.run_dir / "tracking" / CURVES_ARTIFACT).read_bytes()
