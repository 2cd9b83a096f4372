"""The plain-text summary a run prints at the end (and saves as summary.txt)."""

from __future__ import annotations

from typing import Any

from kroncl.metrics.reference import collapsed, learnt_nothing
from kroncl.tracking import default_tracking_uri


def format_matrix(matrix, reference: dict[str, Any] | None = None) -> str:
    """R as a table; with ``reference`` (task -> ReferenceRates) two rows below it: chance
    (1/choices) and majority (always the most common answer position)."""
    names = matrix.task_names
    width = max(12, *(len(n) + 2 for n in names))
    head = "after".ljust(width) + "".join(n.rjust(width) for n in names)
    lines = [head]
    rows = [("before", matrix.baseline)] + [
        (f"{names[i]}", row) for i, row in enumerate(matrix.rows)
    ]
    if reference:
        rows += [("(chance)", [reference[n].chance for n in names]),
                 ("(majority)", [reference[n].majority for n in names])]
    for label, row in rows:
        cells = "".join(("-" if v is None else f"{v:.3f}").rjust(width) for v in row)
        lines.append(label.ljust(width) + cells)
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:+.3f}" if isinstance(value, float) else str(value)


def format_dropped(dropped_rows: dict[str, dict[str, int]]) -> str:
    """``dropped rows (invalid, data.strict=false): arc_easy train 3, test 1`` or ``... none``."""
    parts = [f"{task} " + ", ".join(f"{split} {n}" for split, n in splits.items())
             for task, splits in dropped_rows.items() if splits]
    return "dropped rows (invalid, see run.log): " + ("; ".join(parts) if parts else "none")


ROUTER_WORDS = {"centroid": "router: nearest task by tokens", "entropy": "router: the most confident set"}


def format_task_labels(task_labels: str, artifacts: list[dict[str, Any]], router: str = "centroid",
                       mode: str = "sequential") -> str:
    """Whether R was measured with task labels, and how well rows found their own set."""
    if mode == "orthogonal":
        return f"task labels at test time: {task_labels} (orthogonal: all trained sets answer together, summed)"
    if mode == "sequential":
        return f"task labels at test time: {task_labels} (sequential: one set answers every task)"
    if task_labels == "known":
        return "task labels at test time: known (each row answered by its own task's set)"
    line = f"task labels at test time: unknown ({ROUTER_WORDS.get(router, router)})"
    routing = artifacts[-1].get("routing_acc") if artifacts else None
    if routing:
        line += "; rows answered by their own task's set after the last experience: " + ", ".join(
            f"{task} {acc:.3f}" for task, acc in routing.items())
    return line


def collapse_warnings(artifacts: list[dict[str, Any]], reference: dict[str, Any] | None) -> list[str]:
    """One line per task whose predictions after the last experience sit on one answer."""
    if not artifacts or not artifacts[-1].get("top_choice"):
        return []
    out = []
    for task, (choice, share) in artifacts[-1]["top_choice"].items():
        if collapsed(share):
            rate = reference[task].majority if reference and task in reference else None
            out.append(f"warning: {task}: {share:.0%} of test rows get answer {choice} — the adapter "
                       f"answers (almost) always the same; its accuracy is where the answers sit"
                       + (f" (always-the-most-common-answer rate {rate:.3f})" if rate is not None else ""))
    return out


def stuck_tasks(artifacts: list[dict[str, Any]], reference: dict[str, Any]) -> dict[str, tuple]:
    """task -> (lowest epoch-mean training loss, the loss of uniform scores, epochs, test accuracy,
    chance) for each experience that learnt nothing (:func:`~kroncl.metrics.reference.learnt_nothing`);
    ``reference``: task -> ReferenceRates or its dict."""
    out = {}
    for rec in artifacts:
        tl, ref = rec.get("train_loss"), reference.get(rec["task"])
        if not (tl and tl["epochs"] and ref and "acc" in tl):  # runs from before the check: none
            continue
        chance = ref["chance"] if isinstance(ref, dict) else ref.chance
        low = min(tl["epochs"])
        if learnt_nothing(low, tl["chance"], tl["acc"], chance, tl["test_rows"]):
            out[rec["task"]] = (low, tl["chance"], len(tl["epochs"]), tl["acc"], chance)
    return out


