"""Quant benchmark, part 2: measure each quantized version of a trained adapter set.

For fp32, int8, int4 and nf4 (:data:`SCHEMES`): artifact bytes (:func:`kroncl.quant.artifact_bytes`)
and bytes / fp32 bytes; ΔW relative error ‖ΔW − ΔŴ‖/‖ΔW‖ per adapted layer, mean and max; and
test accuracy with the dequantized tensors loaded into a *second* adapter set of the same model,
the drop in points versus the unquantized set and the share of questions answered the same.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from pipelines.bench.quant_train import Trained

SCHEMES = ("fp32", "int8", "int4", "nf4")
KEPT_MARK = "-k"
"""``int4-k``: int4 with the tensors under ``--keep-below`` values kept at 16 bits."""


def scheme_names(keep_below: int = 0) -> tuple[str, ...]:
    """The measured schemes: SCHEMES, then each quantized one with small tensors kept (``-k``)
    when ``keep_below`` > 0.

    Example:
        >>> scheme_names(65)
        ('fp32', 'int8', 'int4', 'nf4', 'int8-k', 'int4-k', 'nf4-k')
    """
    return SCHEMES + (tuple(s + KEPT_MARK for s in SCHEMES[1:]) if keep_below > 0 else ())


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
    seed: int = 0


@dataclass
class MethodResult:
    """One trained adapter set and its measurements on one task."""

    rows: list[Row]
    adapter_params: int
    head_fp32_bytes: int
    train_s: float
    eval_s: float
    per_layer_error: dict[str, dict[str, float]] = field(default_factory=dict)


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


def measure_schemes(t: Trained, block_size: int = 64, keep_below: int = 0, log=print) -> MethodResult:
    """fp32, int8, int4 and nf4 versions of ``t``'s adapter set (and, with ``keep_below``, each
    with the tensors under ``keep_below`` values kept as bfloat16): bytes, ΔW error, accuracy.

    Each quantized version is dequantized into its own resident adapter set of the same model,
    evaluated, and deleted again; the trained set and the base are never touched.

    Returns:
        The rows in :func:`scheme_names` order, and the facts behind them.
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
    from kroncl.quant import (
        QuantScheme,
        artifact_bytes,
        dequantize_tensors,
        quantize_tensors,
    )
    from kroncl.quant.measure import quantization_error

    t0 = time.perf_counter()
    test_stream = t.benchmark.test_stream
    ref_acc, ref_pred = evaluate_set(t.strategy, test_stream, t.adapter_set, t.recorder)
    tensors = adapter_state_dict(t.backbone, t.adapter_set)
    fp32_bytes = artifact_bytes(tensors)
    heads = [p for p, m in adapter_layers(t.backbone).items() if isinstance(m, DenseDeltaLinear)]
    head_bytes = artifact_bytes({k: v for k, v in tensors.items() if any(k.startswith(h + ".") for h in heads)})
    log(f"[{t.task}/{t.method}] fp32: accuracy {ref_acc:.4f}, {fp32_bytes} bytes")
    rows = [Row(t.task, t.method, "fp32", fp32_bytes, 1.0, 0.0, 0.0, ref_acc, 0.0, 1.0, len(ref_pred), t.seed)]
    per_layer: dict[str, dict[str, float]] = {}
    for name in scheme_names(keep_below)[1:]:
        kind, kept = name.removesuffix(KEPT_MARK), name.endswith(KEPT_MARK)
        scheme = QuantScheme.from_name(kind, block_size=block_size, keep_below=keep_below if kept else 0)
        packed, meta = quantize_tensors(tensors, scheme)
        report = quantization_error(tensors, packed, meta)
        per_layer[name] = dict(report.per_layer)
        probe = f"quant_{name.replace('-', '_')}"
        add_adapter(t.backbone, probe)
        try:
            load_adapter_state_dict(t.backbone, dequantize_tensors(packed, meta, dtype=torch.float32), probe)
            acc, pred = evaluate_set(t.strategy, test_stream, probe, t.recorder)
        finally:
            delete_adapter(t.backbone, probe)
        q_bytes = artifact_bytes(packed)
        rows.append(Row(t.task, t.method, name, q_bytes, bytes_ratio(q_bytes, fp32_bytes), report.mean, report.max,
                        acc, accuracy_drop_points(ref_acc, acc), agreement(ref_pred, pred), len(pred), t.seed))
        log(f"[{t.task}/{t.method}] {name}: accuracy {acc:.4f}, ΔW err mean {report.mean:.4f}")
    return MethodResult(rows, count_adapter_parameters(t.backbone, t.adapter_set), head_bytes, t.train_s,
                        time.perf_counter() - t0, per_layer)
