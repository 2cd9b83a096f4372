"""Fault injection: a spec kills the process exactly at the named hit, and nowhere else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from kroncl import faults

SCRIPT = textwrap.dedent("""
    from kroncl.faults import fault_point
    for exp in range(3):
        for step in range(1, 4):
            print(f"{exp}.{step}", flush=True)
            fault_point("train_step", exp=exp, step=step)
    print("end", flush=True)
""")


def run_with(spec: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != faults.ENV_VAR}
    if spec is not None:
        env[faults.ENV_VAR] = spec
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("spec", "last"), [
    ("train_step:exp=1:step=2", "1.2"),
    ("train_step:step=3", "0.3"),
    ("train_step:step=3:nth=2", "1.3"),
    ("train_step", "0.1"),
])
def test_the_process_kills_itself_at_the_named_hit(spec, last):
    proc = run_with(spec)
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout.split()[-1] == last


def test_unset_or_unmatched_specs_never_fire():
    assert run_with(None).stdout.split()[-1] == "end"
    assert run_with("train_step:exp=7").stdout.split()[-1] == "end"
    assert run_with("after_save:exp=1").stdout.split()[-1] == "end"


@pytest.mark.parametrize(("spec", "message"), [
    ("train_stpe:exp=1", "unknown fault point 'train_stpe'; known points: train_step"),
    ("train_step:exp", "'exp' is not KEY=VALUE"),
    ("train_step:nth=0", "nth='0' must be a positive integer"),
])
def test_a_bad_spec_names_the_bad_part(spec, message):
    with pytest.raises(faults.FaultSpecError, match=message):
        faults.configure(spec)
    faults.configure(None)


def test_a_call_site_naming_an_unlisted_point_is_caught_while_injection_is_on():
    faults.configure("train_step:exp=99")
    try:
        with pytest.raises(faults.FaultSpecError, match="not listed"):
            faults.fault_point("no_such_point")
    finally:
        faults.configure(None)
