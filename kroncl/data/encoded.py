"""Tokenised splits, cached on disk with ``datasets``' own Arrow cache.

A split is tokenised once by ``model.encode`` through ``datasets.Dataset.map`` with an explicit
``cache_file_name``; the name hashes everything that changes the result (task, split, the
model's :meth:`encoding_fingerprint` -- tokenizer, max length, prompt -- and the examples
themselves), so a second run with the same inputs reads the Arrow file instead of tokenising,
and any change writes a new file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import datasets
from torch.utils.data import Dataset as TorchDataset

from kroncl.data.example import MCExample

__all__ = ["Encoder", "EncodedSplit", "encode_split", "examples_fingerprint", "default_cache_dir", "ENCODING_CACHE_VERSION"]

# Bump when the layout written here changes, so old cache files are not read.
ENCODING_CACHE_VERSION = 1


class Encoder(Protocol):
    """What this module needs from a model (``kroncl.models.MultipleChoiceModel`` provides it)."""

    def encode(self, example: MCExample) -> dict[str, Any]: ...

    def encoding_fingerprint(self) -> str: ...


def default_cache_dir() -> Path:
    """``<HF datasets cache>/kroncl_tokenized`` (``HF_DATASETS_CACHE`` moves it)."""
    return Path(datasets.config.HF_DATASETS_CACHE) / "kroncl_tokenized"


def examples_fingerprint(examples: Sequence[MCExample]) -> str:
    """sha256 of the examples' JSON rows, in order."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps(ex.to_dict(), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def _cache_key(task: str, split: str, model: Encoder, examples: Sequence[MCExample]) -> str:
    blob = json.dumps(
        {
            "v": ENCODING_CACHE_VERSION,
            "task": task,
            "split": split,
            "model": model.encoding_fingerprint(),
            "data": examples_fingerprint(examples),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class EncodedSplit(TorchDataset):
    """A tokenised split whose items are fresh dicts: the model's features, ``labels`` and
    ``task_labels`` (the experience index, not stored in the cache so a task's cache file is
    shared by every stream position).

    Attributes:
        data: the Arrow-backed ``datasets.Dataset`` of features and ``labels``.
        task_label: the value put in every item's ``task_labels``.
    """

    def __init__(self, data: datasets.Dataset | None, task_label: int) -> None:
        self.data = data
        self.task_label = int(task_label)

    def __len__(self) -> int:
        return 0 if self.data is None else len(self.data)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if self.data is None:
            raise IndexError(idx)
        item = self.data[int(idx)]  # a new dict per call: avalanche may add keys to it
        item["task_labels"] = self.task_label
        return item

    @property
    def labels(self) -> list[int]:
        return [] if self.data is None else [int(v) for v in self.data["labels"]]


def encode_split(
    examples: Sequence[MCExample],
    model: Encoder,
    task: str,
    split: str,
    cache_dir: str | Path | None = None,
) -> datasets.Dataset | None:
    """Tokenise ``examples`` with ``model.encode``, or load the cached result.

    Args:
        examples: the split's rows.
        model: provides ``encode`` (one example -> dict of features incl. ``labels``) and
            ``encoding_fingerprint``.
        task, split: names for the cache key and the progress bar.
        cache_dir: folder of the ``.arrow`` cache files; default :func:`default_cache_dir`.

    Returns:
        A ``datasets.Dataset`` with exactly the keys ``encode`` returns, or None when
        ``examples`` is empty.
    """
    if not examples:
        return None
    key = _cache_key(task, split, model, examples)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    raw = datasets.Dataset.from_list([ex.to_dict() for ex in examples])

    def _encode(row: dict[str, Any]) -> dict[str, Any]:
        return model.encode(MCExample(id=row["id"], question=row["question"], choices=row["choices"], label=row["label"]))

    return raw.map(
        _encode,
        remove_columns=raw.column_names,
        cache_file_name=str(folder / f"{task}-{split}-{key}.arrow"),
        load_from_cache_file=True,
        new_fingerprint=key,  # skips datasets' hashing of the closure (it would pickle the model)
        desc=f"tokenising {task}/{split}",
    )
