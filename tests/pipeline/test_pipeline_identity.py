"""Run identity in a shared registry: a seed sweep shares one base model; other weights are refused clearly."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest

from kroncl.errors import ConfigError


def test_a_seed_sweep_on_one_runs_folder_shares_the_base_and_is_told_apart_by_run(pipeline_runner, tmp_path):
    runs = tmp_path / "runs"
    first = pipeline_runner(runs, ["seed=0", "tracking=off"], "seed0")
    second = pipeline_runner(runs, ["seed=1", "tracking=off"], "seed1")
    ids = [json.loads((r.run_dir / "run.json").read_text())["run_id"] for r in (first, second)]
    assert ids[0] != ids[1]

    from registry.cli import main

    for run_id, run in zip(ids, (first, second)):
        out = io.StringIO()
        with redirect_stdout(out):
            assert main(["--url", run.registry_url, "--artifacts", str(run.registry_artifacts),
                         "list", "--run", run_id, "--json"]) == 0
        versions = json.loads(out.getvalue())
        assert sorted(f"{v['adapter']}:{v['number']}" for v in versions) == sorted(r for rec in run.result.artifacts for r in (rec.get("fp32_ref"), rec.get("quant_ref")) if r)
        assert {v["tags"]["seed"] for v in versions} == {"0" if run is first else "1"}


def test_other_base_weights_in_a_shared_registry_are_a_config_error_before_tracking(pipeline_runner, tmp_path):
    runs = tmp_path / "runs"
    pipeline_runner(runs, ["tracking=off"], "head0")
    with pytest.raises(ConfigError, match=r"already holds base model 'tiny-bert' with other weights \(revision \w+; these weights hash to \w+\)\. The frozen weights here \(head initialised with model\.seed=1\)"):
        pipeline_runner(runs, ["model.seed=1"], "head1")
    assert not (runs / "toy" / "head1").exists(), "a user error leaves no run directory"
    assert not (runs / "mlflow.db").exists(), "the error comes before any MLflow run is opened"


def test_rows_dropped_as_invalid_are_counted_in_the_summary_files(pipeline_runner, tmp_path):
    data = tmp_path / "data"
    for task in ("alpha", "beta"):
        (data / task).mkdir(parents=True)
        rows = [{"id": f"{task}-{split}-{i}", "question": f"{task} question {i}?", "choices": ["yes", "no"],
                 "label": i % 2} for split in ("train", "test") for i in range(12)]
        rows.append({"id": f"{task}-train-bad", "question": "broken", "choices": ["only one"], "label": 0})
        for split in ("train", "test"):
            lines = [json.dumps(r) for r in rows if f"-{split}-" in r["id"]]
            (data / task / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    run = pipeline_runner(tmp_path / "runs", [f"data.dir={data}", "stream.tasks=[alpha,beta]", "stream.name=mine",
                                              "tracking=off", "registry=off"], "dropped")
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["dropped_rows"] == {"alpha": {"train": 1}, "beta": {"train": 1}}
    assert "dropped rows (invalid, see run.log): alpha train 1; beta train 1" in (run.run_dir / "summary.txt").read_text()
