"""Quant benchmark, part 3: the report -- the issue's targets (PASS/FAIL lines) and the tables.

Pure functions over :class:`~pipelines.bench.quant_measure.Row` records and the JSON report
that ``python -m pipelines.bench quant`` writes; nothing here trains or measures.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pipelines.bench.quant_measure import KEPT_MARK, Row

METHOD_LABELS = {"kron": "Kron-LoRA", "lora": "LoRA"}
INT4_BYTES_TARGET = 1 / 6
INT8_DROP_TARGET = 0.5


@dataclass
class Target:
    """A target of the issue and whether this run met it, with the numbers behind the verdict."""

    name: str
    passed: bool
    detail: str


@dataclass
class Cell:
    """One (task, method, scheme) over the seeds that ran it."""

    mean: Row
    """Each metric's mean over the seeds (``delta_err_max``: the max; ``seed``: the first)."""
    acc_std: float
    drop_std: float
    n_seeds: int


def over_seeds(rows: Sequence[Row]) -> list[Cell]:
    """Group ``rows`` by (task, method, scheme), in first-seen order; sample std over seeds
    (0 for one seed)."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.task, r.method, r.scheme), []).append(r)

    def mean(rs: list[Row], attr: str) -> float:
        return statistics.fmean(getattr(r, attr) for r in rs)

    def std(rs: list[Row], attr: str) -> float:
        return statistics.stdev(getattr(r, attr) for r in rs) if len(rs) > 1 else 0.0

    return [
        Cell(replace(rs[0], bytes=round(mean(rs, "bytes")), bytes_ratio=mean(rs, "bytes_ratio"),
                     delta_err_mean=mean(rs, "delta_err_mean"), delta_err_max=max(r.delta_err_max for r in rs),
                     accuracy=mean(rs, "accuracy"), drop_points=mean(rs, "drop_points"),
                     agreement=mean(rs, "agreement")),
             std(rs, "accuracy"), std(rs, "drop_points"), len(rs))
        for rs in groups.values()
    ]


def check_targets(rows: Sequence[Row]) -> list[Target]:
    """The issue's targets, judged on every (task, method) of ``rows`` (on the means over seeds).

    1. int4 artifact ≤ 1/6 of the fp32 bytes;
    2. int8 accuracy drop ≤ 0.5 points;
    3. Kron-LoRA degrades less than LoRA: per task and quantized scheme, a lower mean ΔW error
       and an accuracy drop no larger than LoRA's (judged only when both methods ran).
    """
    rows = [c.mean for c in over_seeds(rows)]
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


def _pm(value: float, std: float, n: int, fmt: str) -> str:
    return format(value, fmt) + (f" ± {std:.2f}" if n > 1 else "")


def table_cells(cell: Cell) -> list[str]:
    """The printed cells of one (task, method, scheme), in TABLE_COLUMNS order: means, and
    ``± std`` over seeds when there are several (fp32 rows show '-' for the comparisons with
    themselves)."""
    row, n = cell.mean, cell.n_seeds
    ref = row.scheme == "fp32"
    return [
        METHOD_LABELS.get(row.method, row.method),
        row.scheme,
        _fmt_bytes(row.bytes),
        f"{row.bytes_ratio:.3f}",
        "-" if ref else f"{row.delta_err_mean:.4f}",
        "-" if ref else f"{row.delta_err_max:.4f}",
        _pm(row.accuracy * 100, cell.acc_std * 100, n, ".2f"),
        "-" if ref else _pm(row.drop_points, cell.drop_std, n, "+.2f"),
        "-" if ref else f"{row.agreement * 100:.1f}",
    ]


def format_table(rows: Sequence[Row]) -> str:
    """Fixed-width text table of ``rows``, one line per (method, scheme) over seeds (numbers
    right-aligned)."""
    cells = [list(TABLE_COLUMNS)] + [table_cells(c) for c in over_seeds(rows)]
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
    body = ["| " + " | ".join(table_cells(c)) + " |" for c in over_seeds(rows)]
    return "\n".join([head, rule, *body])


def equal_bytes(rows: Sequence[Row]) -> list[str]:
    """Per task, each quantized Kron-LoRA set against the LoRA set nearest to it in bytes (any
    scheme, fp32 included): accuracy at (about) equal size, the comparison a user who has a byte
    budget makes. Kron-LoRA 2x2 r=8 has half LoRA-8's values, so its int8 meets LoRA's int4."""
    cells = over_seeds(rows)
    lines = []
    for k in cells:
        if k.mean.method != "kron" or k.mean.scheme == "fp32":
            continue
        kept = k.mean.scheme.endswith(KEPT_MARK)  # -k rows against -k rows: one storage rule per line
        loras = [c for c in cells if c.mean.method == "lora" and c.mean.task == k.mean.task
                 and (c.mean.scheme == "fp32" or c.mean.scheme.endswith(KEPT_MARK) == kept)]
        if not loras:
            continue
        lo = min(loras, key=lambda c: abs(c.mean.bytes - k.mean.bytes))
        lines.append(
            f"{k.mean.task}: Kron-LoRA {k.mean.scheme} {_fmt_bytes(k.mean.bytes)} "
            f"{_pm(k.mean.accuracy * 100, k.acc_std * 100, k.n_seeds, '.2f')} % vs LoRA {lo.mean.scheme} "
            f"{_fmt_bytes(lo.mean.bytes)} {_pm(lo.mean.accuracy * 100, lo.acc_std * 100, lo.n_seeds, '.2f')} % "
            f"({lo.mean.bytes / k.mean.bytes:.2f}x the bytes)")
    return lines


def format_targets(targets: Sequence[Target]) -> str:
    return "\n".join(f"[{'PASS' if t.passed else 'FAIL'}] {t.name}: {t.detail}" for t in targets)


def describe_machine(info: Mapping[str, Any]) -> str:
    gpu = f"GPU: {info['gpu']}; " if info.get("gpu") else ""
    return (f"{gpu}CPU: {info['cpu']}; logical cores: {info['logical_cores']}; torch threads: "
            f"{info['torch_threads']}; torch {info['torch']}; python {info['python']}"
            + (f"; load average at start {info['load_avg_1min']:.1f}" if info.get("load_avg_1min") is not None else ""))


def settings_line(s: Mapping[str, Any]) -> str:
    """The budget every cell shared, from the report's ``settings``."""
    lr = f"lr {s['lr']:g}" if s.get("lr") is not None else "lr per method (train.lr's default)"
    kept = f"; -k rows: tensors under {s['keep_below']} values kept bf16" if s.get("keep_below") else ""
    return (f"model {s['model']} (max_length {s['max_length']}); r={s['r']}, alpha={s['alpha']:g}, Kron A "
            f"{s['kron_a']}x{s['kron_a']}; {s['epochs']} epochs, batch {s['batch_size']} (eval {s['eval_batch_size']}), "
            f"{lr}; seeds {','.join(map(str, s['seeds']))} (± = sample std over them); int4/nf4 block "
            f"{s['block_size']}, bf16 scales{kept}")


