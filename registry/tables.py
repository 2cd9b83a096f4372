"""Plain-text tables and JSON conversion for the CLI (pure functions)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces, with a dashed rule under the header.

    >>> print(format_table(["A", "BB"], [[1, "x"], [22, None]]))
    A   BB
    --  --
    1   x
    22  -
    """
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def human_size(n: int) -> str:
    """Bytes as a short human-readable string.

    >>> human_size(512), human_size(2048), human_size(5 * 1024**3)
    ('512 B', '2.0 KiB', '5.0 GiB')
    """
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_metrics(metrics: dict[str, float], limit: int = 4) -> str:
    """``name=value`` pairs (4 significant digits), at most ``limit`` then ``...``.

    >>> format_metrics({"acc": 0.61234, "bwt": -0.02})
    'acc=0.6123 bwt=-0.02'
    """
    items = [f"{k}={v:.4g}" for k, v in sorted(metrics.items())]
    return " ".join(items[:limit] + (["..."] if len(items) > limit else []))


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, tuples and datetimes turned into JSON-ready dicts, lists and ISO strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, datetime):
        return obj.isoformat()
    return obj
