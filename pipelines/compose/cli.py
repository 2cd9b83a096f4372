"""The command line of ``python -m pipelines.compose``: parser, run, summary, exit status."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kroncl.adapters import count_adapter_parameters
from kroncl.composition import ComposeError
from kroncl.errors import KronclError
from pipelines.compose.arithmetic import combine
from pipelines.compose.build import Composition, compose
from pipelines.compose.evaluation import EvalResult, evaluate
from pipelines.compose.export import EXPORT_FORMATS, check_export_request, export_composition, register_export
from pipelines.compose.save import save_composition
from pipelines.compose.select import open_store, select_versions, why_chosen
from registry import AdapterVersion, HashMismatch, RegistryError

__all__ = ["EXIT_ERROR", "build_parser", "summary_dict", "format_summary", "run", "main"]

EXIT_ERROR = 2


def _weights(text: str) -> list[float]:
    try:
        return [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--weights {text!r} must be comma-separated numbers, e.g. 0.5,0.5") from None


def _model_opt(text: str) -> tuple[str, Any]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--model-opt {text!r} must look like KEY=VALUE, e.g. seed=1")
    return key.removeprefix("model."), yaml.safe_load(value) if value else None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and ``--help``)."""
    p = argparse.ArgumentParser(
        prog="python -m pipelines.compose",
        description="Compose a ready model from registered adapters: one task (optionally merged into the "
                    "base weights), several tasks resident with per-batch routing, or a weighted sum "
                    "(task arithmetic) registered as a new version.",
        epilog="REF is ADAPTER (latest), ADAPTER:VERSION or ADAPTER@ALIAS. Exit status 2 on any error.",
    )
    p.add_argument("refs", nargs="*", metavar="REF", help="adapter versions to compose, in label order")
    g = p.add_argument_group("registry")
    g.add_argument("--registry-url", default=None, help="registry database URL (default: $KRONCL_REGISTRY_URL or "
                   "sqlite:///runs/registry.db)")
    g.add_argument("--artifacts", default=None, metavar="DIR|s3://BUCKET/PREFIX",
                   help="artifact root: a folder or an S3 prefix (endpoint: $AWS_ENDPOINT_URL; default: "
                   "$KRONCL_ARTIFACT_ROOT, else registry_artifacts/ beside the SQLite file)")
    g.add_argument("--task", action="append", default=[], help="add the newest version of TASK (repeatable)")
    g.add_argument("--bits", type=int, choices=(32, 16, 8, 4), help="only versions of this precision")
    g.add_argument("--run", metavar="RUN_ID", help="with --task: that run's version (the run_id in its run.json)")
    g.add_argument("--base-model", help="registry base model, when a task has versions on several")
    g = p.add_argument_group("base model")
    g.add_argument("--model", help="base model name replacing the stored config.run.model (e.g. minilm, tiny)")
    g.add_argument("--model-opt", type=_model_opt, action="append", default=[], metavar="KEY=VALUE",
                   help="override one model config key, e.g. seed=1 or name_or_path=/models/bert (repeatable)")
    g = p.add_argument_group("composition")
    g.add_argument("--merge", action="store_true", help="fold the adapter into the base weights")
    g.add_argument("--weights", type=_weights, help="task arithmetic: one weight per REF, e.g. 0.5,0.5; "
                   "registers the sum as a new version (needs --name)")
    g.add_argument("--name", help="registry adapter name for the --weights result")
    g.add_argument("--as-task", help="registry task of the --weights result (default: the source tasks joined by '-')")
    g.add_argument("--alias", action="append", default=[], help="alias to point at the --weights result (repeatable)")
    g = p.add_argument_group("evaluation and output")
    g.add_argument("--eval", action="store_true", help="score the composed model on the test split of each task")
    g.add_argument("--eval-task", action="append", default=[], help="task to evaluate (repeatable; implies --eval)")
    g.add_argument("--task-labels", choices=("known", "unknown"), default="known",
                   help="unknown: score rows without telling the model their task; with several resident "
                        "sets the most confident one answers each row (routing accuracy is reported)")
    g.add_argument("--data-dir", help="folder of <task>/{train,validation,test}.jsonl (default: the run's data.dir)")
    g.add_argument("--max-test", type=int, help="test rows per task (default: the run's stream.max_test)")
    g.add_argument("--batch-size", type=int, default=64, help="rows per forward when evaluating")
    g.add_argument("--save", metavar="DIR", help="write the composed model (merged: a plain HF model folder)")
    g.add_argument("--export", nargs=2, metavar=("FORMAT", "DIR"),
                   help=f"write the adapter for another tool: FORMAT is one of {', '.join(EXPORT_FORMATS)} "
                        "(peft-lora: exact standard PEFT LoRA folder, what vLLM --lora-modules NAME=DIR takes; "
                        "merged: plain HF model); DIR must be new or empty")
    g.add_argument("--max-rank", type=int, metavar="N", help="with --export peft-lora: truncate layers above rank N "
                   "by SVD (lossy; the relative error per layer is reported)")
    g.add_argument("--register-export", metavar="NAME", help="with --export peft-lora|peft-lokr: also register the "
                   "folder as a version of adapter NAME, lineage exported_from the source (composition never "
                   "picks such versions)")
    g.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def summary_dict(composition: Composition, evals: Sequence[EvalResult], combined: AdapterVersion | None,
                 saved: Path | None) -> dict[str, Any]:
    """The JSON form of the summary."""
    composed = composition.composed
    sets = []
    for i, v in enumerate(composition.versions):
        sets.append({"label": i, "task": v.task, "set": composed.sets[v.task], "version": v.ref,
                     "method": v.method, "a_out": v.a_out, "a_in": v.a_in, "r": v.r, "bits": v.bits,
                     "params": count_adapter_parameters(composed.model.backbone, composed.sets[v.task]),
                     "sha256": v.sha256})
    return {
        "base_model": composition.base_model,
        "revision": composition.revision,
        "verified": composition.verified,
        "model_config": {k: v for k, v in vars(composition.model_config).items() if v not in (None, [], "")},
        "mode": "merged" if composed.merged else ("resident, routed by task" if composed.multi else "adapter"),
        "sets": sets,
        "combined": None if combined is None else {
            "version": combined.ref, "task": combined.task, "weights": combined.tags.get("weights"),
            "merged_from": combined.tags.get("sources", "").split(","), "r": combined.r},
        "eval": [vars(e) for e in evals],
        "timings": composition.timings,
        "saved": str(saved) if saved else None,
        "export": None,
    }


