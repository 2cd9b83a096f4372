"""Read finished runs back (``summary.json`` + ``config.yaml``) and print mean ± std tables.

Shared by ``python -m pipelines.bench continual`` (runs a grid, then tables it) and
``python -m pipelines.bench sweep DIR`` (tables a finished Hydra multirun). Every number in a
table is computed here from the runs' own files; nothing is typed in.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METRICS = ("acc", "bwt", "fwt", "forgetting")


@dataclass
class RunInfo:
    """One finished run, as its files record it."""

    run_dir: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    param_counts: dict[str, int]
    reference: dict[str, dict[str, float]]
    collapsed: list[str]
    """Tasks whose predictions after the last experience sit (almost) all on one answer."""
    val_acc: float | None
    """Mean over experiences of the selected epoch's validation accuracy (train.select=best_val)."""
    stuck: list[str] = field(default_factory=list)
    """Tasks that learnt nothing: loss at ln(choices), accuracy at chance (:func:`pipelines.summary.stuck_tasks`)."""
    before: dict[str, float] = field(default_factory=dict)
    """Task -> test accuracy before any training (the accuracy matrix's zero-shot row)."""
    final: dict[str, float] = field(default_factory=dict)
    """Task -> test accuracy after the last experience (the matrix's last row)."""

    def metric(self, name: str) -> float | None:
        value = self.summary.get(name)
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def load_run(run_dir: Path) -> RunInfo:
    """The run in ``run_dir`` (which holds ``summary.json``; ``config.yaml`` when kroncl wrote it)."""
    from omegaconf import OmegaConf

    run_dir = Path(run_dir)
    data = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    cfg_path = run_dir / "config.yaml"
    config = OmegaConf.to_container(OmegaConf.load(cfg_path)) if cfg_path.exists() else {}
    from kroncl.metrics import AccuracyMatrix
    from kroncl.metrics.matrix import MATRIX_JSON
    from kroncl.metrics.reference import collapsed as is_collapsed  # the summary's own rules
    from pipelines.summary import stuck_tasks

    artifacts = data.get("artifacts") or []
    top = (artifacts[-1].get("top_choice") or {}) if artifacts else {}
    collapsed = [task for task, (_, s) in top.items() if is_collapsed(s)]  # NaN (no rows) is not
    vals = []
    for rec in artifacts:
        sel = rec.get("selection")
        if sel and sel.get("selected_epoch"):
            vals.append(sel["val_acc"][sel["selected_epoch"] - 1])
    before, final = {}, {}
    if (run_dir / "metrics" / MATRIX_JSON).exists():
        matrix = AccuracyMatrix.load(run_dir / "metrics")  # the run's own file format, version-checked
        rows = matrix.complete_rows()
        before = {t: v for t, v in zip(matrix.task_names, matrix.baseline) if v is not None}
        final = dict(zip(matrix.task_names, rows[-1])) if len(rows) == len(matrix.task_names) else {}
    return RunInfo(run_dir, config, data["summary"], data.get("param_counts", {}),
                   data.get("reference", {}), collapsed, statistics.fmean(vals) if vals else None,
                   stuck=sorted(stuck_tasks(artifacts, data.get("reference", {}))), before=before, final=final)


def find_runs(root: Path) -> list[RunInfo]:
    """Every finished run under ``root`` (any depth), sorted by directory."""
    return [load_run(p.parent) for p in sorted(Path(root).rglob("summary.json"))]


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sample std, n) of the values that are not None; std is None for n < 2."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None), len(vals)


def fmt_mean_std(mean: float | None, std: float | None, signed: bool = False) -> str:
    if mean is None:
        return "n/a"
    mean = round(mean, 3) + 0.0  # no "-0.000" for a mean that is 0 up to float noise
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return text + (f" ± {std:.3f}" if std is not None else " ± n/a")


