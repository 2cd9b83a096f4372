"""Benchmark: data-parallel training throughput (``python -m pipelines.bench ddp``).

The same training step as ``python -m pipelines.bench train`` (kroncl Kron-LoRA 2×2, r=8, on a
real model), run the way ``torchrun -m kroncl.run`` runs it: every process takes its rows of the
same global batch (:meth:`kroncl.distributed.World.shard`), scales its loss by its share, and
one all-reduce sums the adapter gradients (:meth:`~kroncl.distributed.World.sum_gradients`)
before AdamW steps. Each round launches ``torchrun --standalone --nproc_per_node=N`` for N = 1
and N = 2 (in alternating order), one torch thread per process, and times ``--steps`` steps on
the wall clock (between two barriers; a parallel speed-up is wall-clock by nature). Printed:
global examples/s per N and round, and the median of the per-round ratios N=2 / N=1.

Target (issue #16): ≥ 1.6× with 2 processes on a 2-core machine. Not a test: numbers depend on
the machine and on what else it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from pipelines.bench.adapters import machine_info

TARGET = 1.6


def worker(model_name: str, rows: int, choices: int, tokens: int, steps: int, out: Path) -> None:
    """One process of the torchrun job: build, warm up, time ``steps`` steps, rank 0 reports."""
    import torch
    import torch.nn.functional as F

    from kroncl.distributed import leave, world_from_env
    from pipelines.bench.train import build_variants, make_batch

    torch.set_num_threads(1)
    world = world_from_env(timeout_s=600)
    (variant,) = build_variants(model_name, ["kron2x2"], max_length=tokens)
    batch = make_batch(variant.model, rows, choices)
    shard, share = world.shard(batch)
    opt = torch.optim.AdamW(variant.params, lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        (F.cross_entropy(variant.model(shard).float(), shard["labels"]) * share).backward()
        world.sum_gradients(variant.params)
        opt.step()

    step()  # warm-up: allocator, first all-reduce
    world.sum([0.0])  # a barrier on every backend
    started = time.perf_counter()
    for _ in range(steps):
        step()
    world.sum([0.0])
    elapsed = time.perf_counter() - started
    if world.is_main:
        out.write_text(json.dumps({"processes": world.size, "seconds": elapsed,
                                   "examples_per_s": rows * steps / elapsed}))
    leave(world)


def launch(processes: int, args: argparse.Namespace, out: Path) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "pipelines.bench.ddp", "--worker", "--model", args.model, "--rows", str(args.rows),
           "--choices", str(args.choices), "--tokens", str(args.tokens), "--steps", str(args.steps),
           "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"torchrun with {processes} process(es) failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def run(args: argparse.Namespace) -> dict:
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            order = (1, 2) if i % 2 == 0 else (2, 1)
            got = {n: launch(n, args, Path(tmp) / f"r{i}-{n}.json") for n in order}
            rounds.append({n: got[n]["examples_per_s"] for n in (1, 2)})
            print(f"round {i + 1}: 1 process {rounds[-1][1]:.2f} ex/s, 2 processes {rounds[-1][2]:.2f} ex/s",
                  file=sys.stderr)
    ratios = [r[2] / r[1] for r in rounds]
    return {"machine": machine_info(), "model": args.model, "shape": [args.rows, args.choices, args.tokens],
            "steps": args.steps, "rounds": rounds, "ratio": statistics.median(ratios), "ratios": ratios}


def format_result(res: dict) -> str:
    rows, choices, tokens = res["shape"]
    lines = [f"data-parallel training step, {res['model']} Kron-LoRA 2x2 r=8, global batch {rows} questions x "
             f"{choices} choices x {tokens} tokens, {res['steps']} timed steps per launch, 1 thread per process",
             f"machine: {res['machine']}",
             "| round | 1 process (ex/s) | 2 processes (ex/s) | ratio |", "|---|---:|---:|---:|"]
    for i, (r, q) in enumerate(zip(res["rounds"], res["ratios"]), start=1):
        lines.append(f"| {i} | {r[1]:.2f} | {r[2]:.2f} | {q:.2f} |")
    verdict = "meets" if res["ratio"] >= TARGET else f"misses by {TARGET - res['ratio']:.2f}"
    lines.append(f"median ratio 2/1 processes: {res['ratio']:.2f} (target >= {TARGET}: {verdict})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench ddp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm", help="minilm | smollm2 | tiny (default minilm)")
    parser.add_argument("--rows", type=int, default=16, help="global batch: questions per step (default 16)")
    parser.add_argument("--choices", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per launch (default 6)")
    parser.add_argument("--rounds", type=int, default=3, help="launches of each size, interleaved (default 3)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for key in ("rows", "choices", "tokens", "steps", "rounds"):
        if getattr(args, key) < 1:
            parser.error(f"--{key}={getattr(args, key)} must be >= 1")
    if args.rows < 2:
        parser.error(f"--rows={args.rows}: each of 2 processes needs a row; use --rows 2 or more")
    if args.worker:
        worker(args.model, args.rows, args.choices, args.tokens, args.steps, args.out)
        return 0
    res = run(args)
    print(json.dumps(res, indent=2) if args.json else format_result(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
