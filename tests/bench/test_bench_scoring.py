"""The decoder scoring benchmark runs end to end on tiny-llama over the offline ARC-Challenge
questions and prints its table (not a timing test: only the table and the equality are checked)."""

from __future__ import annotations

import re

from pipelines.bench.__main__ import main as bench_main


def test_scoring_benchmark_prints_both_layouts(shared_data, capsys):
    argv = ["scoring", "--model", "tiny-llama", "--max-length", "256", "--questions", "6", "--batch", "3",
            "--repeats", "1", "--train", "--reference", "--data-dir", str(shared_data)]
    assert bench_main(argv) == 0
    out = capsys.readouterr().out
    tokens = re.search(r"tokens fed per question: per_choice (\d+), shared (\d+); max \|shared - per_choice\| score (\S+)", out)
    assert tokens and int(tokens[2]) < int(tokens[1]) and float(tokens[3]) <= 1e-3, out
    ref = re.search(r"unpadded: per_choice (\S+), shared (\S+)", out)
    assert ref and float(ref[1]) <= 1e-3 and float(ref[2]) <= 1e-3, out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if re.match(r"(eval|train)\s+\d", line)}
    assert set(rows) == {"eval", "train"} and all(float(v) > 0 for r in rows.values() for v in r), out