def stuck_warnings(artifacts: list[dict[str, Any]], reference: dict[str, Any] | None) -> list[str]:
    """One line per experience that learnt nothing: loss at ln(choices), accuracy at chance."""
    return [f"warning: {task}: nothing learnt — training loss never left chance ({low:.3f} at best over {n} "
            f"epoch{'s' if n != 1 else ''}; uniform scores give {uniform:.3f}) and test accuracy {acc:.3f} "
            f"is within 2 standard errors of chance {chance:.3f}; try another train.lr, more epochs or more rows"
            for task, (low, uniform, n, acc, chance) in stuck_tasks(artifacts, reference or {}).items()]


def format_summary(result, *, settings, param_counts: dict[str, int], tracker, registry_url: str | None,
                   elapsed: float, registry_artifacts: str | None = None,
                   dropped_rows: dict[str, dict[str, int]] | None = None,
                   reference: dict[str, Any] | None = None) -> str:
    s = result.summary
    out = [
        "",
        f"== kroncl run: stream={settings.stream.name} model={settings.model.name} "
        f"adapter={settings.adapter.get('method')} "
        f"strategy={settings.strategy.mode} ({elapsed:.0f}s)",
        "",
        "accuracy matrix R[i][j] (row: after training task i; column: test accuracy on task j)",
        format_matrix(result.matrix, reference),
        *collapse_warnings(result.artifacts, reference),
        *stuck_warnings(result.artifacts, reference),
        format_task_labels(result.matrix.task_labels, result.artifacts, settings.eval.router,
                           settings.strategy.mode),
        "",
        f"ACC {'n/a' if s.get('acc') is None else format(s['acc'], '.3f')}   BWT {_fmt(s.get('bwt'))}   FWT {_fmt(s.get('fwt'))}   "
        f"forgetting {_fmt(s.get('forgetting'))}   (avalanche forgetting {_fmt(s.get('avalanche_forgetting'))})",
        "",
        f"parameters: base {param_counts['base']:,} frozen; adapter set "
        f"{param_counts['adapter_set']:,} trainable on {param_counts['adapted_layers']} layers",
        format_dropped(dropped_rows or {}),
    ]
    for rec in result.artifacts:
        line = f"  exp {rec['experience']} {rec['task']}: fp32 {rec['fp32_bytes']:,} B"
        if rec.get("selection"):
            sel = rec["selection"]
            line += (f", epoch {sel['selected_epoch']}/{sel['epochs_run']} by validation "
                     f"({sel['val_acc'][sel['selected_epoch'] - 1]:.3f}"
                     f"{', stopped early' if sel['stopped_early'] else ''})")
        if rec.get("quant_bytes") is not None:
            err = rec["delta_rel_error"]["quant_rel_err_mean"]
            line += (f", {rec['quant_scheme']} {rec['quant_bytes']:,} B "
                     f"({rec['quant_bytes'] / rec['fp32_bytes']:.3f}x, ΔW rel. error {err:.4f}, "
                     f"acc {rec['quant_acc']:.3f})")
        refs = [r for r in (rec.get("fp32_ref"), rec.get("quant_ref")) if r]
        if refs:
            line += "  registry: " + ", ".join(refs)
        out.append(line)
    if registry_url:
        # --artifacts always: a run may store artifacts elsewhere than the CLI's default
        # (registry.artifacts=...), and without it `show`/`verify` would look in the wrong folder.
        cli = f"python -m registry --url {registry_url}"
        if registry_artifacts:
            cli += f" --artifacts {registry_artifacts}"
            endpoint = settings.registry.s3_endpoint_url
            if endpoint and registry_artifacts.startswith("s3://"):  # the CLI reads it from the environment
                cli = f"AWS_ENDPOINT_URL={endpoint} {cli}"
        out.append(f"registry: {registry_url}   (this run's versions: {cli} list --run {result.run_id})")
    if result.mlflow_run_id:
        uri = settings.tracking.uri or default_tracking_uri(settings.runs_root)
        out.append(f"MLflow run {result.mlflow_run_id} in {uri}")
        if not settings.tracking.uri:
            out.append(f"  open the UI: mlflow ui --backend-store-uri {uri} --port 5000")
    if tracker.failures:
        out.append(f"MLflow: {len(tracker.failures)} call(s) failed; every metric is in "
                   f"{tracker.jsonl_path}")
    out.append(f"run directory: {result.run_dir}   (run id {result.run_id})")
    return "\n".join(out) + "\n"
