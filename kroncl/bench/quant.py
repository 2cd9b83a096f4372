"""Benchmark: quantized adapter artifacts, size vs ΔW error vs accuracy (``python -m kroncl.bench quant``).

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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

TASK_ALIASES = {"toy": "toy_larger", "arc": "arc_easy"}
"""Short names accepted by ``--tasks`` (any other task name is used as given). ``arc`` is
ARC-Easy, the easier ARC set: more room above the 25% chance level for a short CPU run, so that
an accuracy drop has something to measure; name ``arc_challenge`` for the hard set."""
METHODS: dict[str, dict[str, int | str]] = {
    "kron": {"method": "kron"},  # a_out × a_in from --kron-a
    "lora": {"method": "lora", "a_out": 1, "a_in": 1},
}
METHOD_LABELS = {"kron": "Kron-LoRA", "lora": "LoRA"}
SCHEMES = ("fp32", "int8", "int4", "nf4")
INT4_BYTES_TARGET = 1 / 6
INT8_DROP_TARGET = 0.5
REPO_ROOT = Path(__file__).resolve().parents[2]


# ---- results: plain records and pure functions over them --------------------------------------
@dataclass
class Row:
    """One (task, method, scheme) measurement. Accuracies are fractions, drops are points."""

    task: str
    method: str
    scheme: str
    bytes: int
    bytes_ratio: float
    delta_err_mean: float
    delta_err_max: float
    accuracy: float
    drop_points: float
    agreement: float
    n_test: int


@dataclass
class Target:
    """A target of the issue and whether this run met it, with the numbers behind the verdict."""

    name: str
    passed: bool
    detail: str


def accuracy_drop_points(reference: float, quantized: float) -> float:
    """Accuracy lost by quantizing, in percentage points (positive = the quantized set is worse).

    Example:
        >>> round(accuracy_drop_points(0.8, 0.7925), 2)
        0.75
        >>> accuracy_drop_points(0.5, 0.51) < 0
        True
    """
    return (reference - quantized) * 100.0


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of questions on which two prediction vectors pick the same answer.

    Raises:
        ValueError: the vectors differ in length or are empty.
    """
    if a.shape != b.shape or a.numel() == 0:
        raise ValueError(f"agreement needs two non-empty predictions of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return float((a == b).float().mean())


def bytes_ratio(quantized: int, fp32: int) -> float:
    """quantized / fp32 bytes.

    Raises:
        ValueError: ``fp32`` is not positive.
    """
    if fp32 <= 0:
        raise ValueError(f"fp32 artifact has {fp32} bytes; nothing to compare against")
    return quantized / fp32


def check_targets(rows: Sequence[Row]) -> list[Target]:
    """The issue's targets, judged on every (task, method) of ``rows``.

    1. int4 artifact ≤ 1/6 of the fp32 bytes;
    2. int8 accuracy drop ≤ 0.5 points;
    3. Kron-LoRA degrades less than LoRA: per task and quantized scheme, a lower mean ΔW error
       and an accuracy drop no larger than LoRA's (judged only when both methods ran).
    """
    by_key = {(r.task, r.method, r.scheme): r for r in rows}
    int4 = [r for r in rows if r.scheme == "int4"]
    int8 = [r for r in rows if r.scheme == "int8"]
    out = []
    if int4:
        out.append(Target(
            "int4 bytes <= 1/6 of fp32",
            all(r.bytes_ratio <= INT4_BYTES_TARGET for r in int4),
            ", ".join(f"{r.task}/{r.method} {r.bytes_ratio:.3f}" for r in int4) + f" (1/6 = {INT4_BYTES_TARGET:.3f})",
        ))
    if int8:
        out.append(Target(
            f"int8 accuracy drop <= {INT8_DROP_TARGET} points",
            all(r.drop_points <= INT8_DROP_TARGET for r in int8),
            ", ".join(f"{r.task}/{r.method} {r.drop_points:+.2f}" for r in int8),
        ))
    pairs = [
        (by_key[(t, "kron", s)], by_key[(t, "lora", s)])
        for (t, m, s) in by_key
        if m == "kron" and s != "fp32" and (t, "lora", s) in by_key
    ]
    if pairs:
        err_wins = sum(k.delta_err_mean < lo.delta_err_mean for k, lo in pairs)
        drop_wins = sum(k.drop_points <= lo.drop_points for k, lo in pairs)
        detail = "; ".join(
            f"{k.task}/{k.scheme}: ΔW err {k.delta_err_mean:.4f} vs {lo.delta_err_mean:.4f}, "
            f"drop {k.drop_points:+.2f} vs {lo.drop_points:+.2f}"
            for k, lo in pairs
        )
        out.append(Target(
            "Kron-LoRA degrades less than LoRA (Kron vs LoRA)",
            err_wins == len(pairs) and drop_wins == len(pairs),
            f"lower ΔW error in {err_wins}/{len(pairs)}, drop <= LoRA's in {drop_wins}/{len(pairs)}: {detail}",
        ))
    return out


def _fmt_bytes(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


TABLE_COLUMNS = ("method", "scheme", "bytes", "x fp32", "ΔW err mean", "ΔW err max", "acc %", "drop pts", "agree %")


def table_cells(row: Row) -> list[str]:
    """The printed cells of one row, in TABLE_COLUMNS order (fp32 rows show '-' for the
    comparisons with themselves)."""
    ref = row.scheme == "fp32"
    return [
        METHOD_LABELS.get(row.method, row.method),
        row.scheme,
        _fmt_bytes(row.bytes),
        f"{row.bytes_ratio:.3f}",
        "-" if ref else f"{row.delta_err_mean:.4f}",
        "-" if ref else f"{row.delta_err_max:.4f}",
        f"{row.accuracy * 100:.2f}",
        "-" if ref else f"{row.drop_points:+.2f}",
        "-" if ref else f"{row.agreement * 100:.1f}",
    ]


def format_table(rows: Sequence[Row]) -> str:
    """Fixed-width text table of ``rows`` (numbers right-aligned)."""
    cells = [list(TABLE_COLUMNS)] + [table_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(TABLE_COLUMNS))]
    lines = []
    for k, c in enumerate(cells):
        parts = [c[0].ljust(widths[0]), c[1].ljust(widths[1])] + [v.rjust(w) for v, w in zip(c[2:], widths[2:])]
        lines.append("  ".join(parts))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown_table(rows: Sequence[Row]) -> str:
    """The same table as GitHub markdown."""
    head = "| " + " | ".join(TABLE_COLUMNS) + " |"
    rule = "|" + "|".join(["---", "---"] + ["---:"] * (len(TABLE_COLUMNS) - 2)) + "|"
    body = ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def format_targets(targets: Sequence[Target]) -> str:
    return "\n".join(f"[{'PASS' if t.passed else 'FAIL'}] {t.name}: {t.detail}" for t in targets)


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


# ---- the measurement -------------------------------------------------------------------------
@dataclass
class BenchSettings:
    """Everything that changes the numbers; written into the JSON next to the results."""

    tasks: list[str]
    methods: list[str]
    model: str = "minilm"
    max_train: int = 256
    max_test: int = 200
    epochs: int = 2
    lr: float = 2e-3
    batch_size: int = 16
    eval_batch_size: int = 16
    seed: int = 0
    r: int = 8
    alpha: float = 16.0
    kron_a: int = 2
    block_size: int = 64
    max_length: int | None = 96
    data_dir: str | None = None
    device: str = "auto"
    threads: int = 1


@dataclass
class MethodResult:
    """One trained adapter set and its measurements on one task."""

    rows: list[Row]
    adapter_params: int
    head_fp32_bytes: int
    train_s: float
    eval_s: float
    per_layer_error: dict[str, dict[str, float]] = field(default_factory=dict)


def prediction_recorder():
    """An avalanche plugin recording the argmax answer of every evaluated question, in loader
    order (the eval loader does not shuffle); ``.predictions()`` returns the last evaluation's.

    Built on call because avalanche takes ~15 s to import and ``--help`` should not wait for it.
    """
    from avalanche.training.plugins import SupervisedPlugin

    class PredictionRecorder(SupervisedPlugin):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[torch.Tensor] = []

        def before_eval_exp(self, strategy, **kwargs) -> None:
            self.parts.clear()

        def after_eval_iteration(self, strategy, **kwargs) -> None:
            self.parts.append(strategy.mb_output.argmax(dim=-1).detach().cpu())

        def predictions(self) -> torch.Tensor:
            return torch.cat(self.parts) if self.parts else torch.empty(0, dtype=torch.long)

    return PredictionRecorder()


@contextlib.contextmanager
def answering_with(adapter_sets, name: str) -> Iterator[None]:
    """Route evaluation through adapter set ``name`` (sequential mode answers with ``current``).

    The strategy's forward activates the routed set on every batch, so this, not a bare
    ``set_active_adapter``, is what makes an evaluation use another resident set.

    Raises:
        ValueError: ``adapter_sets`` is in a per-task mode (it routes by task label instead).
    """
    if adapter_sets.per_task:
        raise ValueError(f"answering_with needs adapter sets in sequential mode, got mode {adapter_sets.mode!r}")
    previous = adapter_sets.current
    adapter_sets.current = name
    try:
        yield
    finally:
        adapter_sets.current = previous


def evaluate_set(strategy, test_stream, name: str, recorder) -> tuple[float, torch.Tensor]:
    """(accuracy, predictions) of adapter set ``name`` on the single task of ``test_stream``."""
    from kroncl.strategy.loop import evaluate_stream

    with answering_with(strategy.adapter_sets, name):
        (acc,) = evaluate_stream(strategy, test_stream)
    return acc, recorder.predictions()


def load_task_splits(task: str, settings: BenchSettings):
    """The task as a one-task stream (validation not carved: nothing here uses it)."""
    from kroncl.data import StreamConfig, build_stream

    cfg = StreamConfig(name=f"bench-{task}", tasks=[task], max_train=settings.max_train,
                       max_test=settings.max_test, validation_fraction=0.0, seed=settings.seed)
    return build_stream(cfg, settings.data_dir)


@dataclass
class Trained:
    """A model with one trained adapter set, and the strategy and benchmark that trained it."""

    task: str
    method: str
    strategy: Any  # KronclStrategy
    benchmark: Any  # avalanche CLScenario of the one task
    recorder: Any  # prediction_recorder()
    adapter_set: str
    train_s: float

    @property
    def backbone(self) -> torch.nn.Module:
        return self.strategy.model.backbone


def train_adapter(tasks, method: str, settings: BenchSettings, log=print) -> Trained:
    """Build the model, inject ``method``'s adapters and train them on the one task of ``tasks``.

    The same budget for every method: epochs, batch size, lr, data, data order and head
    initialisation all come from ``settings`` (fp32 throughout, so quantization is the only
    source of difference in what follows).
    """
    from kroncl.adapters import AdapterConfig
    from kroncl.config import TrainConfig
    from kroncl.data import make_benchmark
    from kroncl.models import ModelConfig, build_model
    from kroncl.strategy.adapter_sets import AdapterSets
    from kroncl.strategy.plugins import AccuracyCollector
    from kroncl.strategy.template import KronclStrategy, seed_everything

    task = tasks[0].name
    seed_everything(settings.seed)
    model = build_model(ModelConfig(name=settings.model, seed=settings.seed, max_length=settings.max_length))
    shape = {"a_out": settings.kron_a, "a_in": settings.kron_a, **METHODS[method]}
    adapter_cfg = AdapterConfig(r=settings.r, alpha=settings.alpha, targets=list(model.default_targets),
                                head_targets=list(model.head_modules), **shape).validate()
    sets = AdapterSets("sequential")
    sets.inject(model.backbone, adapter_cfg)
    trained = sets.current
    benchmark = make_benchmark(tasks, model)
    recorder = prediction_recorder()
    train_cfg = TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size,
                            eval_batch_size=settings.eval_batch_size, lr=settings.lr,
                            device=settings.device, precision="fp32", progress=sys.stderr.isatty())
    strategy = KronclStrategy(model=model, adapter_sets=sets, train=train_cfg,
                              plugins=[AccuracyCollector(), recorder], seed=settings.seed)
    t0 = time.perf_counter()
    log(f"[{task}/{method}] training {len(benchmark.train_stream[0].dataset)} examples x {settings.epochs} epochs")
    strategy.train(benchmark.train_stream[0], eval_streams=[])
    sets.end_experience(0)
    return Trained(task, method, strategy, benchmark, recorder, trained, time.perf_counter() - t0)


