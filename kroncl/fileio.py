"""Atomic file writes: the one place kroncl turns "write a file" into "replace it whole".

A file is written under a temporary name in its target folder, flushed to disk and moved into
place with ``os.replace``, so a reader (or a run killed mid-write) sees the old file or the new
one, never a partial one. The temporary file is removed if writing fails; one left by a process
killed mid-write is named for that process (``.<name>.<pid>.<random>.tmp``), so
:func:`remove_stale_temp_files` can tell it from a live writer's and sweep it.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from kroncl.faults import fault_point

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: mkstemp makes 0600 files, the replaced file gets the usual mode
_TEMP_NAME = re.compile(r"^\..+\.(?P<pid>\d+)\.[^.]+\.tmp$")


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        fault_point("during_atomic_write", file=path.name)
        os.replace(tmp, path)
        fsync_dir(path.parent)
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


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it survives a power cut, not only a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temp_files(root: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` left under ``root`` in dead processes.

    Only names of the form ``.<name>.<pid>.<random>.tmp`` whose ``pid`` is no longer running
    are removed: a live writer's temporary file is never touched.

    Returns:
        The removed paths.
    """
    removed = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            match = _TEMP_NAME.match(name)
            if match and not pid_alive(int(match["pid"])):
                path = Path(dirpath) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
