"""Per-file hash manifests beside stored artifacts: ``objects/<sha[:2]>/<sha>.manifest.json``.

The artifact hash (:func:`registry.artifacts.tree_sha256`) covers ``(relative path, file
sha256)`` pairs, so once the files change it only says *that* something changed. The manifest
keeps the pairs the hash was built from, so ``verify`` can name the file that is missing, extra
or different. It lives *beside* the object directory, not in it, because a file inside would
change the tree hash. Objects published before manifests existed have none; ``verify`` then
falls back to "tree hash differs". A manifest whose own pairs do not hash to the object's sha
(tampered or truncated) is ignored the same way: it cannot be trusted to name the culprit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from registry.artifacts import file_sha256, tree_sha256

FORMAT = 1
SUFFIX = ".manifest.json"


def manifest_path(object_dir: Path) -> Path:
    """Where the manifest of the object directory ``objects/ab/<sha>`` lives."""
    return object_dir.with_name(object_dir.name + SUFFIX)


def encode(sha256: str, entries: Iterable[tuple[str, str]]) -> bytes:
    """The manifest's bytes for an object (the same for every writer of the same content, so
    concurrent writers of one object write identical manifests)."""
    body = {"format": FORMAT, "sha256": sha256, "files": dict(sorted(entries))}
    return json.dumps(body, indent=1, sort_keys=True).encode("utf-8")


def decode(data: bytes, sha256: str) -> dict[str, str] | None:
    """The trusted ``{relative path: file sha256}`` in a manifest's bytes, or ``None`` when they
    are unusable (not JSON, wrong shape, or its pairs do not hash to ``sha256``)."""
    try:
        files = json.loads(data.decode("utf-8"))["files"]
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        ):
            return None
    except (ValueError, KeyError, TypeError):
        return None
    return files if tree_sha256(files.items()) == sha256 else None


def write(path: Path, sha256: str, entries: Iterable[tuple[str, str]], scratch: Path) -> None:
    """Write a manifest atomically: into ``scratch`` (same filesystem), fsync, then rename.

    A reader therefore sees no manifest or a complete one, never a half-written JSON file.
    """
    with open(scratch, "wb") as f:
        f.write(encode(sha256, entries))
        f.flush()
        os.fsync(f.fileno())
    os.replace(scratch, path)


def read(path: Path, sha256: str) -> dict[str, str] | None:
    """The trusted ``{relative path: file sha256}`` of an object, or ``None`` when there is no
    usable manifest (missing, unreadable, or its pairs do not hash to ``sha256``)."""
    try:
        return decode(path.read_bytes(), sha256)
    except OSError:
        return None


def current_files(object_dir: Path) -> dict[str, str]:
    """``{relative posix path: sha256}`` of the regular files under ``object_dir`` now.

    Symlinks are listed with the hash ``"symlink"`` rather than followed: a planted link must
    show up as a difference, never make us read outside the store.
    """
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(object_dir):
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            p = Path(dirpath) / name
            rel = p.relative_to(object_dir).as_posix()
            found[rel] = "symlink" if p.is_symlink() else file_sha256(p)
    return found


def file_problems(object_dir: Path, sha256: str) -> list[str]:
    """What differs between a stored object and its manifest, one phrase per file.

    Returns:
        e.g. ``["file 'w.bin' differs", "file 'cfg.json' is missing", "extra file 'x'"]``;
        ``["tree hash differs (no usable per-file manifest ...)"]`` when there is no manifest;
        ``[]`` when the files match the manifest.
    """
    return compare(read(manifest_path(object_dir), sha256), current_files(object_dir))


def compare(expected: dict[str, str] | None, now: dict[str, str]) -> list[str]:
    """What differs between a manifest's files (``None``: no usable manifest) and the files an
    object holds now (``{relative path: sha256}``), one phrase per file (see
    :func:`file_problems`); the one comparison both the folder and the object-store root use."""
    if expected is None:
        return ["tree hash differs (no usable per-file manifest, so the changed file is unknown)"]
    problems = [f"file {rel!r} is missing" for rel in sorted(expected.keys() - now.keys())]
    problems += [f"extra file {rel!r}" for rel in sorted(now.keys() - expected.keys())]
    problems += [
        f"file {rel!r} differs"
        for rel in sorted(expected.keys() & now.keys())
        if expected[rel] != now[rel]
    ]
    return problems
