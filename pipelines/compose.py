"""Compose a ready model from registered adapters: ``python -m pipelines.compose``.

Reads top to bottom; the model-side parts live in :mod:`kroncl.compose`:

    registry -> choose versions (REF / --task, --bits) -> one base model for all of them
    -> [--weights: task arithmetic -> register the sum (merged_from every source) -> compose it]
    -> fetch + verify artifacts -> rebuild the base model from the stored config
    -> attach adapters -> check the base weights are the registered ones -> [--merge]
    -> [--eval on test sets] -> [--save] -> summary

The base model is rebuilt from ``config.run.model`` of the versions (what ``kroncl.run``
stores) unless ``--model`` / ``--model-opt`` say otherwise, and its content hash must equal
the registered base-model revision: an encoder's classifier head is newly initialised by
``model.seed``, so the same checkpoint with another seed is another base model, and adapters
trained on one would silently score garbage on the other.

Examples::

    python -m pipelines.compose --registry-url sqlite:///runs/registry.db tiny-toy_larger-kron:1 --merge
    python -m pipelines.compose --task toy_larger --task toy_smaller --bits 32 --eval
    python -m pipelines.compose A:1 B:1 --weights 0.5,0.5 --name toy-sum --eval
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kroncl.adapters import LoadedAdapter, adapter_state_dict, count_adapter_parameters, save_adapter
from kroncl.compose import (
    BaseModelCache,
    ComposedModel,
    ComposeError,
    accuracy,
    attach_adapters,
    bake_merged,
    weighted_sum,
)
from kroncl.errors import KronclError
from kroncl.models import ModelConfig, build_model
from kroncl.quant import load_adapter_dequantized
from pipelines.registration import base_model_identity, registry_name
from registry import MERGED_FROM, AdapterVersion, HashMismatch, RegistryError, RegistryStore, parse_ref
from registry.db import default_artifact_root, default_url
from registry.names import RUN_TAG

EXIT_ERROR = 2
COMPOSITION_KIND = "task_arithmetic"


@dataclass
class Composition:
    """What :func:`compose` built, and where it came from.

    Attributes:
        composed: the model with its adapter sets (label ``i`` = ``versions[i]``'s task).
        versions: the registry versions, in label order.
        loaded: task -> the adapter as read from its verified artifact.
        model_config: the base model's config as rebuilt.
        base_model: registry base-model name; ``revision``: its registered content hash (None
            when unpinned); ``verified``: the rebuilt weights hash to ``revision``.
        timings: seconds per step (lookup, fetch, read, base_model, attach, verify_base, merge).
        base_cached: the base model came from a :class:`BaseModelCache`.
    """

    composed: ComposedModel
    versions: list[AdapterVersion]
    loaded: dict[str, LoadedAdapter]
    model_config: ModelConfig
    base_model: str
    revision: str | None
    verified: bool
    timings: dict[str, float] = field(default_factory=dict)
    base_cached: bool = False


# ------------------------------------------------------------------------------------------------
# Registry side: which versions, which base model
# ------------------------------------------------------------------------------------------------


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
        out.append(v)
    out += [newest_for_task(store, t, bits=bits, base_model=base_model, run=run) for t in tasks]
    refs_seen = [v.ref for v in out]
    dupes = sorted({r for r in refs_seen if refs_seen.count(r) > 1})
    if dupes:
        raise ComposeError(f"version(s) {dupes} chosen more than once; name each version once")
    return out


def check_one_base(versions: Sequence[AdapterVersion]) -> str:
    """The one registry base model of ``versions``.

    Raises:
        ComposeError: the versions were trained on different base models (each listed).
    """
    bases = {v.base_model for v in versions}
    if len(bases) != 1:
        listed = ", ".join(f"{v.ref} on {v.base_model!r}" for v in versions)
        raise ComposeError(f"these versions were trained on different base models ({listed}); "
                           "adapters compose only on the base model they were trained on")
    return bases.pop()


def model_node_for(
    versions: Sequence[AdapterVersion], model: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``model`` config node that rebuilds the versions' base model.

    Args:
        versions: versions whose ``config.run.model`` (written by ``kroncl.run``) is used.
        model: a model name (preset / tiny / custom) replacing the stored node.
        overrides: ``model.<key>`` values applied last (``--model-opt seed=1``).

    Raises:
        ComposeError: no node stored and no ``model`` given, or the versions store different
            nodes (the differing keys are listed).
    """
    if model is not None:
        node: dict[str, Any] = {"name": model}
    else:
        nodes = {v.ref: (v.config.get("run") or {}).get("model") for v in versions}
        missing = [r for r, n in nodes.items() if not n]
        if missing:
            raise ComposeError(f"version(s) {missing} store no base-model config (config.run.model); "
                               "name the base model with --model NAME (and --model-opt KEY=VALUE)")
        first_ref, node = next(iter(nodes.items()))
        for ref, other in nodes.items():
            diff = sorted(k for k in set(node) | set(other) if node.get(k) != other.get(k))
            if diff:
                raise ComposeError(
                    f"{ref} and {first_ref} were trained with different model configs (keys {diff}); "
                    "choose one with --model NAME / --model-opt KEY=VALUE"
                )
        node = dict(node)
    node.update(overrides or {})
    return node


def verify_base(
    model, store: RegistryStore, base_model: str, cache: BaseModelCache | None = None
) -> tuple[str | None, bool]:
    """Compare the attached model's base weights with the registered base-model revision.

    Must run after the adapters are attached (the registered hash is taken over the model
    with its adapter layers injected, as ``kroncl.run`` registers it) and before merging.

    Returns:
        ``(registered revision, verified)``; ``verified`` is False only when the registry
        pins no revision.

    Raises:
        ComposeError: the hashes differ (names both and what to change).
    """
    revision = store.get_base_model(base_model).revision
    if revision is None:
        return None, False
    key = ("identity", id(model), tuple(sorted(n for n, _ in model.backbone.named_modules())))
    if cache is not None and key in cache.memo:
        name, actual = cache.memo[key]
    else:
        name, actual = base_model_identity(model)
        if cache is not None:
            cache.memo[key] = (name, actual)
    if actual != revision:
        raise ComposeError(
            f"the rebuilt base model ({name}, weights hash {actual}) is not the registered base model "
            f"{base_model!r} (revision {revision}) the adapters were trained on. A different model.seed "
            "re-initialises the classifier head, another checkpoint has other weights: use the training "
            "run's model config (drop --model/--model-opt overrides, or set them to the run's values)"
        )
    return revision, True


# ------------------------------------------------------------------------------------------------
# Composing
# ------------------------------------------------------------------------------------------------


def compose(
    store: RegistryStore,
    versions: Sequence[AdapterVersion],
    *,
    merge: bool = False,
    model: str | None = None,
    model_opts: dict[str, Any] | None = None,
    cache: BaseModelCache | None = None,
) -> Composition:
    """Build a ready model from registry versions: one task (optionally merged) or several resident.

    Args:
        store: the registry.
        versions: chosen versions (:func:`select_versions`); label ``i`` answers for the
            ``i``-th version's task.
        merge: fold the single adapter into the base weights.
        model, model_opts: base-model config overrides (see :func:`model_node_for`).
        cache: reuse loaded base models across compositions.

    Raises:
        ComposeError: different base models, two versions of one task, adapters that do not
            fit together, ``merge`` with several versions, or base weights that are not the
            registered ones.
        HashMismatch: an artifact changed after registration.
        ModelConfigError, ModelLoadError, AdapterLoadError: see their sources.
    """
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[step] = timings.get(step, 0.0) + now - clock
        clock = now

    if not versions:
        raise ComposeError("nothing to compose: no versions chosen")
    if merge and len(versions) > 1:
        raise ComposeError(
            f"--merge folds one adapter into the base weights, but {len(versions)} versions were chosen; "
            "give --weights to combine them into one adapter first, or drop --merge to keep them resident"
        )
    base_model = check_one_base(versions)
    tasks = [v.task for v in versions]
    clash = sorted({t for t in tasks if tasks.count(t) > 1})
    if clash:
        raise ComposeError(f"several versions of task(s) {clash} chosen ({', '.join(v.ref for v in versions)}); "
                           "resident sets are routed by task, so choose one version per task")
    cfg = ModelConfig.from_mapping(model_node_for(versions, model, model_opts))
    lap("lookup")

    paths = [store.fetch_artifact(v.ref) for v in versions]  # re-hashes every file
    lap("fetch")
    loaded = {v.task: load_adapter_dequantized(p) for v, p in zip(versions, paths)}
    lap("read")

    if cache is not None:
        base, cached = cache.get(cfg)
    else:
        base, cached = build_model(cfg), False
    lap("base_model")
    composed = attach_adapters(base, loaded)
    lap("attach")
    revision, verified = verify_base(base, store, base_model, cache)
    lap("verify_base")
    if merge:
        composed.merge()
    lap("merge")
    return Composition(composed, list(versions), loaded, cfg, base_model, revision, verified, timings, cached)


def combine(
    store: RegistryStore,
    versions: Sequence[AdapterVersion],
    weights: Sequence[float],
    name: str,
    *,
    task: str | None = None,
    aliases: Sequence[str] = (),
    model: str | None = None,
    model_opts: dict[str, Any] | None = None,
) -> AdapterVersion:
    """Task arithmetic: register ``Σ_i weights[i] · ΔW_i`` as a new version of adapter ``name``.

    The sum is stored exactly as a LoRA adapter of concatenated factors
    (:func:`kroncl.compose.weighted_sum`); the version gets a ``merged_from`` edge to every
    source, the weights and sources in its config (``composition``) and tags, and the sources'
    base-model config so :func:`compose` rebuilds the base model from it.

    Args:
        task: registry task of the new adapter; default the sources' task when they share
            one, else their task names joined by '-'.

    Raises:
        ComposeError: see :func:`kroncl.compose.weighted_sum` and :func:`check_one_base`.
        Conflict: adapter ``name`` exists for another task or base model.
    """
    base_model = check_one_base(versions)
    node = model_node_for(versions, model, model_opts)
    loaded = [load_adapter_dequantized(store.fetch_artifact(v.ref)) for v in versions]
    tensors, cfg = weighted_sum(loaded, weights)
    source_tasks = list(dict.fromkeys(v.task for v in versions))
    task = task or registry_name("-".join(source_tasks))
    composition = {
        "kind": COMPOSITION_KIND,
        "representation": "lora_concat",
        "sources": [{"ref": v.ref, "task": v.task, "weight": float(w), "method": v.method, "bits": v.bits,
                     "sha256": v.sha256} for v, w in zip(versions, weights)],
    }
    store.register_task(task, description=f"{COMPOSITION_KIND} of {', '.join(source_tasks)}")
    store.register_adapter(name, task=task, base_model=base_model)
    with tempfile.TemporaryDirectory(prefix="kroncl-compose-") as tmp:
        folder = save_adapter(Path(tmp) / "adapter", tensors, cfg, base_model=base_model,
                              extra={"task": task, "composition": composition})
        return store.register_version(
            name, folder, method=cfg.method, bits=32, r=cfg.r, alpha=cfg.alpha,
            param_count=sum(t.numel() for t in tensors.values()),
            config={"adapter": cfg.to_dict(), "run": {"model": node}, "composition": composition},
            tags={"composition": COMPOSITION_KIND,
                  "weights": ",".join(f"{float(w):g}" for w in weights),
                  "sources": ",".join(v.ref for v in versions)},
            parents=[(v.ref, MERGED_FROM) for v in versions],
            aliases=list(aliases),
        )


# ------------------------------------------------------------------------------------------------
# Evaluation and saving
# ------------------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    task: str
    rows: int
    acc: float
    registry_acc: float | None
    """The source version's registered ``acc`` when the test split is the one it was measured on."""
    source: str | None


def evaluate(
    composition: Composition,
    tasks: Sequence[str] = (),
    *,
    data_dir: str | None = None,
    max_test: int | None = None,
    batch_size: int = 64,
    sources: Sequence[AdapterVersion] = (),
    progress: bool = False,
) -> list[EvalResult]:
    """Accuracy of the composed model on each task's test split.

    Each task's split is carved as the run that trained it carved it (``config.run.stream``
    seed, fractions, ``max_test``, ``data.dir`` of the version trained on it), unless
    ``data_dir`` / ``max_test`` override them.

    Args:
        tasks: tasks to score; default: the composed versions' tasks (or the source tasks of
            a task-arithmetic version, taken from ``sources``).
        sources: versions to take each task's split settings and reference accuracy from
            (default: the composed versions).

    Raises:
        ComposeError: a task is not composed while several sets are resident.
        DataError: a task cannot be loaded.
    """
    from kroncl.data import load_task

    sources = list(sources) or composition.versions
    by_task = {v.task: v for v in sources}
    tasks = list(tasks) or list(by_task)
    results = []
    for task in tasks:
        src = by_task.get(task)
        run = (src.config.get("run") or {}) if src else {}
        stream = run.get("stream") or {}
        kwargs = {k: stream[k] for k in ("validation_fraction", "test_fraction", "max_train", "max_validation",
                                          "max_test") if stream.get(k) is not None}
        if max_test is not None:
            kwargs["max_test"] = max_test
        folder = data_dir or (run.get("data") or {}).get("dir")
        splits = load_task(task, folder, seed=int(stream.get("seed", 0)), strict=bool(stream.get("strict", False)),
                           **kwargs)
        composed = composition.composed
        acc = accuracy(composed, splits.test, task if composed.multi else None, batch_size, progress)
        same_split = src is not None and max_test in (None, stream.get("max_test")) and data_dir in (None, folder)
        ref_acc = src.metrics.get("acc") if same_split else None
        results.append(EvalResult(task, len(splits.test), acc, ref_acc, src.ref if src else None))
    return results


def save_composition(composition: Composition, directory: str | Path) -> Path:
    """Write the composed model to ``directory`` with a ``compose.json`` manifest.

    Merged: the adapter layers are baked into plain linear layers and the Hugging Face model
    and tokenizer are saved under ``model/`` (load it with ``model=custom``, its
    ``model_config`` in the manifest; no adapter code needed). Not merged: each adapter set is
    saved under ``adapters/<set>/`` in the adapter file format. Baking is in place: do this last.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    composed = composition.composed
    manifest: dict[str, Any] = {
        "base_model": composition.base_model, "revision": composition.revision,
        "sources": [v.ref for v in composition.versions], **composed.describe(),
    }
    cfg = composition.model_config.resolved()
    if composed.merged:
        model = bake_merged(composed)
        model.backbone.save_pretrained(out / "model")
        model.tokenizer.save_pretrained(out / "model")
        manifest["model_config"] = {"name": "custom", "kind": cfg.kind, "name_or_path": str((out / "model").resolve()),
                                    "max_length": cfg.max_length, "dtype": cfg.dtype,
                                    "length_normalize": cfg.length_normalize, "prompt_template": cfg.prompt_template}
    else:
        for v in composition.versions:
            set_name = composed.sets[v.task]
            loaded = composition.loaded[v.task]
            save_adapter(out / "adapters" / set_name, adapter_state_dict(composed.model.backbone, set_name),
                         loaded.config, base_model=composition.base_model,
                         extra={"task": v.task, "source": v.ref})
        manifest["model_config"] = {k: v for k, v in vars(composition.model_config).items()}
    (out / "compose.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return out


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


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
    g.add_argument("--artifacts", default=None, metavar="DIR", help="artifact root (default: $KRONCL_ARTIFACT_ROOT, "
                   "else registry_artifacts/ beside the SQLite file)")
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
    g.add_argument("--data-dir", help="folder of <task>/{train,validation,test}.jsonl (default: the run's data.dir)")
    g.add_argument("--max-test", type=int, help="test rows per task (default: the run's stream.max_test)")
    g.add_argument("--batch-size", type=int, default=64, help="rows per forward when evaluating")
    g.add_argument("--save", metavar="DIR", help="write the composed model (merged: a plain HF model folder)")
    g.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


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
        lines.append(f"   eval {e['task']}: test {e['rows']} rows, acc={e['acc']:.4f}{ref}")
    if s["saved"]:
        lines.append(f"   saved to {s['saved']}")
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
        combined = None
        sources = versions
        if args.weights is not None:
            started = time.perf_counter()
            combined = combine(store, versions, args.weights, args.name, task=args.as_task, aliases=args.alias,
                               model=args.model, model_opts=model_opts)
            combine_s = time.perf_counter() - started
            versions = [store.get_version(combined.ref)]
        composition = compose(store, versions, merge=args.merge, model=args.model, model_opts=model_opts)
        composition.timings["lookup"] += select_s
        if combined is not None:
            composition.timings = {"combine": combine_s, **composition.timings}
        evals: list[EvalResult] = []
        if args.eval or args.eval_task:
            eval_tasks = args.eval_task or list(dict.fromkeys(v.task for v in sources))
            evals = evaluate(composition, eval_tasks, data_dir=args.data_dir, max_test=args.max_test,
                             batch_size=args.batch_size, sources=sources)
        summary = summary_dict(composition, evals, combined, None)
        if combined is None:  # the task-arithmetic line already says where a combined set came from
            for entry, v in zip(summary["sets"], composition.versions):
                entry["chosen"] = why_chosen(v, args)
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


if __name__ == "__main__":
    sys.exit(main())
