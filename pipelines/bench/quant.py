"""Benchmark: quantized adapter artifacts, size vs ΔW error vs accuracy (``python -m pipelines.bench quant``).

For every task and method (Kron-LoRA, LoRA) one adapter set is trained on the task's train
split with the same budget (epochs, batch size, lr, data, seed), by :class:`KronclStrategy` in
sequential mode on a single-task stream. Its state dict, classifier head included (the head's
``DenseDelta`` is part of every adapter set), is then quantized to int8, int4 and nf4 and each
version is measured:

- artifact bytes (tensor data, :func:`kroncl.quant.artifact_bytes`) and bytes / fp32 bytes;
- ΔW relative error ‖ΔW − ΔŴ‖/‖ΔW‖ per adapted layer (:func:`quantization_error`), mean and max;
- test accuracy, with the dequantized tensors loaded into a *second* adapter set of the same
  model (no retraining, no reloading of the base), the drop in points versus the unquantized
  set, and the share of test questions on which both sets pick the same answer.

The accuracy drop is the quantity the issue's target is stated in; the agreement is the more
sensitive one on a small test set (one flipped answer among 200 is 0.5 points either way).
Not a test: accuracies depend on the data sizes, and times on the machine.

This module is the command; it reads top to bottom: flags -> :class:`BenchSettings`, then per task
and method train (:mod:`pipelines.bench.quant_train`), measure (:mod:`pipelines.bench.quant_measure`),
and finally judge and print (:mod:`pipelines.bench.quant_report`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from pipelines.bench.quant_measure import Row, measure_schemes
from pipelines.bench.quant_report import (
    check_targets,
    format_report,
    format_report_markdown,
)
from pipelines.bench.quant_train import (
    METHODS,
    BenchSettings,
    load_task_splits,
    method_lr,
    train_adapter,
)

TASK_ALIASES = {"toy": "toy_larger", "arc": "arc_easy"}
"""Short names accepted by ``--tasks`` (any other task name is used as given). ``arc`` is
ARC-Easy, the easier ARC set: more room above the 25% chance level for a short CPU run, so that
an accuracy drop has something to measure; name ``arc_challenge`` for the hard set."""
REPO_ROOT = Path(__file__).resolve().parents[2]


def parse_choices(text: str, allowed: Sequence[str] | None, flag: str, aliases: Mapping[str, str] | None = None) -> list[str]:
    """``"toy,arc"`` -> resolved, de-duplicated names in order.

    Raises:
        argparse.ArgumentTypeError: empty list, or a name outside ``allowed`` (naming ``flag``).
    """
    aliases = aliases or {}
    names = [aliases.get(n.strip(), n.strip()) for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{flag} needs at least one name, got {text!r}")
    bad = [n for n in names if allowed is not None and n not in allowed]
    if bad:
        raise argparse.ArgumentTypeError(f"{flag}: unknown {', '.join(map(repr, bad))}; choose from {', '.join(allowed or ())}")
    return list(dict.fromkeys(names))


def default_data_dir() -> str:
    """``$KRONCL_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    return os.environ.get("KRONCL_SHARED_DATA") or str((REPO_ROOT / ".." / "shared" / "data").resolve())


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "torch": torch.__version__, "python": platform.python_version(),
            "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pipelines.bench quant", description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="toy,arc",
                    help=f"comma-separated tasks; aliases {TASK_ALIASES} (default toy,arc)")
    ap.add_argument("--methods", default="kron,lora", help="comma-separated: kron, lora (default both)")
    ap.add_argument("--model", default="minilm", help="model preset, e.g. minilm (default) or tiny for a smoke run")
    ap.add_argument("--max-train", type=int, default=256, help="training examples per task (default 256)")
    ap.add_argument("--max-test", type=int, default=200, help="test examples per task (default 200)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs over the task (default 2)")
    ap.add_argument("--lr", type=float, default=None,
                    help="one peak learning rate for both methods, linear schedule (default: each method's "
                         "train.lr default, kroncl.config.DEFAULT_LR)")
    ap.add_argument("--batch-size", type=int, default=16, help="training batch size (default 16)")
    ap.add_argument("--eval-batch-size", type=int, default=16,
                    help="questions per evaluation batch (default 16: batches pad to their longest question, "
                         "so small ones waste less compute on a CPU)")
    ap.add_argument("--seeds", default="0",
                    help="comma list; each seeds data subsampling, head init and data order of one training "
                         "per (task, method); the tables show mean ± std over them (default 0)")
    ap.add_argument("--keep-below", type=int, default=0,
                    help="also measure each scheme with the tensors under this many values kept bf16 "
                         "(rows int8-k, int4-k, nf4-k; 65 keeps Kron-LoRA's A up to 8x8; default 0: not measured)")
    ap.add_argument("--r", type=int, default=8, help="rank of both methods (default 8)")
    ap.add_argument("--kron-a", type=int, default=2, help="Kron-LoRA A is a x a (default 2)")
    ap.add_argument("--max-length", type=int, default=96, help="tokens per (question, choice) (default 96)")
    ap.add_argument("--block-size", type=int, default=64, help="int4/nf4 block size (default 64)")
    ap.add_argument("--data-dir", default=None,
                    help="folder with <task>/{train,test}.jsonl (default $KRONCL_SHARED_DATA or ../shared/data)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1; 0 = torch's own choice). On a shared CPU, "
                         "2 threads ran a MiniLM training step 5x slower than 1 (threads wait for each other "
                         "when another process holds a core)")
    ap.add_argument("--out", default="runs/bench/quant",
                    help="writes <out>.json and <out>.md (default runs/bench/quant)")
    return ap


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """Validate the flags into :class:`BenchSettings`.

    Raises:
        argparse.ArgumentTypeError: a bad flag value, named.
    """
    for flag in ("max_train", "max_test", "epochs", "batch_size", "eval_batch_size", "r", "kron_a", "block_size"):
        if getattr(args, flag) < 1:
            raise argparse.ArgumentTypeError(f"--{flag.replace('_', '-')}={getattr(args, flag)} must be >= 1")
    if args.threads < 0:
        raise argparse.ArgumentTypeError(f"--threads={args.threads} must be >= 0 (0 = torch's choice)")
    if args.lr is not None and not args.lr > 0:
        raise argparse.ArgumentTypeError(f"--lr={args.lr} must be > 0")
    if args.keep_below < 0:
        raise argparse.ArgumentTypeError(f"--keep-below={args.keep_below} must be >= 0 (0 = not measured)")
    try:
        seeds = list(dict.fromkeys(int(x) for x in args.seeds.split(",") if x.strip()))
    except ValueError:
        seeds = []
    if not seeds:
        raise argparse.ArgumentTypeError(f"--seeds={args.seeds!r} must be a comma list of integers, e.g. 0,1,2")
    tasks = parse_choices(args.tasks, None, "--tasks", TASK_ALIASES)
    methods = parse_choices(args.methods, list(METHODS), "--methods")
    data_dir = args.data_dir or default_data_dir()
    return BenchSettings(tasks=tasks, methods=methods, model=args.model, max_train=args.max_train,
                         max_test=args.max_test, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                         eval_batch_size=args.eval_batch_size,
                         seeds=seeds, keep_below=args.keep_below, r=args.r, alpha=2.0 * args.r, kron_a=args.kron_a,
                         block_size=args.block_size, max_length=args.max_length, threads=args.threads,
                         data_dir=data_dir if Path(data_dir).is_dir() else None, device=args.device)


