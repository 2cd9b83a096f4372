"""Benchmark: compose a per-task MiniLM model from the registry (``python -m pipelines.bench compose``).

Self-contained: it builds a throw-away SQLite registry in a temporary folder holding one
Kron-LoRA adapter for MiniLM (all default targets plus the classifier head; factors filled with
random values so the merge does real work), registered exactly as ``kroncl.run`` registers
(base-model content hash, ``config.run.model``). Then it times the real composition path of
``pipelines.compose`` -- the same functions ``python -m pipelines.compose REF --merge`` runs:

    lookup       resolve the ref + read the base-model row (``select_versions``, config)
    fetch        re-hash the artifact files (sha256) and return their folder
    read         read adapter.safetensors + adapter_config.json
    base_model   build the base model (tokenizer + weights)
    attach       inject adapter layers and load the tensors
    verify_base  content hash of the base weights vs. the registered revision
    merge        fold ΔW into the base weights

Two scenarios, median over ``--repeats`` (wall-clock, the process already warm -- imports and
the OS file cache are paid once by a warm-up composition, reported separately):

* fresh base: every composition builds the base model from disk;
* cached base: a ``BaseModelCache`` keeps the loaded base model and restores its pristine
  weights between compositions; its content hash is memoised with it.

The composed model is checked against the model the adapter was saved from (max |Δlogit|).
Not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

STEPS = ("lookup", "fetch", "read", "base_model", "attach", "verify_base", "merge")
TARGET_S = 1.0


def build_registry(root: Path, model_name: str, seed: int = 0):
    """Register one random Kron-LoRA adapter for ``model_name`` in a new registry under ``root``.

    Returns:
        ``(store, ref, live_model)``: the live model has the adapter active (unmerged).
    """
    from kroncl.adapters import (
        AdapterConfig,
        adapter_state_dict,
        inject_adapters,
        save_adapter,
    )
    from kroncl.models import ModelConfig, build_model
    from pipelines.registration import Registrar, base_model_identity
    from registry import RegistryStore

    node = {"name": model_name, "seed": seed}
    model = build_model(ModelConfig.from_mapping(node))
    cfg = AdapterConfig(method="kron", a_out=2, a_in=2, r=8, alpha=16.0,
                        targets=list(model.default_targets), head_targets=list(model.head_modules))
    inject_adapters(model.backbone, cfg, adapter_name="bench")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a trained-looking adapter: B1 (zero at init) and the head delta non-zero
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    base_name, revision = base_model_identity(model)
    store = RegistryStore(f"sqlite:///{root / 'registry.db'}", root / "registry_artifacts")
    store.register_base_model(base_name, revision=revision)
    registrar = Registrar(store, None, base_name, revision, cfg, model_name, None,
                          {"model": node, "strategy": {"mode": "per_task"}})
    tensors = adapter_state_dict(model.backbone, "bench")
    folder = save_adapter(root / "adapter", tensors, cfg, base_model=base_name, extra={"task": "bench_task"})
    ref = registrar.register("bench_task", folder, bits=32, metrics={}, param_count=sum(t.numel() for t in tensors.values()), experience=0)
    model.eval()
    return store, ref, model


def compose_once(store, ref: str, cache=None):
    """One timed composition of ``ref`` (merged); returns the :class:`pipelines.compose.Composition`."""
    from pipelines.compose import compose, select_versions

    started = time.perf_counter()
    versions = select_versions(store, [ref])
    select_s = time.perf_counter() - started
    composition = compose(store, versions, merge=True, cache=cache)
    composition.timings["lookup"] += select_s
    return composition


def _sample_batch(model):
    from kroncl.data.example import MCExample

    examples = [MCExample(id=f"b{i}", question=f"Which is a fruit? ({i})", choices=["apple", "stone", "car"], label=0)
                for i in range(4)]
    return model.collate([model.encode(e) for e in examples])


def _median_steps(runs: list[dict[str, float]]) -> dict[str, float]:
    med = {s: statistics.median(r.get(s, 0.0) for r in runs) for s in STEPS}
    med["total"] = statistics.median(sum(r.get(s, 0.0) for s in STEPS) for r in runs)
    return med


def format_table(columns: dict[str, dict[str, float]]) -> str:
    """Steps as rows, scenarios as columns, times in ms."""
    names = list(columns)
    width = max(14, *(len(n) + 2 for n in names))
    lines = ["step".ljust(13) + "".join(n.rjust(width) for n in names)]
    for step in (*STEPS, "total"):
        lines.append(step.ljust(13) + "".join(f"{columns[n].get(step, 0.0) * 1000:.1f} ms".rjust(width) for n in names))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.bench compose", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="minilm", help="base model preset (default minilm; tiny for a smoke run)")
    ap.add_argument("--repeats", type=int, default=7, help="compositions per scenario (default 7)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1; 0 = torch's choice): on a small shared CPU "
                         "more threads make these ops slower and noisier")
    ap.add_argument("--workdir", help="keep the registry here instead of a temporary folder")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    from kroncl.composition import BaseModelCache

    print(f"kroncl compose benchmark: {args.model} per-task model from the registry, merged")
    print(f"CPU logical cores: {os.cpu_count()}; torch threads: {torch.get_num_threads()}; torch {torch.__version__}; "
          f"python {platform.python_version()}; wall-clock times")
    with tempfile.TemporaryDirectory(prefix="kroncl-bench-compose-") as tmp:
        root = Path(args.workdir) if args.workdir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        store, ref, live = build_registry(root, args.model)
        version = store.get_version(ref)
        print(f"setup: registered {ref} ({version.param_count:,} adapter params, {version.size_bytes / 1024:.0f} KiB) "
              f"in {time.perf_counter() - t0:.1f} s")

        first = compose_once(store, ref)  # imports, file cache
        print(f"first composition in this process (warm-up, not counted): {sum(first.timings.values()):.2f} s")
        batch = _sample_batch(live)
        with torch.no_grad():
            diff = (first.composed(batch) - live(batch)).abs().max().item()
        print(f"check: composed vs. live adapter model, max |Δscore| = {diff:.2e}")
        del first

        fresh = [compose_once(store, ref).timings for _ in range(args.repeats)]
        cache = BaseModelCache()
        compose_once(store, ref, cache)  # fills the cache (and the hash memo)
        cached = [compose_once(store, ref, cache).timings for _ in range(args.repeats)]
        store.close()

    columns = {"fresh base": _median_steps(fresh), "cached base": _median_steps(cached)}
    print(f"\nmedian over {args.repeats} compositions:")
    print(format_table(columns))
    for name, col in columns.items():
        dominant = max(STEPS, key=lambda s: col[s])
        verdict = "meets" if col["total"] < TARGET_S else "MISSES"
        print(f"{name}: {col['total']:.3f} s {verdict} the < {TARGET_S:.0f} s target; "
              f"largest step {dominant} ({col[dominant] / col['total']:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