@dataclass
class Row:
    """One table row: a group of runs that differ only by seed (or a refused/failed cell)."""

    keys: dict[str, str]
    runs: list[RunInfo] = field(default_factory=list)
    note: str = ""

    def stats(self) -> dict[str, tuple[float | None, float | None, int]]:
        return {m: mean_std(r.metric(m) for r in self.runs) for m in METRICS}

    def val_stats(self) -> tuple[float | None, float | None, int]:
        """Validation accuracy of the selected epochs over the seeds: what ``--lr-grid`` chooses by."""
        return mean_std(r.val_acc for r in self.runs)

    @property
    def params(self) -> str:
        counts = {r.param_counts.get("adapter_set") for r in self.runs}
        return "/".join(f"{c:,}" for c in sorted(c for c in counts if c is not None)) or "-"

    @property
    def seeds(self) -> list[int]:
        return sorted(r.config.get("seed") for r in self.runs if r.config.get("seed") is not None)

    def per_task(self, attr: str) -> dict[str, tuple[float | None, float | None, int]]:
        """Task -> (mean, std, n) over the seeds of ``before`` or ``final`` accuracy."""
        tasks = dict.fromkeys(t for r in self.runs for t in getattr(r, attr))
        return {t: mean_std(getattr(r, attr).get(t) for r in self.runs) for t in tasks}

    def tasks_with(self, attr: str) -> list[str]:
        """Tasks marked ``attr`` (``collapsed`` or ``stuck``) in at least one seed."""
        return sorted({t for r in self.runs for t in getattr(r, attr)})

    @property
    def flag(self) -> str:
        return "".join(f"{word}: {','.join(hit)} " for word, hit in (
            ("collapsed", self.tasks_with("collapsed")), ("learnt nothing", self.tasks_with("stuck"))) if hit)

    def to_dict(self) -> dict[str, Any]:
        return {**self.keys, "params_per_set": self.params, "seeds": self.seeds,
                "n": len(self.runs), "note": self.note,
                "collapsed": self.tasks_with("collapsed"), "learnt_nothing": self.tasks_with("stuck"),
                **{m: {"mean": s[0], "std": s[1], "n": s[2]} for m, s in self.stats().items()},
                "val_acc": dict(zip(("mean", "std", "n"), self.val_stats())),
                **{f"{attr}_per_task": {t: dict(zip(("mean", "std", "n"), v)) for t, v in self.per_task(attr).items()}
                   for attr in ("before", "final")},
                "runs": [str(r.run_dir) for r in self.runs]}


def reference_lines(runs: Sequence[RunInfo]) -> list[str]:
    """Per task: chance and majority-answer rate of its test set (mean over the runs, with the
    range when seeds sampled different test rows)."""
    tasks: dict[str, dict[str, list[float]]] = {}
    for r in runs:
        for task, rates in r.reference.items():
            for k in ("chance", "majority"):
                tasks.setdefault(task, {"chance": [], "majority": []})[k].append(rates[k])
    out = []
    for task, rates in tasks.items():
        parts = []
        for k, vals in rates.items():
            lo, hi = min(vals), max(vals)
            parts.append(f"{k} {statistics.fmean(vals):.3f}" + (f" ({lo:.3f}–{hi:.3f})" if hi - lo > 1e-9 else ""))
        out.append(f"  {task}: " + ", ".join(parts))
    return out


def reference_dict(runs: Sequence[RunInfo]) -> dict[str, dict[str, float]]:
    tasks: dict[str, dict[str, list[float]]] = {}
    for r in runs:
        for task, rates in r.reference.items():
            for k in ("chance", "majority"):
                tasks.setdefault(task, {"chance": [], "majority": []})[k].append(rates[k])
    return {t: {k: statistics.fmean(v) for k, v in d.items()} for t, d in tasks.items()}


HEAD = {"acc": "ACC", "bwt": "BWT", "fwt": "FWT", "forgetting": "forgetting"}


