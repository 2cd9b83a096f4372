"""One rank of tests/distributed/test_world.py's two-process checks.

    python world_worker.py JOB RANK PORT OUT

Joins a 2-process gloo group on 127.0.0.1:PORT, runs JOB, saves what it found to OUT
(``torch.save``). With JOB=timeout rank 1 stays out of the collective until its stdin closes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kroncl.distributed import DistributedError, World, leave, world_from_env  # noqa: E402


def model_and_rows():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    model[0].weight.requires_grad_(False)  # frozen: no gradient on any rank
    unused = torch.nn.Parameter(torch.zeros(2))  # trainable, never in the loss
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 1, 0, 1])
    return model, unused, x, y


def grads_of(model, unused, x, y, world: World) -> dict:
    """Gradients after one (sharded, share-weighted, summed) backward of the mean loss."""
    params = [p for p in model.parameters() if p.requires_grad] + [unused]
    shard, share = world.shard({"x": x, "labels": y})
    (torch.nn.functional.cross_entropy(model(shard["x"]), shard["labels"]) * share).backward()
    world.sum_gradients(params)
    return {i: None if p.grad is None else p.grad.clone() for i, p in enumerate(params)}


def main(job: str, rank: int, port: int, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    world = world_from_env(timeout_s=5 if job == "timeout" else 60)
    if job == "gradients":
        result = {}
        for rows in (5, 1):
            model, unused, x, y = model_and_rows()
            result[rows] = grads_of(model, unused, x[:rows], y[:rows], world)
    elif job == "collectives":
        result = (world.sum([rank, 1.5]), world.gather({"rank": rank}),
                  world.broadcast("from 0" if rank == 0 else None))
    elif job == "timeout":
        if rank == 1:
            sys.stdin.read()  # until the test closes it, after rank 0 has exited
            return
        try:
            world.sum([1.0])
            result = "returned"
        except DistributedError as exc:
            result = f"{type(exc).__name__}: {exc}"
        torch.save(result, out)
        os._exit(0)  # the group is broken: leaving it would wait for rank 1 again
    else:
        raise SystemExit(f"unknown job {job!r}")
    torch.save(result, out)
    leave(world)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
