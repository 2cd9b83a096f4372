"""Read and write task splits in the JSON Lines schema of ``../shared/data``.

One object per line: ``{"id": str, "question": str, "choices": [str, ...], "label": int}``.
This is also the "bring your own task" format: a folder ``<data_dir>/<task>/`` holding any of
``train.jsonl``, ``validation.jsonl``, ``test.jsonl`` is a task, no code needed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from kroncl.data.errors import DataError
from kroncl.data.example import SPLITS, MCExample

__all__ = ["read_jsonl", "write_jsonl", "local_split_files"]


def local_split_files(folder: Path) -> dict[str, Path]:
    """The split files present in a task folder: split name -> path (only existing ones)."""
    return {s: folder / f"{s}.jsonl" for s in SPLITS if (folder / f"{s}.jsonl").is_file()}


def read_jsonl(path: Path, task: str, split: str) -> list[MCExample]:
    """Parse one split file.

    A row with a missing ``id`` gets the positional id ``<task>-<split>-<row:05d>``. Rows that
    parse but cannot be scored (label out of range, ...) are returned as they are and dropped
    later by :func:`kroncl.data.example.drop_invalid`.

    Raises:
        DataError: a line is not UTF-8 or not JSON, or lacks ``question``/``choices``/``label``, or has the
            wrong types; names the file and line.
    """
    out: list[MCExample] = []
    # Bytes, decoded line by line: a text-mode read fails with a UnicodeDecodeError that names
    # neither the file nor the line.
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            where = f"{path}:{lineno}"
            line = _decode(raw, where, first=lineno == 1)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg}); each line must be one JSON object") from exc
            out.append(_row_to_example(row, where, default_id=f"{task}-{split}-{len(out):05d}"))
    return out


def _decode(raw: bytes, where: str, first: bool) -> str:
    """One line as UTF-8 text (a leading byte-order mark is dropped).

    Raises:
        DataError: the line is not UTF-8; names the file, the line and the byte.
    """
    try:
        return raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{where}: not UTF-8 text (byte {raw[exc.start:exc.start + 1]!r} at column {exc.start + 1}); "
            "save the file as UTF-8, e.g. iconv -f latin1 -t utf-8 in.jsonl > out.jsonl"
        ) from exc


def _row_to_example(row: object, where: str, default_id: str) -> MCExample:
    expected = 'expected {"id": str, "question": str, "choices": [str, ...], "label": int}'
    if not isinstance(row, dict):
        raise DataError(f"{where}: a JSON {type(row).__name__}, {expected}")
    missing = [k for k in ("question", "choices", "label") if k not in row]
    if missing:
        raise DataError(f"{where}: missing key(s) {missing}; {expected}")
    choices, label = row["choices"], row["label"]
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise DataError(f"{where}: 'choices' must be a list of strings, got {choices!r}")
    if isinstance(label, bool) or not isinstance(label, int):
        raise DataError(f"{where}: 'label' must be an integer index into 'choices', got {label!r}")
    if not isinstance(row["question"], str):
        raise DataError(f"{where}: 'question' must be a string, got {row['question']!r}")
    return MCExample(id=str(row.get("id", default_id)), question=row["question"], choices=choices, label=label)


def write_jsonl(path: Path, examples: Iterable[MCExample]) -> Path:
    """Write examples in the schema :func:`read_jsonl` reads (creates parent folders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n")
    return path
