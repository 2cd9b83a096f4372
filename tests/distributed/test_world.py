"""kroncl.distributed.World: batch shards, and its collectives between two real gloo processes.

The two-process tests start ``world_worker.py`` twice on loopback (gloo); what they assert is
computed in the processes and saved to a file each.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kroncl.distributed import SINGLE, World

WORKER = Path(__file__).with_name("world_worker.py")
REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120


def batch(rows: int) -> dict:
    return {"input_ids": torch.arange(rows * 6).view(rows, 2, 3), "labels": torch.arange(rows) % 2,
            "ids": [f"q{i}" for i in range(rows)], "n_choices": 2}


def test_shards_of_a_batch_are_disjoint_and_cover_it():
    b = batch(5)
    parts = [World(rank, 2).shard(b) for rank in range(2)]
    assert [p["ids"] for p, _ in parts] == [["q0", "q2", "q4"], ["q1", "q3"]]
    assert [share for _, share in parts] == [0.6, 0.4]
    assert torch.equal(parts[1][0]["input_ids"], b["input_ids"][[1, 3]])
    assert parts[0][0]["n_choices"] == 2  # not a per-row value: kept


def test_a_rank_without_a_row_gets_a_placeholder_row_at_share_zero():
    shard, share = World(2, 3).shard(batch(2))
    assert share == 0.0 and shard["ids"] == ["q0"]


def test_one_process_keeps_the_batch():
    b = batch(3)
    assert SINGLE.shard(b) == (b, 1.0)


# ---- two gloo processes ------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two(job: str, tmp_path: Path) -> list:
    """Both ranks' results of ``world_worker.py <job>``. Each rank's stdin is held open until
    rank 0 is done: a rank told to stay out of a collective waits on it, not on a clock."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, str(WORKER), job, str(rank), str(port), str(tmp_path / f"{rank}.pt")],
                              cwd=REPO, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in range(2)]
    try:
        procs[0].wait(TIMEOUT_S)
    finally:
        for p in procs:
            p.stdin.close()
        errors = [p.stderr.read() for p in procs]
        for p in procs:
            p.wait(TIMEOUT_S)
    assert [p.returncode for p in procs] == [0, 0], errors
    return [torch.load(tmp_path / f"{rank}.pt", weights_only=False) if (tmp_path / f"{rank}.pt").exists() else None
            for rank in range(2)]


def test_summed_shard_gradients_are_the_global_batch_gradient(tmp_path):
    spec = importlib.util.spec_from_file_location("world_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    grads_of, model_and_rows = worker.grads_of, worker.model_and_rows
    results = run_two("gradients", tmp_path)
    for rows in (5, 1):  # uneven; then rank 1 has no row of the batch at all
        model, unused, x, y = model_and_rows()
        reference = grads_of(model, unused, x[:rows], y[:rows], SINGLE)
        assert reference[3] is None
        for rank in (0, 1):  # every rank ends with the same, global gradient
            grads = results[rank][rows]
            assert grads[3] is None  # trainable but never in the loss: still no gradient
            for i in (0, 1, 2):
                assert torch.allclose(grads[i], reference[i], atol=1e-7, rtol=0), (rows, rank, i)


def test_sum_gather_and_broadcast_between_two_processes(tmp_path):
    for summed, gathered, told in run_two("collectives", tmp_path):
        assert summed == [1.0, 3.0]
        assert gathered == [{"rank": 0}, {"rank": 1}]
        assert told == "from 0"


def test_a_rank_that_never_joins_makes_the_collective_fail_with_a_clear_error(tmp_path):
    message, _ = run_two("timeout", tmp_path)
    assert message.startswith("DistributedError: rank 0 of 2: a sum over ranks failed"), message
    assert "train.collective_timeout_s=5" in message and "resume=<run dir>" in message