def output_paths(out: str) -> tuple[Path, Path]:
    """``--out`` -> (json, markdown) paths; a given .json/.md suffix is dropped, other dots kept.

    Example:
        >>> [str(p) for p in output_paths("runs/bench/quant")]
        ['runs/bench/quant.json', 'runs/bench/quant.md']
        >>> [str(p) for p in output_paths("r/q.v2.json")]
        ['r/q.v2.json', 'r/q.v2.md']
    """
    base = str(out)
    for suffix in (".json", ".md"):
        base = base.removesuffix(suffix)
    return Path(base + ".json"), Path(base + ".md")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except argparse.ArgumentTypeError as exc:
        ap.error(str(exc))
    from kroncl.errors import KronclError

    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "command": "python -m pipelines.bench quant" + (" " + shlex.join(argv) if argv else ""),
        "machine": machine_info(),
        "settings": asdict(settings),
        "tasks": {},
    }
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731 - progress, not results
    all_rows: list[Row] = []
    try:
        for task in settings.tasks:
            entry: dict[str, Any] = {"sizes": {}, "rows": [], "methods": {}}
            for seed in settings.seeds:
                splits = load_task_splits(task, settings, seed)
                entry["sizes"] = dict(splits[0].sizes())
                for method in settings.methods:
                    trained = train_adapter(splits, method, settings, seed=seed, log=log)
                    res = measure_schemes(trained, settings.block_size, settings.keep_below, log=log)
                    entry["rows"] += [asdict(r) for r in res.rows]
                    info = entry["methods"].setdefault(method, {
                        "lr": method_lr(method, settings), "adapter_params": res.adapter_params,
                        "head_fp32_bytes": res.head_fp32_bytes, "train_s": 0.0, "eval_s": 0.0,
                        "per_layer_delta_err": {}})
                    info["train_s"] += res.train_s
                    info["eval_s"] += res.eval_s
                    info["per_layer_delta_err"][seed] = res.per_layer_error
                    all_rows += res.rows
            report["tasks"][task] = entry
    except KronclError as exc:
        print(f"error: {exc}\n(--data-dir points at the folder of local tasks; now {settings.data_dir})",
              file=sys.stderr)
        return 2
    report["targets"] = [asdict(t) for t in check_targets(all_rows)]
    report["runtime_s"] = time.perf_counter() - started
    if hasattr(os, "getloadavg"):
        report["machine"]["load_avg_1min_end"] = os.getloadavg()[0]
    text = format_report(report)
    print(text)
    json_path, md_path = output_paths(args.out)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, default=str))
    md_path.write_text(format_report_markdown(report))
    print(f"wrote {json_path} and {md_path}")
    return 0
