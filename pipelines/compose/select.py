"""Which registry versions a composition uses: refs and ``--task`` (optionally ``--run``), and why.

:func:`select_versions` resolves refs (``ADAPTER``, ``ADAPTER:N``, ``ADAPTER@ALIAS``) and
tasks to versions in label order; :func:`why_chosen` says for the summary which rule picked
a version and which run made it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from kroncl.composition import ComposeError
from registry import EXPORTED_FROM, AdapterVersion, RegistryStore, parse_ref
from registry.db import default_artifact_root, default_url
from registry.names import RUN_TAG

__all__ = ["EXPORT_TAG", "open_store", "newest_for_task", "select_versions", "why_chosen"]

EXPORT_TAG = "export_format"
"""Tag of versions that are exports (value: the format, e.g. peft-lora): folders for PEFT / vLLM,
not kroncl adapter files, so composition never picks them (``--register-export`` writes them)."""


def open_store(url: str | None = None, artifacts: str | Path | None = None) -> RegistryStore:
    """The registry at ``url`` (default ``$KRONCL_REGISTRY_URL``); artifacts default to the
    registry's own default (``$KRONCL_ARTIFACT_ROOT``, else ``registry_artifacts/`` beside a
    SQLite file: where ``kroncl.run`` writes them)."""
    url = url or default_url()
    return RegistryStore(url, artifacts if artifacts is not None else default_artifact_root(url))


def newest_for_task(
    store: RegistryStore, task: str, *, bits: int | None = None, base_model: str | None = None,
    run: str | None = None,
) -> AdapterVersion:
    """The newest version (by registration time) trained on ``task`` (by run ``run`` if given).

    Raises:
        NotFound: ``task`` or ``base_model`` is not registered (the registry's message).
        ComposeError: no version matches ``bits``, or the task has versions on several base
            models and ``base_model`` is None.
    """
    found = store.search_versions(task=task, base_model=base_model, tags={RUN_TAG: run} if run else None)
    found = [v for v in found if EXPORT_TAG not in v.tags]
    if run and not found:
        raise ComposeError(f"run {run!r} registered no version of task {task!r}; list its versions with "
                           f"python -m registry list --run {run}")
    if bits is not None:
        matching = [v for v in found if v.bits == bits]
        if not matching:
            have = sorted({v.bits for v in found})
            raise ComposeError(
                f"task {task!r} has no {bits}-bit version" + (f" on base model {base_model!r}" if base_model else "")
                + (f"; it has {have}-bit versions, pick one with --bits" if have else "; it has no versions")
            )
        found = matching
    if not found:
        raise ComposeError(f"task {task!r} has no adapter versions" + (f" on {base_model!r}" if base_model else ""))
    bases = sorted({v.base_model for v in found})
    if len(bases) > 1:
        raise ComposeError(f"task {task!r} has versions on base models {bases}; choose one with --base-model")
    return max(found, key=lambda v: (v.created_at, v.adapter, v.number))


def select_versions(
    store: RegistryStore,
    refs: Sequence[str] = (),
    tasks: Sequence[str] = (),
    *,
    bits: int | None = None,
    base_model: str | None = None,
    run: str | None = None,
) -> list[AdapterVersion]:
    """Resolve refs (``ADAPTER``, ``ADAPTER:N``, ``ADAPTER@ALIAS``) and tasks to versions, in order.

    Tasks resolve to their newest version, of run ``run`` (its ``run.json`` id) when given: the
    way to take one run's adapters out of a registry several runs or a sweep write to.

    A bare ``ADAPTER`` with ``bits`` picks the adapter's newest version of that precision; an
    explicit number or alias must have it.

    Raises:
        NotFound, InvalidName: unknown or malformed refs (the registry's message lists what exists).
        ComposeError: nothing chosen, a version chosen twice, or ``bits`` not matching.
    """
    if not refs and not tasks:
        raise ComposeError("choose at least one adapter version: give REF(s) or --task TASK")
    out: list[AdapterVersion] = []
    for text in refs:
        ref = parse_ref(text)
        if bits is not None and ref.number is None and ref.alias == "latest" and "@" not in text:
            versions = [v for v in store.list_versions(ref.adapter) if v.bits == bits]
            if not versions:
                have = sorted({v.bits for v in store.list_versions(ref.adapter)})
                raise ComposeError(f"adapter {ref.adapter!r} has no {bits}-bit version (it has {have}-bit ones)")
            v = versions[-1]
        else:
            v = store.get_version(ref)
            if bits is not None and v.bits != bits:
                raise ComposeError(f"{text!r} is {v.ref}, a {v.bits}-bit version, but --bits {bits} was asked")
        if EXPORT_TAG in v.tags:
            raise ComposeError(
                f"{v.ref} is a {v.tags[EXPORT_TAG]} export (a folder for PEFT / vLLM), not a kroncl adapter; "
                f"compose its source {v.tags.get(EXPORTED_FROM, '?')} instead"
            )
        out.append(v)
    out += [newest_for_task(store, t, bits=bits, base_model=base_model, run=run) for t in tasks]
    refs_seen = [v.ref for v in out]
    dupes = sorted({r for r in refs_seen if refs_seen.count(r) > 1})
    if dupes:
        raise ComposeError(f"version(s) {dupes} chosen more than once; name each version once")
    return out


def why_chosen(version: AdapterVersion, args: argparse.Namespace) -> str:
    """Which rule picked ``version`` and which run made it: a bare ``--task`` takes the newest
    version, so the summary says whose it is (a sweep writes many versions of each task)."""
    if version.task in args.task and version.ref not in args.refs:
        rule = (f"newest{f' {args.bits}-bit' if args.bits else ''} version of task {version.task}"
                + (" of that run" if args.run else " in the registry")
                + f", registered {version.created_at:%Y-%m-%d %H:%M:%S}")
    else:
        rule = "named on the command line"
    t = version.tags
    if RUN_TAG in t:
        rule += (f"; made by run {t[RUN_TAG]} (stream {t.get('stream')}, strategy {t.get('strategy')}, "
                 f"seed {t.get('seed')}, experience {t.get('experience')})")
    return rule
