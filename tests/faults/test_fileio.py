"""Atomic writes: a killed writer leaves the old file intact and a temp file only it can be blamed for."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from kroncl.fileio import atomic_write_text, remove_stale_temp_files


def test_a_writer_killed_mid_write_leaves_the_old_file_and_a_sweepable_temp(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    script = textwrap.dedent(f"""
        from kroncl.fileio import atomic_write_text
        atomic_write_text({str(target)!r}, "new")
    """)
    env = {**os.environ, "KRONCL_FAULT": "during_atomic_write:file=metrics.json"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert target.read_text() == "old"
    (left,) = [p for p in tmp_path.iterdir() if p != target]
    assert left.name.startswith(f".metrics.json.{proc.pid}.") and left.name.endswith(".tmp")
    live = tmp_path / f".other.json.{os.getpid()}.abc123.tmp"
    live.write_text("being written by this (live) process")
    assert remove_stale_temp_files(tmp_path) == [left]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name])
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
