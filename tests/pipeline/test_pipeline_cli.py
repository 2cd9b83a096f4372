"""``python -m kroncl.run`` as a user runs it: a small real run, bad overrides, a missing task.

Each command is a fresh interpreter (~15-25 s of imports here), so the module fixture starts
all of them at once and each test waits for its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("KRONCL_SHARED_DATA") or REPO / ".." / "shared" / "data").resolve()
SMALL = ["stream=toy", "model=tiny", "stream.max_train=48", "stream.max_test=24", "train.epochs=1",
         "train.progress=false", "train.threads=1"]
TIMEOUT_S = 400


@dataclass
class Cli:
    proc: subprocess.Popen
    run_dir: Path
    runs_root: Path
    stdout: str = ""
    stderr: str = ""

    def wait(self) -> Cli:
        if self.proc.returncode is None:
            self.stdout, self.stderr = self.proc.communicate(timeout=TIMEOUT_S)
        return self


def launch(tmp: Path, name: str, args: list[str], env: dict[str, str] | None = None) -> Cli:
    run_dir, runs_root = tmp / name / "run", tmp / name / "runs"
    cmd = [sys.executable, "-m", "kroncl.run", *args, f"paths.runs={runs_root}", f"hydra.run.dir={run_dir}"]
    # cwd outside the repo: the installed package and its configs must be enough. One torch
    # thread: see one_torch_thread in conftest.py.
    proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    return Cli(proc, run_dir, runs_root)


@pytest.fixture(scope="module")
def cli(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Cli]:
    tmp = tmp_path_factory.mktemp("cli")
    runs = {
        "ok": launch(tmp, "ok", [*SMALL, "tracking=off", "registry=off"]),
        "bad": launch(tmp, "bad", [*SMALL, "tracking=off", "registry=off", "train.lr=-1", "strategy.plugins=[nope]"]),
    }
    if any(item.name == "test_missing_hellaswag_fails_before_training" for item in request.session.items):
        # An unreachable hub endpoint makes the answer the same with or without internet.
        from socket import AF_INET, SOCK_STREAM, socket

        with socket(AF_INET, SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        runs["commonsense"] = launch(
            tmp, "commonsense",
            ["stream=commonsense", "model=tiny", "tracking=off", "registry=off", f"data.dir={SHARED_DATA}"],
            env={"HF_ENDPOINT": f"http://127.0.0.1:{port}", "KRONCL_HUB_TIMEOUT": "2"},
        )
    yield runs
    for run in runs.values():
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.communicate()


def test_small_run_succeeds_and_prints_the_summary(cli):
    run = cli["ok"].wait()
    assert run.proc.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    summary = (run.run_dir / "summary.txt").read_text()
    assert summary in run.stdout
    assert "== kroncl run: stream=toy model=tiny adapter=kron strategy=sequential" in summary
    assert "accuracy matrix R[i][j]" in summary and "ACC " in summary and "BWT " in summary
    assert f"run directory: {run.run_dir}" in summary
    assert "MLflow" not in summary and "registry:" not in summary  # tracking=off registry=off

    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert config["stream"]["max_train"] == 48 and config["model"]["name"] == "tiny"
    assert config["paths"]["runs"] == str(run.runs_root)
    assert yaml.safe_load((run.run_dir / "overrides.yaml").read_text())[:2] == SMALL[:2]
    for exp, task in enumerate(["toy_larger", "toy_smaller"]):
        assert (run.run_dir / "adapters" / f"exp{exp}-{task}" / "fp32" / "adapter.safetensors").is_file()
    assert (run.run_dir / "checkpoints" / "LATEST").is_file()
    assert (run.run_dir / "metrics" / "accuracy_matrix.csv").is_file()
    # tracking=off and registry=off write no stores
    assert not (run.runs_root / "mlflow.db").exists() and not (run.runs_root / "registry.db").exists()
    assert not (run.run_dir / "tracking").exists()


def test_bad_overrides_exit_2_naming_every_key(cli):
    run = cli["bad"].wait()
    assert run.proc.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Traceback" not in run.stderr + run.stdout
    error = run.stderr[run.stderr.index("error: "):].splitlines()
    assert error[0] == "error: invalid configuration:"
    assert any(line.strip().startswith("- train.lr=-1 ") for line in error[1:])
    assert any("strategy.plugins" in line and "'nope'" in line and "replay" in line for line in error[1:])
    # rejected before anything ran
    assert not (run.run_dir / "config.yaml").exists() and not (run.run_dir / "adapters").exists()


@pytest.mark.integration
def test_missing_hellaswag_fails_before_training(cli):
    assert SHARED_DATA.is_dir(), f"shared data not found at {SHARED_DATA}; set KRONCL_SHARED_DATA"
    run = cli["commonsense"].wait()
    assert run.proc.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Traceback" not in run.stderr + run.stdout
    error = run.stderr[run.stderr.index("error: "):]
    assert error.splitlines()[0].startswith("error: stream 'commonsense' cannot be built")
    assert "hellaswag" in error.splitlines()[0]
    for fix in ("point data.dir at a folder containing hellaswag/train.jsonl",
                "stream.tasks=[piqa,winogrande,arc_easy,arc_challenge]"):
        assert fix in error
    assert "experience 0" not in run.stdout and not (run.run_dir / "adapters").exists()


def run_quick(tmp: Path, args: list[str]) -> subprocess.CompletedProcess:
    """One command that must fail before training; this checkout's code (PYTHONPATH)."""
    cmd = [sys.executable, "-m", "kroncl.run", *SMALL, "tracking=off", "registry=off", *args]
    if not any(a.startswith("paths.runs=") for a in args):
        cmd.append(f"paths.runs={tmp / 'runs'}")
    return subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=TIMEOUT_S,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The whole of stderr must be one ``error: ...`` line, exit 2, no traceback."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize(("args", "expected"), [
    (["quant=nf5"], "error: quant=nf5 is not a choice; choose one of: int4, int8, nf4, none"),
    (["+quant=nf5"], "error: quant=nf5 is not a choice; choose one of: int4, int8, nf4, none"),
    (["model=tiny-lama"], "error: model=tiny-lama is not a choice; choose one of: custom, distilbert, "
                          "minilm, smollm2, tiny, tiny-distilbert, tiny-llama"),
    (["train.lr=abc"], "error: invalid configuration: train.lr='abc' must be a number, e.g. train.lr=0.003"),
    (["train.epochs=1.5"], "error: invalid configuration: train.epochs=1.5 must be a whole number, "
                           "e.g. train.epochs=3"),
    (["stream.tasks=[arc_easy,'my task']"], "error: invalid configuration: invalid stream config: "
     "stream.tasks: task 'my task' cannot be registered: a name uses only letters, digits, '.', '_' and '-', "
     "and starts with a letter or digit (rule ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$); rename it, e.g. 'my_task'"),
    (["model.name_or_path=/nonexistent"], "error: invalid configuration: invalid model config: "
     "model.name_or_path='/nonexistent' cannot be used with model=tiny (a randomly initialised toy model "
     "built in code; it loads no files): drop model.name_or_path, or load that model with model=custom "
     "model.kind=encoder model.name_or_path=/nonexistent"),
], ids=["group", "+group", "model-group", "lr", "epochs", "task-name", "tiny-name_or_path"])
def test_bad_values_are_one_line_naming_the_fix(tmp_path: Path, args: list[str], expected: str):
    assert one_error_line(run_quick(tmp_path, args)) == expected
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("config.yaml"))


def test_paths_runs_under_a_file_is_one_line(tmp_path: Path):
    (tmp_path / "afile").write_text("x")
    line = one_error_line(run_quick(tmp_path, [f"paths.runs={tmp_path / 'afile' / 'runs'}"]))
    assert line == (f"error: paths.runs='{tmp_path / 'afile' / 'runs'}' cannot hold runs: {tmp_path / 'afile'} "
                    "is a file, so no folder can be made under it; set paths.runs to a folder you can write, "
                    "e.g. paths.runs=runs or paths.runs=$HOME/kroncl-runs")