def measure_schemes(t: Trained, block_size: int = 64, log=print) -> MethodResult:
    """fp32, int8, int4 and nf4 versions of ``t``'s adapter set: bytes, ΔW error, accuracy.

    Each quantized version is dequantized into its own resident adapter set of the same model,
    evaluated, and deleted again; the trained set and the base are never touched.

    Returns:
        The rows in SCHEMES order, and the facts behind them.
    """
    from kroncl.adapters import (
        DenseDeltaLinear,
        adapter_layers,
        adapter_state_dict,
        add_adapter,
        count_adapter_parameters,
        delete_adapter,
        load_adapter_state_dict,
    )
    from kroncl.quant import QuantScheme, artifact_bytes, dequantize_tensors, quantize_tensors
    from kroncl.quant.measure import quantization_error

    t0 = time.perf_counter()
    test_stream = t.benchmark.test_stream
    ref_acc, ref_pred = evaluate_set(t.strategy, test_stream, t.adapter_set, t.recorder)
    tensors = adapter_state_dict(t.backbone, t.adapter_set)
    fp32_bytes = artifact_bytes(tensors)
    heads = [p for p, m in adapter_layers(t.backbone).items() if isinstance(m, DenseDeltaLinear)]
    head_bytes = artifact_bytes({k: v for k, v in tensors.items() if any(k.startswith(h + ".") for h in heads)})
    log(f"[{t.task}/{t.method}] fp32: accuracy {ref_acc:.4f}, {fp32_bytes} bytes")
    rows = [Row(t.task, t.method, "fp32", fp32_bytes, 1.0, 0.0, 0.0, ref_acc, 0.0, 1.0, len(ref_pred))]
    per_layer: dict[str, dict[str, float]] = {}
    for name in SCHEMES[1:]:
        packed, meta = quantize_tensors(tensors, QuantScheme.from_name(name, block_size=block_size))
        report = quantization_error(tensors, packed, meta)
        per_layer[name] = dict(report.per_layer)
        probe = f"quant_{name}"
        add_adapter(t.backbone, probe)
        try:
            load_adapter_state_dict(t.backbone, dequantize_tensors(packed, meta, dtype=torch.float32), probe)
            acc, pred = evaluate_set(t.strategy, test_stream, probe, t.recorder)
        finally:
            delete_adapter(t.backbone, probe)
        q_bytes = artifact_bytes(packed)
        rows.append(Row(t.task, t.method, name, q_bytes, bytes_ratio(q_bytes, fp32_bytes), report.mean, report.max,
                        acc, accuracy_drop_points(ref_acc, acc), agreement(ref_pred, pred), len(pred)))
        log(f"[{t.task}/{t.method}] {name}: accuracy {acc:.4f}, ΔW err mean {report.mean:.4f}")
    return MethodResult(rows, count_adapter_parameters(t.backbone, t.adapter_set), head_bytes, t.train_s,
                        time.perf_counter() - t0, per_layer)


