"""Crash safety of the main job, tested through the fault-injection points of ``kroncl.faults``.

Every test here is deterministic: a run kills itself (SIGKILL) at a named point instead of
being killed "some time after a log line", so the crash lands at the same place on a fast or a
loaded machine. After ``resume=<run dir>`` the run must equal an uninterrupted one: the same
accuracy matrix, the same adapter tensors bit for bit, one registry version per (experience,
bits), one MLflow run (FINISHED) with the same metric points and no duplicate steps, no
temporary file anywhere, no second run directory.

The config switches everything on at once: tracking and registry, quant=int8 and all three
plugins with state (replay buffer, EWC importances, LwF teacher), so a crash that loses any of
them changes the tensors of experience 1 and fails the comparison.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600
BASE = [
    "stream=toy", "model=tiny", "stream.max_train=48", "stream.max_test=24", "train.epochs=2",
    "train.lr=0.01", "train.progress=false", "train.threads=1", "quant=int8", "strategy.replay_mem_size=16",
]
CONFIG = [*BASE, "strategy.plugins=[replay,ewc,lwf]"]
EXPERIENCES = 2

# Each point of kroncl.faults.POINTS, at a place where losing state would show.
KILL_POINTS = [
    "train_step:exp=0:step=2",                      # before any checkpoint exists
    "train_step:exp=1:step=2",                      # plugin state of experience 0 needed
    "after_save:exp=1",
    "during_atomic_write:file=adapter.safetensors:nth=3",  # experience 1's fp32 file, mid-write
    "registry_publish:exp=1:bits=32",               # artifact stored, no row yet
    "after_register:exp=1:bits=8",                  # row committed, no checkpoint yet
    "before_checkpoint:exp=1",
    "during_checkpoint:exp=1",
    "after_checkpoint:exp=0",
    "before_finish",                                # all trained, summary and MLflow end pending
]


def kroncl_run(runs: Path, *args: str, fault: str | None = None, config: list[str] = CONFIG) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "KRONCL_FAULT"}
    env["OMP_NUM_THREADS"] = "1"  # the same float reductions in every process
    if fault:
        env["KRONCL_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "kroncl.run", *config, f"paths.runs={runs}", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def new_runs_root(base: Path, template: Path) -> Path:
    runs = base / "runs"
    runs.mkdir(parents=True)
    shutil.copyfile(template, runs / "mlflow.db")  # skip MLflow's migrations: seconds per run
    return runs


def run_dirs(runs: Path) -> list[Path]:
    return sorted(p for p in (runs / "toy").iterdir() if p.is_dir()) if (runs / "toy").exists() else []


def adapter_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    """Every adapter file the run wrote (fp32 and int8 of each experience), by relative path."""
    out = {}
    for path in sorted((run_dir / "adapters").rglob("adapter.safetensors")):
        for key, t in load_file(str(path)).items():
            out[f"{path.parent.relative_to(run_dir)}/{key}"] = t
    checkpoint = run_dir / "checkpoints" / (run_dir / "checkpoints" / "LATEST").read_text()
    for key, t in load_file(str(checkpoint / "adapters.safetensors")).items():
        if not key.startswith("__rng__"):
            out[f"checkpoint/{key}"] = t
    return out


def registry_rows(runs: Path) -> list[tuple]:
    with sqlite3.connect(runs / "registry.db") as db:
        return db.execute(
            "SELECT a.name, v.number, v.bits, v.sha256, v.artifact_location FROM adapter_versions v "
            "JOIN adapters a ON a.id = v.adapter_id ORDER BY a.name, v.number").fetchall()


def mlflow_runs(runs: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(runs / "mlflow.db") as db:
        return db.execute("SELECT run_uuid, status FROM runs").fetchall()


def metric_points(runs: Path, run_id: str) -> list[tuple[str, int]]:
    with sqlite3.connect(runs / "mlflow.db") as db:
        return sorted(db.execute("SELECT key, step FROM metrics WHERE run_uuid = ?", (run_id,)).fetchall())


def temp_files(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*")
            if p.name.endswith(".tmp") or ".tmp-" in p.name or (p.parent.name == "tmp" and p.parent.parent.name == "registry_artifacts")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mlflow_db_template):
    """The uninterrupted run every crashed-and-resumed run must equal."""
    runs = new_runs_root(tmp_path_factory.mktemp("reference"), mlflow_db_template)
    done = kroncl_run(runs)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = run_dirs(runs)
    return runs, run_dir


@pytest.mark.integration
@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_run_killed_at_each_point_resumes_to_the_uninterrupted_run(point, reference, tmp_path, mlflow_db_template):
    ref_runs, ref_dir = reference
    runs = new_runs_root(tmp_path, mlflow_db_template)
    killed = kroncl_run(runs, fault=point)
    assert killed.returncode == -signal.SIGKILL, f"{point} never fired:\n{killed.stderr[-3000:]}"
    (run_dir,) = run_dirs(runs)
    assert (run_dir / "run.json").exists()

    resumed = kroncl_run(runs, f"resume={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert run_dirs(runs) == [run_dir], "a resume must not leave another run directory"

    # the same results
    ref_matrix = json.loads((ref_dir / "metrics" / "accuracy_matrix.json").read_text())
    got_matrix = json.loads((run_dir / "metrics" / "accuracy_matrix.json").read_text())
    assert got_matrix == ref_matrix
    expected, got = adapter_tensors(ref_dir), adapter_tensors(run_dir)
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key

    # one registry version per (experience, bits), exactly the two files in each artifact
    rows = registry_rows(runs)
    assert [(name, number, bits) for name, number, bits, *_ in rows] == \
        [(name, number, bits) for name, number, bits, *_ in registry_rows(ref_runs)]
    assert len(rows) == 2 * EXPERIENCES
    for *_, location in rows:
        stored = runs / "registry_artifacts" / location
        assert sorted(p.name for p in stored.iterdir()) == ["adapter.safetensors", "adapter_config.json"]
    assert [r[3] for r in rows] == [r[3] for r in registry_rows(ref_runs)], "artifact bytes differ"

    # one MLflow run, finished, with the reference's metric points and no step twice
    (mlflow_run,) = mlflow_runs(runs)
    assert mlflow_run[1] == "FINISHED"
    points = metric_points(runs, mlflow_run[0])
    assert len(points) == len(set(points)), "a metric was logged twice at one step"
    (ref_run,) = mlflow_runs(ref_runs)
    assert points == metric_points(ref_runs, ref_run[0])
    assert json.loads((run_dir / "run.json").read_text())["mlflow_run_id"] == mlflow_run[0]

    assert temp_files(run_dir, runs / "registry_artifacts") == []
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"


@pytest.mark.integration
@pytest.mark.parametrize("plugin", ["replay", "ewc", "lwf"])
def test_each_plugin_alone_resumes_to_the_uninterrupted_run(plugin, tmp_path, mlflow_db_template):
    """Killed inside experience 1, whose training reads the plugin's state from experience 0."""
    config = [*BASE, f"strategy.plugins=[{plugin}]"]
    ref_runs = new_runs_root(tmp_path / "reference", mlflow_db_template)
    assert kroncl_run(ref_runs, config=config).returncode == 0
    runs = new_runs_root(tmp_path / "crashed", mlflow_db_template)
    assert kroncl_run(runs, fault="train_step:exp=1:step=2", config=config).returncode == -signal.SIGKILL
    (run_dir,) = run_dirs(runs)
    resumed = kroncl_run(runs, f"resume={run_dir}", config=config)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (ref_dir,) = run_dirs(ref_runs)
    expected, got = adapter_tensors(ref_dir), adapter_tensors(run_dir)
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    assert (run_dir / "metrics" / "accuracy_matrix.json").read_text() == \
        (ref_dir / "metrics" / "accuracy_matrix.json").read_text()


