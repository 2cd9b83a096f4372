"""Command line: ``python -m registry [--url URL] [--artifacts DIR|s3://B/P] [--json] COMMAND ...``.

Commands: ``list``, ``show``, ``lineage``, ``alias set|delete|list``, ``verify``, ``delete``,
``gc``, ``tasks``, ``models``, ``adapters``. Output is a plain table by default, JSON with
``--json``. Every registry error and every bad command line (including out-of-range numbers and
references) prints one line (``error: ...``) on stderr and exits with status 2; a failed
``verify`` exits 2 as well.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from registry.db import DEFAULT_URL, ENV_ARTIFACT_ROOT, ENV_URL, default_url
from registry.entities import AdapterVersion, LineageEntry, VerificationResult
from registry.errors import InvalidValue, RegistryError
from registry.gc import DEFAULT_GRACE_S, GcReport
from registry.mlflow_models import MODEL_VERSION_TAG, sync_report
from registry.names import MAX_VERSION_NUMBER, RUN_TAG, parse_ref
from registry.store import RegistryStore
from registry.tables import format_metrics, format_table, human_size, to_jsonable

EXIT_ERROR = 2
_INT_MAX = 2**31 - 1  # every integer option ends up in a 32-bit INTEGER column or a LIMIT


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one ``error: ...`` line (no usage block), like
    every other failure of this CLI, so scripts can rely on one line on stderr."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"error: {self.prog}: {message} (see --help)\n")


def _int_arg(what: str, low: int, high: int = _INT_MAX) -> Callable[[str], int]:
    """An argparse ``type=`` accepting ASCII digits in ``low..high`` only (``int()`` would also
    take '٣', '1_0' and numbers no column can hold)."""

    def parse(text: str) -> int:
        digits = text[1:] if text.startswith("-") else text
        if not re.fullmatch(r"[0-9]{1,12}", digits) or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(
                f"{what} {text!r} is not an integer in {low}..{high} (ASCII digits)"
            )
        return int(text)

    return parse


def _grace_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"--grace {text!r} is not a number of seconds >= 0")
    return value


def _key_value(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{what} {text!r} must look like NAME=VALUE")
    return key, value


def _tag_arg(text: str) -> tuple[str, str]:
    return _key_value(text, "--tag")


def _metric_arg(text: str) -> tuple[str, float]:
    key, value = _key_value(text, "--min-metric")
    try:
        return key, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--min-metric {text!r}: {value!r} is not a number"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and ``--help`` docs)."""
    # Global options are accepted before or after the command: ``--json list`` == ``list --json``.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"registry database URL (default: ${ENV_URL} or {DEFAULT_URL})",
    )
    common.add_argument(
        "--artifacts",
        default=argparse.SUPPRESS,
        metavar="DIR|s3://BUCKET/PREFIX",
        help=f"artifact root: a folder or an S3 prefix (endpoint: $AWS_ENDPOINT_URL); default "
        f"${ENV_ARTIFACT_ROOT} or registry_artifacts/ beside the SQLite file",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="JSON output"
    )

    p = _Parser(
        prog="python -m registry",
        description="Query and manage the kroncl adapter registry.",
        parents=[common],
        epilog="REF is ADAPTER (latest), ADAPTER:VERSION or ADAPTER@ALIAS.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ls = sub.add_parser("list", parents=[common], help="list/search adapter versions")
    ls.add_argument("--adapter")
    ls.add_argument("--task")
    ls.add_argument("--base-model")
    ls.add_argument("--method")
    ls.add_argument("--bits", type=_int_arg("--bits", 1, 64))
    ls.add_argument("--tag", type=_tag_arg, action="append", default=[], metavar="KEY=VALUE")
    ls.add_argument("--run", metavar="RUN_ID",
                    help="versions of one kroncl run (its run.json run_id; same as --tag kroncl.run=RUN_ID)")
    ls.add_argument(
        "--min-metric",
        type=_metric_arg,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="keep versions whose metric NAME is >= VALUE (repeatable)",
    )
    ls.add_argument("--limit", type=_int_arg("--limit", 1))

    show = sub.add_parser("show", parents=[common], help="show one version")
    show.add_argument("ref", metavar="REF")

    lin = sub.add_parser(
        "lineage", parents=[common], help="ancestors (or descendants) of a version"
    )
    lin.add_argument("ref", metavar="REF")
    lin.add_argument("--descendants", action="store_true", help="walk towards derived versions")
    lin.add_argument("--max-depth", type=_int_arg("--max-depth", 1))

    alias = sub.add_parser("alias", parents=[common], help="manage aliases")
    asub = alias.add_subparsers(dest="alias_command", required=True, metavar="ACTION")
    aset = asub.add_parser("set", parents=[common], help="point ADAPTER@NAME at VERSION")
    aset.add_argument("adapter")
    aset.add_argument("name")
    aset.add_argument("version", type=_int_arg("VERSION", 1, MAX_VERSION_NUMBER))
    adel = asub.add_parser("delete", parents=[common], help="remove ADAPTER@NAME")
    adel.add_argument("adapter")
    adel.add_argument("name")
    alist = asub.add_parser("list", parents=[common], help="aliases of ADAPTER")
    alist.add_argument("adapter")

    ver = sub.add_parser("verify", parents=[common], help="re-hash artifacts (all, or REF)")
    ver.add_argument("ref", nargs="?", metavar="REF")

    dele = sub.add_parser("delete", parents=[common], help="delete a version nothing depends on")
    dele.add_argument("ref", metavar="REF")
    dele.add_argument("--keep-artifact", action="store_true", help="leave the artifact files")

    gc = sub.add_parser(
        "gc",
        parents=[common],
        help="find orphan objects, staging leftovers, rows without artifact (dry run)",
    )
    gc.add_argument("--apply", action="store_true", help="remove what is listed as 'remove'")
    gc.add_argument(
        "--grace",
        type=_grace_arg,
        default=DEFAULT_GRACE_S,
        metavar="SECONDS",
        help=f"leave objects/folders younger than this alone (default {DEFAULT_GRACE_S})",
    )
    gc.add_argument(
        "--include-other-hosts",
        action="store_true",
        help="also remove other hosts' staging folders older than --grace",
    )
    gc.add_argument(
        "--delete-missing-rows",
        action="store_true",
        help="with --apply, delete version rows whose artifact directory is missing",
    )

    sub.add_parser("tasks", parents=[common], help="list tasks")
    sub.add_parser("models", parents=[common], help="list base models")
    ad = sub.add_parser("adapters", parents=[common], help="list adapters")
    ad.add_argument("--task")
    ad.add_argument("--base-model")
    sm = sub.add_parser("sync-mlflow", parents=[common], help="mirror versions missing from MLflow's Models pages")
    sm.add_argument("--tracking-uri", required=True, help="the MLflow store the runs log to (e.g. sqlite:///runs/mlflow.db)")
    sm.add_argument("--experiment", default="kroncl", help="for versions whose MLflow run is gone")
    return p


def _version_rows(versions: Sequence[AdapterVersion]) -> str:
    return format_table(
        [
            "VERSION",
            "TASK",
            "BASE MODEL",
            "METHOD",
            "BITS",
            "R",
            "PARAMS",
            "SIZE",
            "METRICS",
            "ALIASES",
            "CREATED",
        ],
        [
            [
                v.ref,
                v.task,
                v.base_model,
                v.method,
                v.bits,
                v.r,
                v.param_count,
                human_size(v.size_bytes),
                format_metrics(v.metrics) or None,
                ",".join(v.aliases) or None,
                v.created_at.strftime("%Y-%m-%d %H:%M") if v.created_at else None,
            ]
            for v in versions
        ],
    )


def _show(v: AdapterVersion, store: RegistryStore) -> str:
    lines = [
        f"version        {v.ref}",
        f"aliases        {', '.join(v.aliases) or '-'}",
        f"task           {v.task}",
        f"base model     {v.base_model}",
        f"method         {v.method}  (a_out={v.a_out}, a_in={v.a_in}, r={v.r}, alpha={v.alpha})",
        f"bits           {v.bits}",
        f"parameters     {v.param_count if v.param_count is not None else '-'}",
        f"artifact       {store.artifacts.path(v.artifact_location)}",
        f"sha256         {v.sha256}",
        f"size           {human_size(v.size_bytes)} ({v.size_bytes} bytes)",
        f"mlflow run     {v.mlflow_run_id or '-'}",
        f"created        {v.created_at.isoformat() if v.created_at else '-'}",
    ]
    lines += [f"metric         {k} = {val:.6g}" for k, val in sorted(v.metrics.items())]
    lines += [f"tag            {k} = {val}" for k, val in sorted(v.tags.items())]
    if v.config:
        lines.append("config         " + json.dumps(v.config, sort_keys=True))
    return "\n".join(lines)


def _lineage(entries: Sequence[LineageEntry], start: str, descendants: bool) -> str:
    title = f"{'descendants' if descendants else 'ancestors'} of {start}:"
    if not entries:
        return f"{title} none"
    return (
        title
        + "\n"
        + format_table(
            ["DEPTH", "VERSION", "RELATION", "VIA"],
            [[e.depth, e.version, e.relation, e.via] for e in entries],
        )
    )


def _status(r: VerificationResult) -> str:
    return "ok" if r.ok else ("missing" if r.actual is None else "MISMATCH")


def _verify_text(results: Sequence[VerificationResult]) -> str:
    """Table, then one ``error:`` line per problem (naming version and file), then a summary."""
    if not results:
        return "no versions to verify"
    table = format_table(
        ["VERSION", "STATUS", "SHA256"],
        [
            [r.version, _status(r), r.expected[:16]] for r in results
        ],
    )
    problems = [(r, p) for r in results if not r.ok for p in (r.problems or (r.message,))]
    summary = f"{len(results)} versions checked, {len(problems)} problems"
    if not problems:
        return f"{table}\n{summary}"
    lines = [
        f"error: {r.version}: {p} (expected {r.expected} at {r.path})" for r, p in problems
    ]
    return f"{table}\n{summary}\n" + "\n".join(lines)


def _gc_text(report: GcReport) -> str:
    """One line per item, then the total; says how to act on a dry run."""
    verbs = {"remove": "would remove", "removed": "removed", "keep": "keep", "report": "report"}
    lines = [
        f"{verbs[i.action]:<12}  {i.kind:<16}  {i.version + ' ' if i.version else ''}{i.path}"
        f"  ({human_size(i.size_bytes)}; {i.reason})"
        for i in report.items
    ]
    n = sum(i.action in ("remove", "removed") for i in report.items)
    total = f"total: {n} item(s), {human_size(report.reclaimable_bytes)}"
    if report.applied:
        lines.append(f"{total} reclaimed")
    else:
        lines.append(f"{total} reclaimable (dry run; pass --apply to remove)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> tuple[Any, str, int]:
    """Execute a parsed command.

    Returns:
        ``(json payload, text output, exit status)``.

    Raises:
        RegistryError: on any registry failure (the caller turns it into one line + status 2).
    """
    store = RegistryStore(
        getattr(args, "url", None) or default_url(), getattr(args, "artifacts", None)
    )
    try:
        cmd = args.command
        if cmd == "list":
            tags = dict(args.tag)
            if args.run:
                tags[RUN_TAG] = args.run
            versions = store.search_versions(
                adapter=args.adapter,
                task=args.task,
                base_model=args.base_model,
                method=args.method,
                bits=args.bits,
                tags=tags or None,
                min_metrics=dict(args.min_metric) or None,
                limit=args.limit,
            )
            text = _version_rows(versions) if versions else "no versions match"
            return versions, text, 0
        if cmd == "show":
            v = store.get_version(args.ref)
            return v, _show(v, store), 0
        if cmd == "lineage":
            start = store.get_version(args.ref).ref
            walk = store.descendants if args.descendants else store.ancestors
            entries = walk(start, max_depth=args.max_depth)
            payload = {
                "version": start,
                "direction": "descendants" if args.descendants else "ancestors",
                "entries": entries,
            }
            return payload, _lineage(entries, start, args.descendants), 0
        if cmd == "alias":
            if args.alias_command == "set":
                v = store.set_alias(args.adapter, args.name, args.version)
                hint = "\n(mirrored in MLflow: run sync-mlflow --tracking-uri URI to move it there too)"
                return v, f"{args.adapter}@{args.name} -> {v.ref}" + (hint if MODEL_VERSION_TAG in v.tags else ""), 0
            if args.alias_command == "delete":
                store.delete_alias(args.adapter, args.name)
                return (
                    {"deleted": f"{args.adapter}@{args.name}"},
                    f"deleted {args.adapter}@{args.name}",
                    0,
                )
            aliases = store.list_aliases(args.adapter)
            text = format_table(
                ["ALIAS", "VERSION"], [[a, f"{args.adapter}:{n}"] for a, n in aliases.items()]
            )
            return aliases, text, 0
        if cmd == "verify":
            if args.ref is not None:
                parse_ref(args.ref)  # reject a malformed ref before hashing anything
            results = store.verify(args.ref, progress=sys.stderr.isatty())
            bad = any(not r.ok for r in results)
            return results, _verify_text(results), EXIT_ERROR if bad else 0
        if cmd == "gc":
            report = store.gc(
                apply=args.apply,
                grace_s=args.grace,
                include_other_hosts=args.include_other_hosts,
                delete_missing_rows=args.delete_missing_rows,
            )
            payload = {
                "applied": report.applied,
                "items": report.items,
                "reclaimable_bytes": report.reclaimable_bytes,
            }
            return payload, _gc_text(report), 0
        if cmd == "delete":
            v = store.delete_version(args.ref, delete_artifact=not args.keep_artifact)
            return {"deleted": v}, f"deleted {v.ref}", 0
        if cmd == "tasks":
            tasks = store.list_tasks()
            return (
                tasks,
                format_table(["TASK", "DESCRIPTION"], [[t.name, t.description] for t in tasks]),
                0,
            )
        if cmd == "models":
            models = store.list_base_models()
            return (
                models,
                format_table(
                    ["BASE MODEL", "REVISION", "DESCRIPTION"],
                    [[m.name, m.revision, m.description] for m in models],
                ),
                0,
            )
        if cmd == "adapters":
            adapters = store.list_adapters(task=args.task, base_model=args.base_model)
            return (
                adapters,
                format_table(
                    ["ADAPTER", "TASK", "BASE MODEL", "LATEST"],
                    [[a.name, a.task, a.base_model, a.latest_version or None] for a in adapters],
                ),
                0,
            )
        if cmd == "sync-mlflow":
            return sync_report(store, args.tracking_uri, args.experiment)
        raise InvalidValue(f"unknown command {cmd!r}")  # argparse already rejects these
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    as_json = getattr(args, "json", False)
    try:
        payload, text, status = run(args)
    except RegistryError as e:
        if as_json:
            print(json.dumps({"error": e.code, "message": e.message}))
        print(f"error: {e.message}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:  # unreadable artifact root, permissions, full disk
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    if as_json:
        print(json.dumps(to_jsonable(payload), indent=2, sort_keys=True))
    elif status == 0:
        print(text)
    else:
        out, _, errs = text.partition("\nerror: ")
        print(out)
        print("error: " + errs, file=sys.stderr)
    return status
