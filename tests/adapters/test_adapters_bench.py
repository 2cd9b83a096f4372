"""The adapter benchmark's plumbing (tiny shapes; no timing assertions)."""

from __future__ import annotations

import argparse

import pytest
import torch

from pipelines.bench.__main__ import main as bench_main
from pipelines.bench.adapters import build_variants, parse_shapes


@pytest.mark.parametrize("d", [128, 256])  # PEFT keeps w2 factored only when r < b / 2
def test_variant_parameter_counts_match_formulas(d):
    variants = {v.name: v for v in build_variants(d, d)}
    counted = {n: sum(p.numel() for p in v.params) for n, v in variants.items()}
    assert counted["LoRA r=8"] == 16 * d
    assert counted["Kron 4x4 r=8"] == counted["PEFT LoKr 4x4 r=8"] == 16 + 4 * d
    assert counted["Kron 2x2 r=8"] == counted["PEFT LoKr 2x2 r=8"] == 4 + 8 * d
    assert all(counted[n] == v.expected_params for n, v in variants.items())


def test_parse_shapes():
    assert parse_shapes("384x384,768x3072") == [(384, 384), (768, 3072)]
    with pytest.raises(argparse.ArgumentTypeError, match="bad shape '12'"):
        parse_shapes("12")


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)  # the CLI sets 1 thread for the whole process


def test_cli_prints_table(capsys, keep_threads):
    assert bench_main(["adapters", "--shapes", "128x256", "--repeats", "3", "--tokens", "16", "--budget", "1"]) == 0
    out = capsys.readouterr().out
    assert "128→256" in out and "PEFT LoKr 4x4 r=8" in out and "torch threads: 1" in out
    assert "MISMATCH" not in out and "Kron/LoRA-8" in out
    assert bench_main(["nope"]) == 2
