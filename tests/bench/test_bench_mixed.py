"""The mixed-task benchmark runs end to end on tiny models and prints its table (not a timing
test: only the table's shape and the equality column are checked)."""

from __future__ import annotations

import re

import pytest

from pipelines.bench.__main__ import main as bench_main


def test_mixed_benchmark_prints_one_row_per_model_and_task_count(capsys):
    assert bench_main(["mixed", "--models", "tiny,tiny-llama", "--tasks", "1,3", "--rows", "6", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if re.match(r"tiny(-llama)?\s+\d+\s", line)]
    assert [(r[0], r[1]) for r in rows] == [("tiny", "1"), ("tiny", "3"), ("tiny-llama", "1"), ("tiny-llama", "3")]
    for r in rows:
        rates = [float(v) for v in r[2:6]]  # single, fused, grouped, split rows/s
        assert all(v > 0 for v in rates)
        assert float(r[-1]) <= 1e-4  # max |mixed - split| over both mixed forms


@pytest.mark.parametrize("bad,message", [("--tasks=0,2", "every value must be ≥ 1"), ("--tasks=a", "bad list 'a'")])
def test_mixed_benchmark_bad_task_list(bad, message, capsys):
    with pytest.raises(SystemExit):
        bench_main(["mixed", bad])
    assert message in capsys.readouterr().err
