"""Artifact hashing: how a file or directory is addressed (no store, no writes).

An artifact's hash is :func:`tree_sha256` over the sorted ``(relative path, file sha256)``
pairs of its files (:func:`hash_artifact`), so a single file's artifact hash covers its name as
well as its bytes. :func:`_list_files` decides which files make up an artifact (every file
under a directory, or the ``files=`` it lists) and rejects symlinks, ``..`` and repeats.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from registry.errors import InvalidValue, NotFound

_CHUNK = 1 << 20


def tree_sha256(entries: Iterable[tuple[str, str]]) -> str:
    """Hash a set of ``(relative posix path, file sha256)`` pairs, order-independent.

    Args:
        entries: one pair per file; paths relative to the artifact root, ``/``-separated.

    Returns:
        Hex sha256 over the pairs sorted by path, each encoded as ``path NUL sha LF``.

    >>> tree_sha256([("b", "00"), ("a", "11")]) == tree_sha256([("a", "11"), ("b", "00")])
    True
    """
    h = hashlib.sha256()
    for rel, digest in sorted(entries):
        h.update(rel.encode("utf-8") + b"\0" + digest.encode("ascii") + b"\n")
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """Hex sha256 of one file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _list_files(src: Path, files: Sequence[str] | None = None) -> list[tuple[str, Path]]:
    """(relative posix path, absolute path) of every file the artifact consists of.

    Args:
        src: a single file or a directory.
        files: when given, exactly these relative names inside the directory ``src`` make up
            the artifact; nothing else in it is read (so an interrupted atomic write's
            ``.*.tmp`` leftover can never slip in). ``None``: every regular file under ``src``.

    Raises:
        InvalidValue: on symlinks (their target is outside the artifact's control), an empty
            directory (nothing to store) or a bad ``files`` entry.
        NotFound: ``src`` or a listed file does not exist.
    """
    if src.is_symlink():
        raise InvalidValue(
            f"artifact path {str(src)!r} is a symlink; pass the real file or directory"
        )
    if files is not None:
        return _listed_files(src, files)
    if src.is_file():
        return [(src.name, src)]
    if not src.is_dir():
        raise NotFound(f"artifact path {str(src)!r} does not exist")
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(src):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                raise InvalidValue(
                    f"artifact {str(src)!r} contains a symlink {str(p)!r}; "
                    "copy its target in instead"
                )
        for name in filenames:
            p = Path(dirpath) / name
            found.append((PurePosixPath(p.relative_to(src)).as_posix(), p))
    if not found:
        raise InvalidValue(f"artifact directory {str(src)!r} holds no files")
    return sorted(found)


def _listed_files(src: Path, files: Sequence[str]) -> list[tuple[str, Path]]:
    """Check an explicit ``files=`` list against the directory ``src`` (see :func:`_list_files`)."""
    if isinstance(files, (str, bytes)):
        raise InvalidValue(
            f"files={files!r} is a single string; pass a list of file names, e.g. [{files!r}]"
        )
    if not src.is_dir():
        if src.exists():
            raise InvalidValue(
                f"files= needs a directory but artifact path {str(src)!r} is a file; "
                "pass its folder as the artifact path"
            )
        raise NotFound(f"artifact path {str(src)!r} does not exist")
    listed: dict[str, Path] = {}
    for entry in files:
        rel = _checked_entry(src, entry)
        if rel in listed:
            raise InvalidValue(f"files= lists {entry!r} twice (as {rel!r}); list each file once")
        listed[rel] = src / rel
    if not listed:
        raise InvalidValue(f"files= is empty for artifact {str(src)!r}; list at least one file")
    return sorted(listed.items())


def _checked_entry(src: Path, entry: object) -> str:
    """Normalised relative posix name of one ``files=`` entry, or a one-line error naming it.

    Every component is checked for symlinks, not just the file: a symlinked subdirectory would
    otherwise let ``sub/x`` read from outside the artifact.
    """
    if not isinstance(entry, str) or not entry.strip():
        raise InvalidValue(f"files= entry {entry!r} is not a file name; pass relative names")
    rel = PurePosixPath(entry)
    if rel.is_absolute() or ".." in rel.parts or rel.parts in ((), (".",)):
        raise InvalidValue(
            f"files= entry {entry!r} is not a relative name inside {str(src)!r}; "
            "drop leading '/' and any '..'"
        )
    p = src
    for part in rel.parts:
        p = p / part
        if p.is_symlink():
            raise InvalidValue(
                f"files= entry {entry!r} is or goes through a symlink ({str(p)!r}); "
                "copy its target in instead"
            )
    if not p.exists():
        raise NotFound(f"files= entry {entry!r} does not exist in {str(src)!r}")
    if not p.is_file():
        raise InvalidValue(
            f"files= entry {entry!r} in {str(src)!r} is not a regular file; list the files in it"
        )
    return rel.as_posix()


def hash_artifact(
    path: str | os.PathLike[str], files: Sequence[str] | None = None
) -> tuple[str, int]:
    """Hash a file or directory the way the store addresses it.

    Args:
        path: a single file or a directory of files.
        files: only these relative names inside the directory ``path`` (as passed to
            :meth:`ArtifactStore.staged`); ``None`` for every file under it.

    Returns:
        ``(sha256, total size in bytes)``.

    Raises:
        NotFound: when ``path`` or a listed file does not exist.
        InvalidValue: on symlinks, an empty directory or a bad ``files`` entry.
    """
    listed = _list_files(Path(path), files)
    entries = [(rel, file_sha256(p)) for rel, p in listed]
    return tree_sha256(entries), sum(p.stat().st_size for _, p in listed)
