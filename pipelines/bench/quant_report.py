"""Quant benchmark, part 3: the report -- the issue's targets (PASS/FAIL lines) and the tables.

Pure functions over :class:`~pipelines.bench.quant_measure.Row` records and the JSON report
that ``python -m pipelines.bench quant`` writes; nothing here trains or measures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.bench.quant_measure import Row

METHOD_LABELS = {"kron": "Kron-LoRA", "lora": "LoRA"}
INT4_BYTES_TARGET = 1 / 6
INT8_DROP_TARGET = 0.5


@dataclass
class Target:
    """A target of the issue and whether this run met it, with the numbers behind the verdict."""

    name: str
    passed: bool
    detail: str


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


def describe_machine(info: Mapping[str, Any]) -> str:
    gpu = f"GPU: {info['gpu']}; " if info.get("gpu") else ""
    return (f"{gpu}CPU: {info['cpu']}; logical cores: {info['logical_cores']}; torch threads: "
            f"{info['torch_threads']}; torch {info['torch']}; python {info['python']}"
            + (f"; load average at start {info['load_avg_1min']:.1f}" if info.get("load_avg_1min") is not None else ""))


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
