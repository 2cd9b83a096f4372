"""The data-parallel benchmark launches torchrun with 1 and 2 processes and prints its table
(not a timing test: only that both sizes ran and the table is whole)."""

from __future__ import annotations

import re

import pytest

from pipelines.bench.__main__ import main as bench_main


def test_ddp_benchmark_prints_both_sizes_and_the_ratio(capsys):
    argv = ["ddp", "--model", "tiny", "--rows", "4", "--tokens", "32", "--steps", "1", "--rounds", "1"]
    assert bench_main(argv) == 0
    out = capsys.readouterr().out
    row = re.search(r"^\| 1 \| (\S+) \| (\S+) \| (\S+) \|$", out, re.M)
    assert row and all(float(v) > 0 for v in row.groups()), out
    assert float(row[3]) == pytest.approx(float(row[2]) / float(row[1]), abs=0.01)
    assert re.search(r"median ratio 2/1 processes: \S+ \(target >= 1.6: (meets|misses by \S+)\)", out), out


def test_ddp_benchmark_refuses_a_batch_two_processes_cannot_share(capsys):
    with pytest.raises(SystemExit):
        bench_main(["ddp", "--rows", "1"])
    assert "--rows=1: each of 2 processes needs a row" in capsys.readouterr().err