# ---- the command ------------------------------------------------------------------------------
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


def describe_machine(info: Mapping[str, Any]) -> str:
    gpu = f"GPU: {info['gpu']}; " if info.get("gpu") else ""
    return (f"{gpu}CPU: {info['cpu']}; logical cores: {info['logical_cores']}; torch threads: "
            f"{info['torch_threads']}; torch {info['torch']}; python {info['python']}"
            + (f"; load average at start {info['load_avg_1min']:.1f}" if info.get("load_avg_1min") is not None else ""))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m kroncl.bench quant", description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="toy,arc",
                    help=f"comma-separated tasks; aliases {TASK_ALIASES} (default toy,arc)")
    ap.add_argument("--methods", default="kron,lora", help="comma-separated: kron, lora (default both)")
    ap.add_argument("--model", default="minilm", help="model preset, e.g. minilm (default) or tiny for a smoke run")
    ap.add_argument("--max-train", type=int, default=256, help="training examples per task (default 256)")
    ap.add_argument("--max-test", type=int, default=200, help="test examples per task (default 200)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs over the task (default 2)")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate, linear schedule (default 2e-3)")
    ap.add_argument("--batch-size", type=int, default=16, help="training batch size (default 16)")
    ap.add_argument("--eval-batch-size", type=int, default=16,
                    help="questions per evaluation batch (default 16: batches pad to their longest question, "
                         "so small ones waste less compute on a CPU)")
    ap.add_argument("--seed", type=int, default=0, help="seeds data subsampling, head init and data order")
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
    if not args.lr > 0:
        raise argparse.ArgumentTypeError(f"--lr={args.lr} must be > 0")
    tasks = parse_choices(args.tasks, None, "--tasks", TASK_ALIASES)
    methods = parse_choices(args.methods, list(METHODS), "--methods")
    data_dir = args.data_dir or default_data_dir()
    return BenchSettings(tasks=tasks, methods=methods, model=args.model, max_train=args.max_train,
                         max_test=args.max_test, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                         eval_batch_size=args.eval_batch_size,
                         seed=args.seed, r=args.r, alpha=2.0 * args.r, kron_a=args.kron_a,
                         block_size=args.block_size, max_length=args.max_length, threads=args.threads,
                         data_dir=data_dir if Path(data_dir).is_dir() else None, device=args.device)


