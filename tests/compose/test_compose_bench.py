"""``pipelines.bench.compose`` runs end to end (tiny model) and prints the step breakdown."""

from __future__ import annotations

import re

from pipelines.bench.compose import STEPS, main


def test_bench_prints_breakdown_and_verdict(capsys, tmp_path):
    assert main(["--model", "tiny", "--repeats", "2", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    diff = float(re.search(r"max \|Δscore\| = (\S+)", out).group(1))
    assert diff <= 1e-5  # the composed model is the model the adapter was saved from
    for step in (*STEPS, "total"):
        assert re.search(rf"^{step}\s+[\d.]+ ms\s+[\d.]+ ms$", out, re.M), step
    assert re.search(r"^fresh base: [\d.]+ s (meets|MISSES) the < 1 s target; largest step \w+", out, re.M)
    assert (tmp_path / "registry.db").is_file()
