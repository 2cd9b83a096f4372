"""Benchmark: mixed-task batches over resident adapters (``python -m pipelines.bench mixed``).

One model with ``max(--tasks)`` resident Kron-LoRA sets (2×2, r=8, every default target plus the
head; random factors so every set does real work). A batch of ``--rows`` questions is spread
round-robin over K of the sets (K in ``--tasks``), and three ways of scoring it are timed in the
same process, interleaved round by round so machine load hits them alike:

    single   all rows through one set: the throughput a one-task batch gets (the ceiling)
    fused    each row through its own set in one forward, all sets' factors concatenated
    grouped  each row through its own set in one forward, one factored update per set present
    split    one whole-model forward per set present (``routed_forward(..., mixed=False)``)

(``kroncl.adapters.mixed`` explains fused vs grouped; the default picks fused on CUDA and
grouped on CPU.) Printed per model and K: rows/s (median over rounds), the default mixed
path's ratios to single and to split, and max |mixed - split| of the scores over both mixed
forms (the equality the tests assert, re-checked on these models).
Targets (issue #18): on a GPU at K=8 mixed ≥ 0.9× single and ≥ 2× split; on CPU mixed no slower
than split. Not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from pipelines.bench.adapters import machine_info

MODES = ("single", "fused", "grouped", "split")


def build(model_name: str, n_sets: int, seed: int = 0, max_length: int = 64):
    """The model with ``n_sets`` resident random Kron-LoRA sets ``t0``…, in eval mode."""
    from kroncl.adapters import AdapterConfig, add_adapter, inject_adapters
    from kroncl.models import ModelConfig, build_model

    model = build_model(ModelConfig.from_mapping({"name": model_name, "seed": seed, "max_length": max_length}))
    cfg = AdapterConfig(method="kron", a_out=2, a_in=2, r=8, alpha=16.0,
                        targets=list(model.default_targets), head_targets=list(model.head_modules))
    inject_adapters(model.backbone, cfg, adapter_name="t0")
    for k in range(1, n_sets):
        add_adapter(model.backbone, f"t{k}")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return model.eval()


def make_batch(model, rows: int, choices: int, n_tasks: int) -> dict[str, torch.Tensor]:
    """``rows`` short questions with ``choices`` answers each; row i belongs to task i mod K."""
    from kroncl.data.example import MCExample

    feats = []
    for i in range(rows):
        ex = MCExample(id=f"q{i}", question=f"Question {i}: which of these objects is heavier than water?",
                       choices=tuple(f"choice {c} of question {i}" for c in range(choices)), label=0)
        feats.append({**model.encode(ex), "task_labels": i % n_tasks})
    return model.collate(feats)


def scorers(model, batch) -> dict[str, Callable[[], torch.Tensor]]:
    from kroncl.adapters import routed_forward

    labels = batch["task_labels"]
    route = "t{}".format
    return {
        "single": lambda: routed_forward(model, model.backbone, batch, torch.zeros_like(labels), route),
        "fused": lambda: routed_forward(model, model.backbone, batch, labels, route, fused=True),
        "grouped": lambda: routed_forward(model, model.backbone, batch, labels, route, fused=False),
        "split": lambda: routed_forward(model, model.backbone, batch, labels, route, mixed=False),
    }


@torch.no_grad()
def time_modes(fns: dict[str, Callable[[], torch.Tensor]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, rounds interleaved (order rotated each round)."""
    for fn in fns.values():  # warm-up: allocator, kernels, lazy inits
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for i in range(repeats):
        for name in names[i % len(names):] + names[: i % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def run(model_name: str, tasks: Sequence[int], rows: int, choices: int, repeats: int, device: str) -> list[dict]:
    model = build(model_name, max(tasks)).to(device)
    out = []
    for k in tasks:
        batch = {key: v.to(device) for key, v in make_batch(model, rows, choices, k).items()}
        fns = scorers(model, batch)
        with torch.no_grad():
            split = fns["split"]()
            diff = max((fns[m]() - split).abs().max().item() for m in ("fused", "grouped"))
        med = time_modes(fns, repeats)
        default = "fused" if device.startswith("cuda") else "grouped"
        out.append({"model": model_name, "tasks": k, "diff": diff, "mixed": rows / med[default],
                    **{m: rows / med[m] for m in MODES}})
    return out


def format_rows(results: list[dict]) -> str:
    lines = [f"{'model':<12}{'tasks':>6}" + "".join(f"{m + ' rows/s':>15}" for m in MODES)
             + f"{'mixed/single':>14}{'mixed/split':>13}{'max|Δ|':>10}"]
    for r in results:
        lines.append(f"{r['model']:<12}{r['tasks']:>6}" + "".join(f"{r[m]:>15.1f}" for m in MODES)
                     + f"{r['mixed'] / r['single']:>14.2f}{r['mixed'] / r['split']:>13.2f}{r['diff']:>10.1e}")
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad list {text!r}; write comma-separated integers, e.g. 1,2,4,8") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"bad list {text!r}; every value must be ≥ 1")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.bench mixed", description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="minilm,smollm2",
                    help="comma-separated model configs (default minilm,smollm2; tiny for a smoke run)")
    ap.add_argument("--tasks", type=_ints, default=[1, 2, 4, 8, 16], help="resident tasks per batch (default 1,2,4,8,16)")
    ap.add_argument("--rows", type=int, default=64, help="questions per batch (default 64)")
    ap.add_argument("--choices", type=int, default=2, help="answers per question (default 2)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's choice)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print("kroncl mixed-task benchmark: one batch over K resident Kron-LoRA sets (2x2, r=8)")
    print(machine_info() + f"; device: {args.device}")
    print(f"{args.rows} questions x {args.choices} choices per batch; medians over {args.repeats} interleaved "
          f"rounds; mixed = {'fused' if args.device.startswith('cuda') else 'grouped'} (the default on this device)")
    t0 = time.perf_counter()
    for name in [m for m in args.models.split(",") if m]:
        print(format_rows(run(name, args.tasks, args.rows, args.choices, args.repeats, args.device)), flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0