def table_cells(rows: Sequence[Row], key_names: Sequence[str],
                width: int = 60) -> tuple[list[str], list[list[str]]]:
    """Header and cells; notes (a refusal's reason) cut at ``width`` (whole in the JSON)."""
    header = [*key_names, "params/set", *(HEAD[m] for m in METRICS), "val", "n", "note"]
    body = []
    for row in rows:
        stats = row.stats()
        cells = [row.keys.get(k, "") for k in key_names] + [row.params]
        cells += [fmt_mean_std(*stats[m][:2], signed=m != "acc") if row.runs else "-" for m in METRICS]
        val = row.val_stats()
        cells.append(fmt_mean_std(*val[:2]) if val[2] else "-")
        note = (row.flag + row.note).strip()
        cells += [str(len(row.runs)), note if len(note) <= width else note[:width - 1] + "…"]
        body.append(cells)
    return header, body


def format_text(rows: Sequence[Row], key_names: Sequence[str]) -> str:
    from registry.tables import format_table

    return format_table(*table_cells(rows, key_names))


def format_markdown(rows: Sequence[Row], key_names: Sequence[str]) -> str:
    header, body = table_cells(rows, key_names, width=200)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(c.replace("|", "/") for c in cells) + " |" for cells in body]
    return "\n".join(out)


LEGEND = ("ACC: mean final accuracy over tasks; BWT/forgetting: change/drop of earlier tasks' accuracy "
          "by the end; FWT: accuracy of a task before training it minus before any training; "
          "mean ± sample std over n seeds; val: validation accuracy of the selected epochs (what --lr-grid "
          "chooses by; never test); params/set: trainable parameters of one adapter set "
          "(per_task/orthogonal train one set per task)")


def stream_report(stream: str, rows: Sequence[Row], key_names: Sequence[str]) -> str:
    """The printed block for one stream: table, legend, chance levels."""
    runs = [r for row in rows for r in row.runs]
    lines = [f"== stream {stream}", format_text(rows, key_names), LEGEND,
             "reference accuracies of each task's test set (answering without understanding):",
             *reference_lines(runs)]
    lines += per_task_lines(rows, key_names)
    if any(row.tasks_with("collapsed") for row in rows):
        lines.append("collapsed: after the last experience ≥95% of that task's test rows got one answer "
                     "in at least one seed — its accuracy is where the answers sit, not knowledge")
    if any(row.tasks_with("stuck") for row in rows):
        lines.append("learnt nothing: in at least one seed that task's training loss never fell 2% below "
                     "ln(choices) and its test accuracy stayed within 2 standard errors of chance")
    return "\n".join(lines)


def per_task_lines(rows: Sequence[Row], key_names: Sequence[str]) -> list[str]:
    """Per row: each task's accuracy before any training -> after the last experience (what
    ACC averages), mean ± std over the seeds."""
    out = []
    for row in rows:
        before, final = row.per_task("before"), row.per_task("final")
        if not final:
            continue
        label = " ".join(v if k in ("adapter", "strategy", "labels") else f"{k} {v}"
                         for k in key_names if (v := row.keys.get(k, "")) not in ("", "-"))
        out.append(f"  {label}: " + ", ".join(
            f"{t} {fmt_mean_std(*before.get(t, (None, None))[:2])} -> {fmt_mean_std(*final[t][:2])}" for t in final))
    return ["accuracy per task, before any training -> after the last experience:", *out] if out else []


def stream_markdown(stream: str, rows: Sequence[Row], key_names: Sequence[str]) -> str:
    runs = [r for row in rows for r in row.runs]
    ref = "; ".join(f"{t}: chance {d['chance']:.3f}, majority {d['majority']:.3f}"
                    for t, d in reference_dict(runs).items())
    return f"### stream {stream}\n\n{format_markdown(rows, key_names)}\n\nChance level per task: {ref}\n"


def write_outputs(out_dir: Path, streams: dict[str, list[Row]], key_names: Sequence[str],
                  meta: dict[str, Any], name: str = "results") -> tuple[Path, Path]:
    """``<out>/<name>.json`` and ``<out>/<name>.md``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {**meta, "columns": list(key_names), "streams": {
        s: {"rows": [r.to_dict() for r in rows],
            "reference": reference_dict([x for r in rows for x in r.runs])} for s, rows in streams.items()}}
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    md = "\n".join(stream_markdown(s, rows, key_names) for s, rows in streams.items())
    md_path.write_text(md + f"\n{LEGEND}\n", encoding="utf-8")
    return json_path, md_path