def format_report(report: Mapping[str, Any]) -> str:
    """The printed report: header, one table per task, the targets."""
    s = report["settings"]
    lines = [
        "kroncl quantized-adapter benchmark",
        f"command: {report['command']}",
        describe_machine(report["machine"]),
        f"model {s['model']} (max_length {s['max_length']}); r={s['r']}, alpha={s['alpha']:g}, Kron A "
        f"{s['kron_a']}x{s['kron_a']}; {s['epochs']} epochs, batch {s['batch_size']} (eval {s['eval_batch_size']}), lr {s['lr']:g}, "
        f"seed {s['seed']}; int4/nf4 block {s['block_size']}, bf16 scales; data {s['data_dir']}",
    ]
    for task, t in report["tasks"].items():
        rows = [Row(**r) for r in t["rows"]]
        lines.append(f"\n{task}: {t['sizes']['train']} train / {t['sizes']['test']} test examples")
        lines.append(format_table(rows))
        for m, info in t["methods"].items():
            lines.append(f"  {METHOD_LABELS.get(m, m)}: {info['adapter_params']} trainable parameters "
                         f"(head {info['head_fp32_bytes']} B of the fp32 bytes); train {info['train_s']:.0f} s, "
                         f"eval x4 {info['eval_s']:.0f} s")
    lines.append("\nbytes: tensor data of the whole adapter set, classifier head (DenseDelta) included, "
                 "which is quantized too; ΔW err: ‖ΔW−ΔŴ‖/‖ΔW‖ over adapted layers (head included); "
                 "drop: fp32 accuracy − quantized accuracy in points; agree: same answer as fp32")
    lines.append(format_targets([Target(**t) for t in report["targets"]]))
    end_load = report["machine"].get("load_avg_1min_end")
    lines.append(f"total {report['runtime_s']:.0f} s" + (f" (load average at end {end_load:.1f})" if end_load is not None else ""))
    return "\n".join(lines)