def format_report(report: Mapping[str, Any]) -> str:
    """The printed report: header, one table per task, the targets."""
    s = report["settings"]
    lines = [
        "kroncl quantized-adapter benchmark",
        f"command: {report['command']}",
        describe_machine(report["machine"]),
        settings_line(s) + f"; data {s['data_dir']}",
    ]
    for task, t in report["tasks"].items():
        rows = [Row(**r) for r in t["rows"]]
        lines.append(f"\n{task}: {t['sizes']['train']} train / {t['sizes']['test']} test examples")
        lines.append(format_table(rows))
        for m, info in t["methods"].items():
            lines.append(f"  {METHOD_LABELS.get(m, m)}: {info['adapter_params']} trainable parameters "
                         f"(head {info['head_fp32_bytes']} B of the fp32 bytes); lr {info['lr']:g}; train "
                         f"{info['train_s']:.0f} s, eval {info['eval_s']:.0f} s (all seeds)")
        lines += ["  equal bytes: " + line for line in equal_bytes(rows)]
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
        settings_line(s) + f"; total {report['runtime_s']:.0f} s",
    ]
    for task, t in report["tasks"].items():
        lines += ["", f"## {task} ({t['sizes']['train']} train / {t['sizes']['test']} test)", ""]
        rows = [Row(**r) for r in t["rows"]]
        lines.append(format_markdown_table(rows))
        lines += [""] + [f"- equal bytes: {line}" for line in equal_bytes(rows)]
    lines += ["", "Bytes are the tensor data of the whole adapter set, the classifier head's dense delta "
              "included (it is quantized too). ΔW err is ‖ΔW−ΔŴ‖/‖ΔW‖ per adapted layer; drop is in "
              "accuracy points versus the unquantized set; agree is the share of test questions answered "
              "the same as fp32.", ""]
    lines += [f"- **{'PASS' if t['passed'] else 'FAIL'}** {t['name']}: {t['detail']}" for t in report["targets"]]
    return "\n".join(lines) + "\n"
