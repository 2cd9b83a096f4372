"""The main job under ``torchrun --nproc_per_node=2`` (gloo, CPU) against the same job in one process.

The configuration has every piece with state or randomness a data-parallel run could get wrong:
replay (its own loader), EWC (an importance pass), LwF (a teacher forward), model selection,
int8 quantization and registration; the 2-process runs add gradient checkpointing. ``train.dropout=0``: dropout masks are drawn per process, so
with dropout two processes are another random draw, not the same run.

Tolerance: the gradients are the same up to float summation order (``test_world.py`` checks them
to 1e-7), and Adam turns that noise in near-zero gradient components into small weight
differences; the accuracy matrices must agree within one test question (1/24), the adapter
tensors within 1e-2 (they are ~0.7 at most).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600
CONFIG = [
    "stream=toy", "model=tiny", "stream.max_train=48", "stream.max_test=24", "train.epochs=2",
    "train.lr=0.01", "train.progress=false", "train.threads=1", "quant=int8", "train.dropout=0",
    "strategy.plugins=[replay,ewc,lwf]", "strategy.replay_mem_size=16", "train.collective_timeout_s=120",
]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]

pytestmark = pytest.mark.integration


def kroncl(runs: Path, *args: str, ranks: int, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "KRONCL_FAULT"}
    env["OMP_NUM_THREADS"] = "1"
    if fault:
        env["KRONCL_FAULT"] = fault
    launcher = TORCHRUN if ranks == 2 else [sys.executable]
    # The 2-process runs also recompute activations in backward: checkpointing must work under
    # torchrun and change no number (it is a speed knob), so it may differ from the 1-process run.
    knobs = ["train.gradient_checkpointing=true"] if ranks == 2 else []
    return subprocess.run([*launcher, "-m", "kroncl.run", *CONFIG, *knobs, f"paths.runs={runs}", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def matrix(run_dir: Path) -> list[list[float]]:
    data = json.loads((run_dir / "metrics" / "accuracy_matrix.json").read_text())
    return [data["baseline"], *data["rows"]]


def adapters(run_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for path in sorted((run_dir / "adapters").rglob("adapter.safetensors")):
        out.update({f"{path.parent.relative_to(run_dir)}/{k}": t for k, t in load_file(str(path)).items()})
    return out


def registry_versions(runs: Path) -> list[tuple]:
    with sqlite3.connect(runs / "registry.db") as db:
        return db.execute("SELECT a.name, v.number, v.bits FROM adapter_versions v "
                          "JOIN adapters a ON a.id = v.adapter_id ORDER BY a.name, v.number").fetchall()


def mlflow_runs(runs: Path) -> list[tuple]:
    with sqlite3.connect(runs / "mlflow.db") as db:
        return db.execute("SELECT r.run_uuid, r.status, t.value FROM runs r LEFT JOIN tags t "
                          "ON t.run_uuid = r.run_uuid AND t.key = 'kroncl.world_size'").fetchall()


def new_runs(base: Path, template: Path) -> Path:
    runs = base / "runs"
    runs.mkdir(parents=True)
    (runs / "mlflow.db").write_bytes(template.read_bytes())  # skip MLflow's migrations
    return runs


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, mlflow_db_template):
    runs = new_runs(tmp_path_factory.mktemp("one"), mlflow_db_template)
    done = kroncl(runs, f"run_dir={runs}/toy/run", ranks=1)
    assert done.returncode == 0, done.stderr[-3000:]
    return runs, runs / "toy" / "run"


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, mlflow_db_template):
    runs = new_runs(tmp_path_factory.mktemp("two"), mlflow_db_template)
    done = kroncl(runs, f"run_dir={runs}/toy/run", ranks=2)
    assert done.returncode == 0, done.stderr[-3000:]
    return runs, runs / "toy" / "run", done


def test_two_processes_reach_the_accuracy_matrix_and_adapters_of_one(one_process, two_processes):
    (_, one), (_, two, done) = one_process, two_processes
    assert "data-parallel: 2 processes, gloo backend; rank 0 writes" in done.stdout
    for row_one, row_two in zip(matrix(one), matrix(two), strict=True):
        assert row_two == pytest.approx(row_one, abs=1 / 24 + 1e-9)
    a, b = adapters(one), adapters(two)
    assert sorted(a) == sorted(b)
    fp32 = [k for k in a if "/fp32/" in k]  # the int8 files' codes may differ by one step
    assert len(fp32) == 82  # 2 experiences x 41 tensors
    worst = max(float((a[k] - b[k]).abs().max()) for k in fp32)
    assert worst <= 1e-2, worst


def test_rank_0_alone_writes_one_run_one_version_per_experience_and_one_checkpoint(one_process, two_processes):
    (runs_one, one), (runs_two, two, _) = one_process, two_processes
    assert registry_versions(runs_two) == registry_versions(runs_one)  # fp32 + int8 per experience
    assert len(registry_versions(runs_two)) == 4
    [(_, status, world_size)] = mlflow_runs(runs_two)
    assert (status, world_size) == ("FINISHED", "2")
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == \
        sorted(p.name for p in (one / "checkpoints").iterdir())
    assert [p.name for p in (runs_two / "toy").iterdir()] == ["run"]  # no folder of rank 1's
    assert sorted(p.relative_to(two).as_posix() for p in two.rglob("*") if p.is_file()
                  if "checkpoints" not in p.parts) == \
        sorted(p.relative_to(one).as_posix() for p in one.rglob("*") if p.is_file()
               if "checkpoints" not in p.parts)


def test_a_rank_killed_mid_experience_fails_the_job_and_resume_under_torchrun_finishes_it(
        two_processes, tmp_path, mlflow_db_template):
    _, uninterrupted, _ = two_processes
    runs = new_runs(tmp_path, mlflow_db_template)
    run_dir = runs / "toy" / "run"
    killed = kroncl(runs, f"run_dir={run_dir}", ranks=2, fault="train_step:exp=1:step=2:rank=1")
    assert killed.returncode != 0
    assert "rank      : 1" in killed.stderr and "SIGKILL" in killed.stderr  # torchrun names the dead rank
    assert (run_dir / "checkpoints" / "LATEST").exists() and not (run_dir / "summary.json").exists()
    resumed = kroncl(runs, f"resume={run_dir}", ranks=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert matrix(run_dir) == matrix(uninterrupted)
    a, b = adapters(run_dir), adapters(uninterrupted)
    assert sorted(a) == sorted(b)
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)
    assert len(registry_versions(runs)) == 4
    [(_, status, _)] = mlflow_runs(runs)
    assert status == "FINISHED"
