"""GPU check (``python -m pipelines.bench gpu``): one command, a few minutes, for a GPU machine.

Per model (default SmolLM2-135M; ``--models`` adds any other decoder or encoder config, e.g. a
larger one available offline through ``model=custom``'s path), on one CUDA device:

- a full training step (``pipelines.bench.train``'s: forward, loss, backward, AdamW on the
  adapters) for Kron-LoRA 2×2 r=8 and LoRA-8 in bf16 autocast: ms per step (CUDA events, median
  over rounds) and peak GPU memory (``torch.cuda.max_memory_allocated``) of each;
- inference with the Kron set merged into the base weights against the bare base model (no
  adapters at all): the merged forward must cost what the base costs (ratio ≈ 1.00).

``--device cpu`` runs the same code on the CPU (fp32, no memory column) so it is tested here;
without CUDA the default refuses with one line saying so (exit 2). Not a test: numbers depend on
the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from kroncl.evaluate import batch_to_device
from pipelines.bench.train import _model, build_variants, make_batch, train_step


def _timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """Seconds of one call: CUDA events on a GPU (the kernels, not the launch), else wall time."""
    if device.type != "cuda":
        def wall(fn):
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        return wall

    def cuda(fn):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000
    return cuda


def check_model(name: str, device: torch.device, rows: int, length: int, rounds: int) -> dict:
    from kroncl.adapters import merge_adapter

    on_gpu = device.type == "cuda"
    autocast = torch.bfloat16 if on_gpu else None
    timer = _timer(device)
    variants = build_variants(name, ("kron2x2", "lora8"), max_length=length)
    batch = batch_to_device(make_batch(variants[0].model, rows, 4), device)
    out: dict = {"model": name, "device": str(device), "rows": rows, "tokens": int(batch["input_ids"].shape[-1]),
                 "train": {}}
    for v in variants:
        v.model.to(device)
        step = train_step(v, batch, autocast=autocast)
        step()  # warm-up: kernels chosen, optimizer state allocated
        if on_gpu:
            torch.cuda.reset_peak_memory_stats(device)
        times = [timer(step) for _ in range(rounds)]
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if on_gpu else None
        out["train"][v.name] = {"ms": 1000 * statistics.median(times), "peak_mib": peak, "trainable": v.trainable}
        if v.name != "kron2x2":
            v.model.cpu()
    merged = variants[0].model.eval()
    merge_adapter(merged.backbone, "default")
    bare = _model(name, 0, length).to(device).eval()  # the same base weights, no adapter layers at all
    with torch.no_grad(), torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
        fns = {"merged": lambda: merged(batch), "base": lambda: bare(batch)}
        for fn in fns.values():
            fn()
        times = {k: [] for k in fns}
        for i in range(rounds):
            for k in (("merged", "base") if i % 2 else ("base", "merged")):
                times[k].append(timer(fns[k]))
    out["infer_ms"] = {k: 1000 * statistics.median(t) for k, t in times.items()}
    out["merged/base"] = statistics.median(m / b for m, b in zip(times["merged"], times["base"]))
    return out


def format_check(res: dict) -> str:
    lines = [f"{res['model']} on {res['device']}: {res['rows']} questions x 4 choices x {res['tokens']} tokens"]
    for name, r in res["train"].items():
        mem = f", peak {r['peak_mib']:.0f} MiB" if r["peak_mib"] is not None else ""
        lines.append(f"  train {name:<8} {r['ms']:8.1f} ms/step{mem}  ({r['trainable']:,} trainable)")
    k, lo = res["train"]["kron2x2"], res["train"]["lora8"]
    lines.append(f"  kron2x2/lora8 step {k['ms'] / lo['ms']:.3f}")
    lines.append(f"  inference merged {res['infer_ms']['merged']:.1f} ms, bare base {res['infer_ms']['base']:.1f} ms, "
                 f"merged/base {res['merged/base']:.3f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.bench gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="smollm2", help="comma list of model configs (default smollm2)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (fp32: to test the script)")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args(argv)
    if args.device not in ("cuda", "cpu"):
        p.error(f"--device {args.device!r}: choose cuda or cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device visible; this check is for a GPU machine (--device cpu runs it on the CPU)")
        return 2
    device = torch.device(args.device)
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}; torch {torch.__version__}; CUDA {torch.version.cuda}")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        print(format_check(check_model(name, device, args.rows, args.max_length, args.rounds)), flush=True)
    return 0
