"""``python -m pipelines.bench gpu``: its CPU path runs the real check on tiny models; without
CUDA the default device is refused with one line."""

from __future__ import annotations

import torch

from pipelines.bench.gpu import main


def test_the_check_runs_on_cpu_and_prints_step_memory_and_merge_lines(capsys):
    assert main(["--models", "tiny-llama", "--device", "cpu", "--rounds", "2", "--rows", "2", "--max-length", "32"]) == 0
    out = capsys.readouterr().out
    assert "tiny-llama on cpu: 2 questions x 4 choices x" in out
    assert "train kron2x2" in out and "train lora8" in out and "kron2x2/lora8 step" in out
    assert "merged/base" in out


def test_cuda_is_required_unless_cpu_is_asked_for(capsys):
    if torch.cuda.is_available():  # a GPU machine: the default device is taken
        assert main(["--models", "tiny", "--rounds", "1", "--rows", "2", "--max-length", "32"]) == 0
        assert "GPU: " in capsys.readouterr().out
    else:
        assert main(["--models", "tiny"]) == 2
        assert "no CUDA device visible" in capsys.readouterr().out
