"""A run killed with SIGKILL in the middle of experience 2 resumes to the same accuracy matrix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def overrides(runs: Path, run_dir: Path) -> list[str]:
    return [
        "stream=toy", "model=tiny", "stream.max_train=96", "stream.max_test=48", "train.epochs=3",
        "train.lr=0.01", "tracking=off", "registry=off", "train.progress=false",
        f"paths.runs={runs}", f"hydra.run.dir={run_dir}",
    ]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "kroncl.run", *args]


def accuracy_rows(run_dir: Path) -> tuple[list, list]:
    data = json.loads((run_dir / "metrics" / "accuracy_matrix.json").read_text())
    return data["baseline"], data["rows"]


@pytest.mark.integration
def test_resume_after_sigkill_in_experience_two_matches_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    full = tmp_path / "full"
    subprocess.run(command(*overrides(tmp_path, full)), cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(*overrides(tmp_path, killed)), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = killed / "run.log"
    deadline = time.monotonic() + 300
    try:
        while "experience 1: training on" not in (log.read_text() if log.exists() else ""):
            assert proc.poll() is None, "run ended before it reached experience 2"
            assert time.monotonic() < deadline, "run never reached experience 2"
            time.sleep(0.05)
        time.sleep(0.3)  # inside experience 2's training
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (killed / "checkpoints" / "LATEST").read_text() == "exp-0000"
    baseline, rows = accuracy_rows(killed)
    assert rows[1] == [None, None], "the killed run must not have finished experience 2"

    resumed = subprocess.run(command(*overrides(tmp_path, killed), f"resume={killed}"), cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in (killed / "run.log").read_text()

    expected_baseline, expected_rows = accuracy_rows(full)
    got_baseline, got_rows = accuracy_rows(killed)
    assert got_baseline == pytest.approx(expected_baseline, abs=1e-6)
    for got, expected in zip(got_rows, expected_rows, strict=True):
        assert got == pytest.approx(expected, abs=1e-6)

    changed = subprocess.run(command(*overrides(tmp_path, killed), "train.lr=0.02", f"resume={killed}"),
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert changed.returncode == 2
    assert "train.lr: 0.01 -> 0.02" in changed.stderr
