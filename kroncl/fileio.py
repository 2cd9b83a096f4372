"""Atomic file writes: the one place kroncl turns "write a file" into "replace it whole".

A file is written under a temporary name in its target folder, flushed to disk and moved into
place with ``os.replace``, so a reader (or a run killed mid-write) sees the old file or the new
one, never a partial one. The temporary file is removed if writing fails.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Replace ``path`` with what ``write(tmp_path)`` writes to a temporary path beside it.

    Args:
        path: the file to create or replace (its folder is created if needed).
        write: called with the temporary file's path; must write the whole file there.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 text file (newlines written as given)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    return atomic_write(path, write)