@pytest.mark.integration
def test_resuming_a_finished_run_reports_it_and_changes_nothing(reference, tmp_path):
    ref_runs, ref_dir = reference
    runs = tmp_path / "runs"
    shutil.copytree(ref_runs, runs)
    run_dir = runs / "toy" / ref_dir.name
    before = (mlflow_runs(runs), registry_rows(runs), (run_dir / "summary.json").read_text())
    again = kroncl_run(runs, f"resume={run_dir}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished" in again.stdout and "nothing to resume" in again.stdout
    assert (mlflow_runs(runs), registry_rows(runs), (run_dir / "summary.json").read_text()) == before
    newest = kroncl_run(runs, "resume=true")
    assert newest.returncode == 0 and "nothing to resume" in newest.stdout
    assert run_dirs(runs) == [run_dir], "no new (empty) run directory"


@pytest.mark.integration
def test_a_config_error_leaves_no_run_directory(tmp_path):
    runs = tmp_path / "runs"
    bad = kroncl_run(runs, "train.lr=-1", "tracking=off", "registry=off")
    assert bad.returncode == 2 and "train.lr" in bad.stderr
    missing = kroncl_run(runs, "tracking=off", "registry=off", f"resume={tmp_path / 'nowhere'}")
    assert missing.returncode == 2 and "not a kroncl run directory" in missing.stderr
    assert run_dirs(runs) == []


@pytest.mark.integration
def test_a_run_directory_in_use_is_refused_with_the_holder(tmp_path):
    from pipelines.run_dir import RunLock

    runs, run_dir = tmp_path / "runs", tmp_path / "runs" / "toy" / "taken"
    run_dir.mkdir(parents=True)
    with RunLock(run_dir):
        second = kroncl_run(runs, "tracking=off", "registry=off", f"hydra.run.dir={run_dir}")
    assert second.returncode == 2
    assert f"run directory {run_dir} is in use by another kroncl process (pid {os.getpid()})" in second.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"], "the refused run wrote nothing"


@pytest.mark.integration
def test_a_finished_run_directory_is_not_reused_by_a_new_run(reference, tmp_path):
    ref_runs, ref_dir = reference
    again = kroncl_run(tmp_path / "runs", "tracking=off", "registry=off", f"hydra.run.dir={ref_dir}")
    assert again.returncode == 2
    assert f"run directory {ref_dir} already holds run" in again.stderr and f"resume={ref_dir}" in again.stderr


@pytest.mark.integration
def test_two_runs_started_together_on_one_fresh_runs_folder(tmp_path):
    """Same second, same runs/ folder, a fresh mlflow.db and registry.db: two runs, both whole."""
    runs = tmp_path / "runs"
    env = {**{k: v for k, v in os.environ.items() if k != "KRONCL_FAULT"}, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "kroncl.run", *CONFIG, f"paths.runs={runs}"]
    procs = [subprocess.Popen([*cmd, f"train.weight_decay={wd}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for wd in (0.0, 0.05)]
    outputs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    dirs = run_dirs(runs)
    assert len(dirs) == 2
    records = [json.loads((d / "run.json").read_text()) for d in dirs]
    assert sorted(r["config"]["train"]["weight_decay"] for r in records) == [0.0, 0.05], "one run a folder"
    for d, record in zip(dirs, records):
        wd = record["config"]["train"]["weight_decay"]
        assert f"weight_decay: {wd}" in (d / "config.yaml").read_text()
        state = json.loads((d / "checkpoints" / "exp-0001" / "state.json").read_text())
        assert state["config"]["train"]["weight_decay"] == wd
    assert sorted(status for _, status in mlflow_runs(runs)) == ["FINISHED", "FINISHED"]
    assert {r["mlflow_run_id"] for r in records} == {run_id for run_id, _ in mlflow_runs(runs)}
    assert len(registry_rows(runs)) == 2 * 2 * EXPERIENCES