def format_summary(s: dict[str, Any]) -> str:
    """Human-readable summary of :func:`summary_dict`."""
    pinned = f"revision {s['revision']}, weights verified" if s["verified"] else "no pinned revision: not verified"
    cfg = ", ".join(f"{k}={v}" for k, v in s["model_config"].items() if k not in ("prompt_template", "default_targets"))
    lines = [f"== composed model on base {s['base_model']} ({pinned})", f"   base config: {cfg}"]
    if s["combined"]:
        c = s["combined"]
        lines.append(f"   task arithmetic: registered {c['version']} (task {c['task']}) = "
                     + " + ".join(f"{w}·{r}" for w, r in zip(c["weights"].split(","), c["merged_from"]))
                     + f"; LoRA of concatenated factors, r={c['r']}; lineage merged_from {', '.join(c['merged_from'])}")
    lines.append(f"   mode: {s['mode']}")
    for e in s["sets"]:
        shape = f"a={e['a_out']}x{e['a_in']} r={e['r']}" if e["a_out"] else f"r={e['r']}"
        lines.append(f"   label {e['label']}  {e['task']:<16} <- {e['version']:<28} {e['method']} {shape} "
                     f"{e['bits']}-bit  {e['params'] or 0:,} params  sha256 {e['sha256'][:12]}")
        if e.get("chosen"):
            lines.append(f"            chosen: {e['chosen']}")
    t = s["timings"]
    lines.append("   timings: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in t.items())
                 + f"  (total {sum(t.values()):.2f} s)")
    for e in s["eval"]:
        ref = ""
        if e["registry_acc"] is not None:
            ref = (f"  ({e['source']} alone, as registered: {e['registry_acc']:.4f})" if s["combined"]
                   else f"  (registered acc of {e['source']}: {e['registry_acc']:.4f})")
        if e.get("routing_acc") is not None:
            ref += f"  [no task label: {e['routing_acc']:.1%} of rows answered by its own set]"
        lines.append(f"   eval {e['task']}: test {e['rows']} rows, acc={e['acc']:.4f}{ref}")
    if s["saved"]:
        lines.append(f"   saved to {s['saved']}")
    x = s.get("export")
    if x:
        line = f"   exported {x['format']} to {x['path']} (from {x['exported_from']})"
        if "max_lora_rank" in x:
            loss = ("exact" if x["max_rel_error"] == 0 else
                    f"truncated: relative error max {x['max_rel_error']:.2e}, mean {x['mean_rel_error']:.2e}")
            line += f"; LoRA rank {x['max_lora_rank']} (serve with max_lora_rank >= {x['max_lora_rank']}), {loss}"
        lines.append(line)
        if x.get("registered"):
            lines.append(f"   registered the export as {x['registered']}; lineage exported_from {x['exported_from']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Carry out a parsed command line; returns :func:`summary_dict`."""
    if args.weights is not None and not args.name:
        raise ComposeError(
            "--weights registers the weighted sum as a new adapter version: name it with --name NEW_ADAPTER"
        )
    if args.name and args.weights is None:
        raise ComposeError("--name names the result of --weights; give --weights W1,W2,... too")
    model_opts = dict(args.model_opt)
    store = open_store(args.registry_url, args.artifacts)
    try:
        started = time.perf_counter()
        versions = select_versions(store, args.refs, args.task, bits=args.bits, base_model=args.base_model,
                                   run=args.run)
        select_s = time.perf_counter() - started
        fmt, export_dir = args.export or (None, None)
        if fmt is not None:
            check_export_request(fmt, export_dir, n_versions=1 if args.weights is not None else len(versions),
                                 merge=args.merge, max_rank=args.max_rank, register_as=args.register_export,
                                 sources=versions)
        if fmt == "merged" and args.save:
            raise ComposeError("--export merged DIR and --save DIR both write the merged model; give only one")
        if args.max_rank is not None and fmt is None:
            raise ComposeError("--max-rank caps the rank of an export; give --export peft-lora DIR too")
        if args.register_export and fmt is None:
            raise ComposeError("--register-export registers an export; give --export peft-lora|peft-lokr DIR too")
        combined = None
        sources = versions
        if args.weights is not None:
            started = time.perf_counter()
            combined = combine(store, versions, args.weights, args.name, task=args.as_task, aliases=args.alias,
                               model=args.model, model_opts=model_opts)
            combine_s = time.perf_counter() - started
            versions = [store.get_version(combined.ref)]
        composition = compose(store, versions, merge=args.merge or fmt == "merged", model=args.model,
                              model_opts=model_opts)
        composition.timings["lookup"] += select_s
        if combined is not None:
            composition.timings = {"combine": combine_s, **composition.timings}
        evals: list[EvalResult] = []
        if args.eval or args.eval_task:
            eval_tasks = args.eval_task or list(dict.fromkeys(v.task for v in sources))
            evals = evaluate(composition, eval_tasks, data_dir=args.data_dir, max_test=args.max_test,
                             batch_size=args.batch_size, sources=sources, task_labels=args.task_labels)
        summary = summary_dict(composition, evals, combined, None)
        if combined is None:  # the task-arithmetic line already says where a combined set came from
            for entry, v in zip(summary["sets"], composition.versions):
                entry["chosen"] = why_chosen(v, args)
        if fmt is not None:  # before --save: a merged save bakes the model in place
            summary["export"] = export_composition(composition, fmt, export_dir, max_rank=args.max_rank)
            if args.register_export:
                summary["export"]["registered"] = register_export(
                    store, composition.versions[0], summary["export"], args.register_export).ref
        if args.save:
            summary["saved"] = str(save_composition(composition, args.save))
        return summary
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 on any error, printed as one ``error:`` line)."""
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except (RegistryError, KronclError) as e:
        hint = ""
        if isinstance(e, HashMismatch) and e.actual is None:
            hint = " (is the artifact root right? pass --artifacts DIR, e.g. <runs>/registry_artifacts)"
        print(f"error: {e}{hint}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(summary, indent=2, default=str) if args.json else format_summary(summary))
    return 0