def format_report_markdown(report: Mapping[str, Any]) -> str:
    s = report["settings"]
    lines = [
        "# Quantized adapter artifacts",
        "",
        f"`{report['command']}`  ",
        f"{describe_machine(report['machine'])}  ",
        f"model {s['model']} (max_length {s['max_length']}); r={s['r']}, alpha={s['alpha']:g}, "
        f"Kron A {s['kron_a']}x{s['kron_a']}; {s['epochs']} epochs, batch {s['batch_size']} (eval {s['eval_batch_size']}), lr {s['lr']:g}, "
        f"seed {s['seed']}; int4/nf4 block {s['block_size']}, bf16 scales; total {report['runtime_s']:.0f} s",
    ]
    for task, t in report["tasks"].items():
        lines += ["", f"## {task} ({t['sizes']['train']} train / {t['sizes']['test']} test)", ""]
        lines.append(format_markdown_table([Row(**r) for r in t["rows"]]))
    lines += ["", "Bytes are the tensor data of the whole adapter set, the classifier head's dense delta "
              "included (it is quantized too). ΔW err is ‖ΔW−ΔŴ‖/‖ΔW‖ per adapted layer; drop is in "
              "accuracy points versus the unquantized set; agree is the share of test questions answered "
              "the same as fp32.", ""]
    lines += [f"- **{'PASS' if t['passed'] else 'FAIL'}** {t['name']}: {t['detail']}" for t in report["targets"]]
    return "\n".join(lines) + "\n"


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
        "command": "python -m kroncl.bench quant" + (" " + shlex.join(argv) if argv else ""),
        "machine": machine_info(),
        "settings": asdict(settings),
        "tasks": {},
    }
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731 - progress, not results
    all_rows: list[Row] = []
    try:
        for task in settings.tasks:
            splits = load_task_splits(task, settings)
            entry: dict[str, Any] = {"sizes": {k: v for k, v in splits[0].sizes().items()}, "rows": [], "methods": {}}
            for method in settings.methods:
                res = measure_schemes(train_adapter(splits, method, settings, log=log), settings.block_size, log=log)
                entry["rows"] += [asdict(r) for r in res.rows]
                entry["methods"][method] = {
                    "adapter_params": res.adapter_params, "head_fp32_bytes": res.head_fp32_bytes,
                    "train_s": res.train_s, "eval_s": res.eval_s, "per_layer_delta_err": res.per_layer_error,
                }
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

