"""Load one task into :class:`TaskSplits`, from a local folder, a generator or the hub.

Source order for a task name:

1. a path (``/data/mytask``, ``./mytask``): that folder of JSONL files, task name = folder name;
2. ``<data_dir>/<name>/`` when it exists: its ``{train,validation,test}.jsonl`` (this overrides
   the catalogue, so an offline copy of a hub task needs no code);
3. a generated catalogue task (``toy_larger``, ``toy_smaller``);
4. a hub catalogue task, through ``datasets.load_dataset`` and the task's row mapper.

Then, in this order: invalid rows are dropped and counted (:func:`drop_invalid`), missing splits
are carved (:func:`resolve_splits`), and each split is subsampled to its limit, all
deterministically by ``seed``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from kroncl.data.catalogue import TASKS, TaskSpec, task_names
from kroncl.data.errors import DataError, TaskUnavailableError
from kroncl.data.example import SPLITS, MCExample, TaskSplits, drop_invalid
from kroncl.data.hub import hub_offline, hub_unreachable_reason
from kroncl.data.jsonl import local_split_files, read_jsonl
from kroncl.data.splits import TEST_FRACTION, VALIDATION_FRACTION, derive_seed, resolve_splits, subsample

log = logging.getLogger("kroncl.data")

__all__ = ["TaskSource", "resolve_source", "load_task", "JSONL_HINT"]

JSONL_HINT = '{"id": ..., "question": ..., "choices": [...], "label": <0-based index>}'


@dataclass(frozen=True)
class TaskSource:
    """Where a task will be read from.

    Attributes:
        name: task name (for a path, the folder's name).
        kind: ``"local"``, ``"generated"`` or ``"hub"``.
        folder: the JSONL folder (kind ``local``).
        spec: the catalogue entry (kinds ``generated`` and ``hub``).
    """

    name: str
    kind: str
    folder: Path | None = None
    spec: TaskSpec | None = None

    def describe(self) -> str:
        if self.kind == "local":
            return str(self.folder)
        if self.kind == "generated":
            return f"generated:{self.name}"
        assert self.spec is not None
        return f"hub:{self.spec.hub_label}"


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.startswith((".", "~"))


def resolve_source(name: str, data_dir: str | Path | None = None) -> TaskSource:
    """Decide where task ``name`` comes from, without reading it.

    For a hub task this probes the hub (one short request, remembered) so an unreachable hub is
    reported here, before any download is tried.

    Raises:
        TaskUnavailableError: a hub task with no local folder while the hub is unreachable.
        DataError: unknown task name, missing ``data_dir``, or a path that is not a task folder.
    """
    if _looks_like_path(name):
        folder = Path(name).expanduser()
        if not folder.is_dir() or not local_split_files(folder):
            raise DataError(
                f"task {name!r} is a path but not a folder with train.jsonl, validation.jsonl or test.jsonl; "
                f"each line: {JSONL_HINT}"
            )
        return TaskSource(name=folder.name, kind="local", folder=folder)

    root = Path(data_dir).expanduser() if data_dir else None
    if root is not None and not root.is_dir():
        raise DataError(f"data.dir={str(data_dir)!r} is not a folder; point it at a folder holding <task>/train.jsonl, ...")
    if root is not None and (root / name).is_dir():
        if not local_split_files(root / name):
            raise DataError(
                f"task folder {root / name} has no train.jsonl, validation.jsonl or test.jsonl; each line: {JSONL_HINT}"
            )
        return TaskSource(name=name, kind="local", folder=root / name)

    spec = TASKS.get(name)
    if spec is None:
        where = f"no folder {root / name}" if root is not None else "data.dir is not set"
        raise DataError(
            f"unknown task {name!r} ({where}). Known tasks: {', '.join(task_names())}. For your own task, "
            f"create <data.dir>/{name}/train.jsonl (and test.jsonl, validation.jsonl) with one {JSONL_HINT} per line."
        )
    if spec.generator is not None:
        return TaskSource(name=name, kind="generated", spec=spec)

    if not hub_offline():
        reason = hub_unreachable_reason()
        if reason is not None:
            raise TaskUnavailableError(name, reason, _unavailable_message(name, spec, root, reason))
    elif not _in_local_hf_cache(spec.hub_path):
        reason = f"HF_HUB_OFFLINE is set and {spec.hub_path} is not in the local Hugging Face cache"
        raise TaskUnavailableError(name, reason, _unavailable_message(name, spec, root, reason))
    return TaskSource(name=name, kind="hub", spec=spec)


def _in_local_hf_cache(hub_path: str) -> bool:
    """Whether hub or datasets caches hold anything of ``hub_path`` (offline mode can only use those)."""
    import datasets.config
    import huggingface_hub.constants

    hub_dir = Path(huggingface_hub.constants.HF_HUB_CACHE) / f"datasets--{hub_path.replace('/', '--')}"
    datasets_dir = Path(datasets.config.HF_DATASETS_CACHE) / hub_path.replace("/", "___")
    return hub_dir.is_dir() or datasets_dir.is_dir()


def _unavailable_message(name: str, spec: TaskSpec, root: Path | None, reason: str) -> str:
    local = f"no folder {root / name}" if root is not None else "data.dir is not set"
    return (
        f"task {name!r} cannot be loaded: {local}, and the Hugging Face Hub dataset {spec.hub_label} cannot be "
        f"reached ({reason}). Fix one of: connect to the internet; or set data.dir=/path/to/folder containing "
        f"{name}/train.jsonl (and validation.jsonl, test.jsonl; one {JSONL_HINT} per line); or, if the dataset "
        "is already in your Hugging Face cache, set HF_HUB_OFFLINE=1."
    )


def _read_source(source: TaskSource, seed: int) -> dict[str, list[MCExample]]:
    if source.kind == "local":
        assert source.folder is not None
        return {split: read_jsonl(path, source.name, split) for split, path in local_split_files(source.folder).items()}
    assert source.spec is not None
    if source.kind == "generated":
        assert source.spec.generator is not None
        return source.spec.generator(seed)
    return {split: _read_hub_split(source.spec, split, hub_split) for split, hub_split in source.spec.hub_splits.items()}


def _read_hub_split(spec: TaskSpec, split: str, hub_split: str) -> list[MCExample]:
    import datasets

    try:
        rows = datasets.load_dataset(spec.hub_path, name=spec.hub_config, split=hub_split, revision=spec.hub_revision)
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes one actionable error
        raise DataError(
            f"task {spec.name!r}: datasets.load_dataset({spec.hub_path!r}, name={spec.hub_config!r}, "
            f"split={hub_split!r}) failed ({type(exc).__name__}: {exc}). Set data.dir to a folder containing "
            f"{spec.name}/train.jsonl (and validation.jsonl, test.jsonl) to load it locally instead."
            + (" (HF_HUB_OFFLINE is set, so only the local Hugging Face cache was searched.)" if hub_offline() else "")
        ) from exc
    assert spec.row_mapper is not None
    out = []
    for i, row in enumerate(rows):
        row_id = str(row["id"]) if row.get("id") not in (None, "") else f"{spec.name}-{split}-{i:05d}"
        out.append(spec.row_mapper(row, row_id))
    return out


def load_task(
    name: str,
    data_dir: str | Path | None = None,
    seed: int = 0,
    strict: bool = False,
    *,
    validation_fraction: float = VALIDATION_FRACTION,
    test_fraction: float = TEST_FRACTION,
    max_train: int | None = None,
    max_validation: int | None = None,
    max_test: int | None = None,
    source: TaskSource | None = None,
) -> TaskSplits:
    """Load, clean, split and subsample one task.

    Args:
        name: catalogue name (``arc_easy``), folder name under ``data_dir``, or a folder path.
        data_dir: folder of ``<task>/{train,validation,test}.jsonl``; a task found there is read
            from there, anything else from the hub or its generator.
        seed: seeds carving and subsampling (and toy generation).
        strict: invalid rows raise instead of being dropped and counted.
        validation_fraction: share of train held out when the source has no validation split.
        test_fraction: share held out as test when the source has no test split.
        max_train, max_validation, max_test: per-split limits (None = all), sampled by seed.
        source: an already resolved source (from :func:`resolve_source`), to skip resolving.

    Returns:
        The task's three splits.

    Raises:
        TaskUnavailableError: no local copy and the hub is unreachable (fails within the hub
            timeout, ``KRONCL_HUB_TIMEOUT``, default 5 s).
        DataError: unknown task, malformed file, invalid rows under ``strict``, or a hub load
            failure; each says what to change.
    """
    src = source if source is not None else resolve_source(name, data_dir)
    raw = _read_source(src, seed)
    dropped: dict[str, list[str]] = {}
    cleaned: dict[str, list[MCExample]] = {}
    for split in SPLITS:
        if split in raw:
            cleaned[split], dropped[split] = drop_invalid(raw[split], f"{src.name}/{split}", strict=strict)
    train, val, test, notes = resolve_splits(
        cleaned, src.name, seed, validation_fraction=validation_fraction, test_fraction=test_fraction
    )
    limits = {"train": max_train, "validation": max_validation, "test": max_test}
    parts = {"train": train, "validation": val, "test": test}
    for split, limit in limits.items():
        before = len(parts[split])
        parts[split] = subsample(parts[split], limit, derive_seed(seed, src.name, split, "subsample"))
        if len(parts[split]) < before:
            notes.append(f"{src.name}: subsampled {split} to {len(parts[split])} of {before} rows (seed {seed})")
            log.info(notes[-1])
    if not parts["train"] or not parts["test"]:
        raise DataError(
            f"task {src.name!r} from {src.describe()} has {len(parts['train'])} train and {len(parts['test'])} test "
            "rows after cleaning and splitting; it needs at least one of each"
        )
    return TaskSplits(
        name=src.name, train=parts["train"], validation=parts["validation"], test=parts["test"],
        source=src.describe(), dropped=dropped, notes=notes,
    )
