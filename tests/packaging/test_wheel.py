"""The package as ``pip install .`` makes it: .ci/wheel.sh builds the wheel, installs it into a
fresh venv (re-using this interpreter's dependencies) and, from a folder outside the repo, runs
``kroncl-run stream=toy model=tiny``, ``kroncl-registry`` and ``kroncl-compose``.

Marked integration: one build and one small run, ~45 s (a fresh interpreter importing torch,
avalanche-lib and transformers, then the tiny model's two experiences).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 400


@pytest.mark.integration
def test_the_wheel_installs_and_its_console_scripts_run_the_toy_stream(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(["bash", str(REPO / ".ci" / "wheel.sh"), sys.executable], cwd=tmp_path,
                          env={**env, "TMPDIR": str(tmp_path)}, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "wheel.sh: OK" in proc.stdout
    site = str(tmp_path.resolve())  # the fresh venv lives under TMPDIR, not in the repo
    for module in ("kroncl", "registry", "pipelines"):
        line = next(x for x in proc.stdout.splitlines() if x.startswith(f"wheel.sh: {module} from "))
        path = line.removeprefix(f"wheel.sh: {module} from ")
        assert path.startswith(site) and "/site-packages/" in path and not path.startswith(str(REPO)), line
    assert "wheel.sh: summary.json ok" in proc.stdout
