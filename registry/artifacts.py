"""Content-addressed artifact store: files on disk, addressed by sha256.

Layout under ``root``::

    objects/<sha[:2]>/<sha>/...     one directory per artifact, holding its files
    tmp/<random>/                   staging area (same filesystem, so publishing is a rename)
    locks/<sha[:2]>.lock            advisory locks serialising publish/remove of a hash

An artifact is a directory of files (e.g. ``adapter.safetensors`` + ``adapter_config.json``) or a
single file, which is stored as a directory holding that one file. Its hash is
:func:`tree_sha256` over the sorted ``(relative path, file sha256)`` pairs, so a single file's
artifact hash covers its name as well as its bytes.

Publishing is atomic: files are copied into ``tmp/`` (hashing the bytes as they are written, so
the hash describes exactly what was stored), fsynced, then renamed into ``objects/`` with
``os.replace``. A reader therefore sees either no artifact or a complete one. Nothing here ever
unpickles anything; artifacts are opaque bytes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from registry.errors import HashMismatch, InvalidValue, NotFound

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


def _list_files(src: Path) -> list[tuple[str, Path]]:
    """(relative posix path, absolute path) of every regular file under ``src``.

    Raises:
        InvalidValue: on symlinks (their target is outside the artifact's control) or an empty
            directory (nothing to store).
    """
    if src.is_symlink():
        raise InvalidValue(
            f"artifact path {str(src)!r} is a symlink; pass the real file or directory"
        )
    if src.is_file():
        return [(src.name, src)]
    if not src.is_dir():
        raise NotFound(f"artifact path {str(src)!r} does not exist")
    files: list[tuple[str, Path]] = []
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
            files.append((PurePosixPath(p.relative_to(src)).as_posix(), p))
    if not files:
        raise InvalidValue(f"artifact directory {str(src)!r} holds no files")
    return sorted(files)


def hash_artifact(path: str | os.PathLike[str]) -> tuple[str, int]:
    """Hash a file or directory the way the store addresses it.

    Args:
        path: a single file or a directory of files.

    Returns:
        ``(sha256, total size in bytes)``.

    Raises:
        NotFound: when ``path`` does not exist.
        InvalidValue: on symlinks or an empty directory.
    """
    src = Path(path)
    files = _list_files(src)
    entries = [(rel, file_sha256(p)) for rel, p in files]
    return tree_sha256(entries), sum(p.stat().st_size for _, p in files)


@dataclass(frozen=True)
class StagedArtifact:
    """A complete copy of an artifact in the staging area, not yet published."""

    path: Path
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class StoredArtifact:
    """A published artifact.

    Attributes:
        sha256: the content hash.
        size_bytes: total bytes of its files.
        location: directory relative to the store root, ``objects/<sha[:2]>/<sha>``.
        created: False when an identical artifact was already stored and is reused.
    """

    sha256: str
    size_bytes: int
    location: str
    created: bool


class ArtifactStore:
    """Content-addressed artifacts under one root directory.

    Args:
        root: directory to keep artifacts in; created when missing.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        for sub in ("objects", "tmp", "locks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r})"

    # -- addressing -------------------------------------------------------------------------------

    @staticmethod
    def location_for(sha256: str) -> str:
        """Relative location of the artifact with this hash (``objects/ab/abcd...``)."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise InvalidValue(f"invalid sha256 {sha256!r}: expected 64 lowercase hex characters")
        return f"objects/{sha256[:2]}/{sha256}"

    def path(self, location: str) -> Path:
        """Absolute path of a stored location.

        Raises:
            InvalidValue: when ``location`` would leave the root (a tampered or foreign row).
        """
        p = (self.root / location).resolve()
        if not p.is_relative_to(self.root / "objects"):
            raise InvalidValue(
                f"artifact location {location!r} is outside the artifact root {str(self.root)!r}"
            )
        return p

    def exists(self, sha256: str) -> bool:
        """Whether an artifact with this hash is stored."""
        return self.path(self.location_for(sha256)).is_dir()

    # -- writing ----------------------------------------------------------------------------------

    @contextmanager
    def lock(self, sha256: str) -> Iterator[None]:
        """Hold the advisory lock guarding publish/remove of ``sha256`` (blocks until free).

        The registry holds it from publishing an artifact until its row commits, and while it
        decides whether an unreferenced artifact may be removed, so a concurrent registration of
        the same content can never lose its file.
        """
        lock_path = self.root / "locks" / f"{sha256[:2]}.lock"
        with open(lock_path, "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    @contextmanager
    def staged(self, src: str | os.PathLike[str]) -> Iterator[StagedArtifact]:
        """Copy ``src`` into the staging area, hashing the bytes written.

        The staging copy is deleted on exit unless :meth:`publish` moved it into place.

        Raises:
            NotFound: ``src`` does not exist.
            InvalidValue: ``src`` holds symlinks or no files.
        """
        source = Path(src)
        files = _list_files(source)
        tmp = self.root / "tmp" / uuid.uuid4().hex
        payload = tmp / "payload"
        try:
            entries: list[tuple[str, str]] = []
            size = 0
            for rel, p in files:
                dst = payload / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                with open(p, "rb") as fin, open(dst, "wb") as fout:
                    while chunk := fin.read(_CHUNK):
                        h.update(chunk)
                        fout.write(chunk)
                        size += len(chunk)
                    fout.flush()
                    os.fsync(fout.fileno())
                entries.append((rel, h.hexdigest()))
            yield StagedArtifact(payload, tree_sha256(entries), size)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def publish(self, staged: StagedArtifact) -> StoredArtifact:
        """Move a staged artifact into ``objects/`` (call while holding :meth:`lock`).

        When the hash is already stored and intact, the staged copy is dropped and the existing
        one reused; when the stored copy is damaged, it is replaced by the staged one.
        """
        location = self.location_for(staged.sha256)
        final = self.path(location)
        if final.is_dir():
            actual, _ = hash_artifact(final)
            if actual == staged.sha256:
                return StoredArtifact(staged.sha256, staged.size_bytes, location, created=False)
            # A damaged copy under the right name: swap it for the good one.
            aside = self.root / "tmp" / f"damaged-{uuid.uuid4().hex}"
            os.replace(final, aside)
            shutil.rmtree(aside, ignore_errors=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.path, final)
        _fsync_dir(final.parent)
        return StoredArtifact(staged.sha256, staged.size_bytes, location, created=True)

    def put(self, src: str | os.PathLike[str]) -> StoredArtifact:
        """Stage, hash and publish ``src`` in one call (for use outside the registry)."""
        with self.staged(src) as staged, self.lock(staged.sha256):
            return self.publish(staged)

    def remove(self, sha256: str) -> bool:
        """Delete the artifact with this hash (call while holding :meth:`lock`).

        Returns:
            Whether anything was removed.
        """
        final = self.path(self.location_for(sha256))
        if not final.is_dir():
            return False
        # Rename first so no reader ever sees a half-deleted directory under the real name.
        aside = self.root / "tmp" / f"removed-{uuid.uuid4().hex}"
        os.replace(final, aside)
        shutil.rmtree(aside, ignore_errors=True)
        return True

    # -- reading ----------------------------------------------------------------------------------

    def verify(self, location: str, expected_sha256: str) -> str:
        """Re-hash a stored artifact and compare it with the recorded hash.

        Returns:
            The computed sha256 (equal to ``expected_sha256``).

        Raises:
            HashMismatch: naming expected and actual hash and the path; ``actual`` is ``None``
                when the artifact is missing.
        """
        p = self.path(location)
        if not p.is_dir():
            raise HashMismatch(
                f"artifact missing at {str(p)!r}: expected sha256 {expected_sha256}, found nothing",
                expected=expected_sha256,
                actual=None,
                path=str(p),
            )
        try:
            actual, _ = hash_artifact(p)
        except InvalidValue as e:  # emptied directory or planted symlink
            raise HashMismatch(
                f"artifact at {str(p)!r} is unreadable as stored ({e.message}); "
                f"expected sha256 {expected_sha256}",
                expected=expected_sha256,
                actual=None,
                path=str(p),
            ) from e
        if actual != expected_sha256:
            raise HashMismatch(
                f"artifact at {str(p)!r} has sha256 {actual}, expected {expected_sha256}: "
                "the files changed after registration; re-register or restore them",
                expected=expected_sha256,
                actual=actual,
                path=str(p),
            )
        return actual

    def fetch(self, location: str, expected_sha256: str) -> Path:
        """Verify a stored artifact and return its absolute directory path.

        Raises:
            HashMismatch: see :meth:`verify`.
        """
        self.verify(location, expected_sha256)
        return self.path(location)


def _fsync_dir(path: Path) -> None:
    """Persist a rename by fsyncing the directory that holds it (POSIX)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
