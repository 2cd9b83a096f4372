"""Content-addressed artifact store: files on disk, addressed by sha256.

Layout under ``root``::

    objects/<sha[:2]>/<sha>/...     one directory per artifact, holding its files
    objects/<sha[:2]>/<sha>.manifest.json   its per-file hashes (see :mod:`registry.manifest`)
    tmp/<host>-<pid>-<uuid hex>/    staging area (same filesystem, so publishing is a rename)
    locks/<sha[:2]>.lock            advisory locks serialising publish/remove of a hash

An artifact is a directory of files (e.g. ``adapter.safetensors`` + ``adapter_config.json``) or a
single file, which is stored as a directory holding that one file. Its hash is
:func:`tree_sha256` over the sorted ``(relative path, file sha256)`` pairs, so a single file's
artifact hash covers its name as well as its bytes.

Hashing (:func:`hash_artifact`, :func:`tree_sha256`, which files make up an artifact) lives in
:mod:`registry.hashing` and is re-exported here. Publishing is atomic: files are copied into
``tmp/`` (hashing the bytes as they are written, so the hash describes exactly what was
stored), fsynced, then renamed into ``objects/`` with ``os.replace``. A reader therefore sees
either no artifact or a complete one. Nothing here ever unpickles anything; artifacts are
opaque bytes.

Staging folders are named for their owner (``<hostname>-<pid>-<uuid hex>``) so that a writer
killed mid-copy leaves something another process can prove is abandoned:
:meth:`ArtifactStore.sweep_stale_staging` (run whenever a store is opened) removes exactly the
folders of this host whose pid is no longer alive. Other hosts' folders are never touched, since
their pids mean nothing here. Folders in the old, ownerless format (``<uuid hex>``,
``damaged-<uuid hex>``, ``removed-<uuid hex>``) are removed only once they are more than a day
old; anything else in ``tmp/`` is left alone. Damaged or removed objects are renamed aside into
owner-named ``tmp/`` folders too, so an interrupted delete is swept the same way.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from registry.errors import HashMismatch, InvalidValue
from registry.hashing import (  # noqa: F401  (file_sha256, hash_artifact: re-exported)
    _CHUNK,
    _list_files,
    file_sha256,
    hash_artifact,
    tree_sha256,
)

_log = logging.getLogger(__name__)

#: Ownerless staging folders (written before names carried their owner) older than this are stale.
LEGACY_STAGING_MAX_AGE_S = 24 * 3600
_OWNED = re.compile(r"^(?P<host>.+)-(?P<pid>[0-9]+)-(?P<uid>[0-9a-f]{32})$")
_LEGACY = re.compile(r"^(?:(?:damaged|removed)-)?[0-9a-f]{32}$")


@dataclass(frozen=True)
class StagedArtifact:
    """A complete copy of an artifact in the staging area, not yet published."""

    path: Path
    sha256: str
    size_bytes: int
    entries: tuple[tuple[str, str], ...] = ()  # (relative path, file sha256) for the manifest


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
        sweep: remove stale staging folders on open (see :meth:`sweep_stale_staging`).

    Attributes:
        swept: the staging folders removed when this store was opened.
    """

    def __init__(self, root: str | os.PathLike[str], *, sweep: bool = True) -> None:
        self.root = Path(root).resolve()
        for sub in ("objects", "tmp", "locks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.swept: tuple[Path, ...] = tuple(self.sweep_stale_staging()) if sweep else ()

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

    # -- staging area -----------------------------------------------------------------------------

    def _tmp_dir(self) -> Path:
        """A fresh, owner-named path in ``tmp/`` (not created): ``<hostname>-<pid>-<uuid hex>``."""
        return self.root / "tmp" / f"{_hostname()}-{os.getpid()}-{uuid.uuid4().hex}"

    def sweep_stale_staging(self, *, now: float | None = None) -> list[Path]:
        """Remove staging folders left behind by killed writers; return the ones removed.

        Removed: folders named ``<this host>-<pid>-<uuid hex>`` whose pid no longer runs
        (``os.kill(pid, 0)`` raises ProcessLookupError), and ownerless old-format folders
        (``<uuid hex>``, ``damaged-``/``removed-<uuid hex>``) last modified more than
        :data:`LEGACY_STAGING_MAX_AGE_S` ago. Kept: other hosts' folders (their pids cannot be
        checked from here), live pids' folders, and anything else. A reused pid only keeps a
        stale folder a while longer; it never removes a live one. Failures are logged, not
        raised: a leftover folder must not stop the store from opening.

        Args:
            now: clock for the age rule (``time.time()``); for tests.
        """
        now = time.time() if now is None else now
        removed: list[Path] = []
        try:
            entries = sorted((self.root / "tmp").iterdir())
        except OSError as e:
            _log.warning("cannot list staging area %s: %s", self.root / "tmp", e)
            return removed
        for p in entries:
            if p.is_dir() and not p.is_symlink() and _is_stale(p.name, p, now):
                shutil.rmtree(p, ignore_errors=True)
                if p.exists():
                    _log.warning("could not remove stale staging folder %s", p)
                else:
                    _log.info("removed stale staging folder %s", p)
                    removed.append(p)
        return removed

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
    def staged(
        self, src: str | os.PathLike[str], files: Sequence[str] | None = None
    ) -> Iterator[StagedArtifact]:
        """Copy ``src`` into the staging area, hashing the bytes written.

        The staging copy is deleted on exit unless :meth:`publish` moved it into place.

        Args:
            src: a single file or a directory.
            files: when given, the artifact is exactly these relative names inside the
                directory ``src``; nothing else there is read. ``None``: every file under it.

        Raises:
            NotFound: ``src`` or a listed file does not exist.
            InvalidValue: ``src`` holds symlinks or no files, or a ``files`` entry is bad
                (absolute, ``..``, a symlink, not a regular file, listed twice).
        """
        listed = _list_files(Path(src), files)
        tmp = self._tmp_dir()
        payload = tmp / "payload"
        try:
            entries: list[tuple[str, str]] = []
            size = 0
            for rel, p in listed:
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
            yield StagedArtifact(payload, tree_sha256(entries), size, tuple(entries))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def publish(self, staged: StagedArtifact) -> StoredArtifact:
        """Move a staged artifact into ``objects/`` (call while holding :meth:`lock`).

        When the hash is already stored and intact, the staged copy is dropped and the existing
        one reused; when the stored copy is damaged, it is replaced by the staged one. The
        per-file manifest is renamed into place *before* the object, so a published object has
        one unless it was published by older code (or a crash hit between the two renames, which
        leaves only a manifest: an orphan ``gc`` removes).
        """
        location = self.location_for(staged.sha256)
        final = self.path(location)
        if final.is_dir():
            actual, _ = hash_artifact(final)
            if actual == staged.sha256:
                self._write_manifest(staged, final, only_if_missing=True)
                return StoredArtifact(staged.sha256, staged.size_bytes, location, created=False)
            # A damaged copy under the right name: swap it for the good one.
            aside = self._tmp_dir()
            os.replace(final, aside)
            shutil.rmtree(aside, ignore_errors=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._write_manifest(staged, final, only_if_missing=False)
        os.replace(staged.path, final)
        _fsync_dir(final.parent)
        return StoredArtifact(staged.sha256, staged.size_bytes, location, created=True)

    @staticmethod
    def _write_manifest(staged: StagedArtifact, final: Path, *, only_if_missing: bool) -> None:
        """Write ``final``'s manifest from the staged hashes (nothing when they are unknown)."""
        from registry import manifest  # imports this module: resolve at call time

        path = manifest.manifest_path(final)
        if not staged.entries or (only_if_missing and path.exists()):
            return
        scratch = staged.path.parent / "manifest.json"
        manifest.write(path, staged.sha256, staged.entries, scratch)

    def put(
        self, src: str | os.PathLike[str], files: Sequence[str] | None = None
    ) -> StoredArtifact:
        """Stage, hash and publish ``src`` (or only ``files`` in it) in one call, outside the
        registry."""
        with self.staged(src, files) as staged, self.lock(staged.sha256):
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
        aside = self._tmp_dir()
        os.replace(final, aside)
        shutil.rmtree(aside, ignore_errors=True)
        _unlink_manifest(final)
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
                problems=("artifact directory is missing",),
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
                problems=(e.message,),
            ) from e
        if actual != expected_sha256:
            from registry import manifest  # imports this module: resolve at call time

            problems = tuple(manifest.file_problems(p, expected_sha256))
            raise HashMismatch(
                f"artifact at {str(p)!r} has sha256 {actual}, expected {expected_sha256} "
                f"({'; '.join(problems)}): "
                "the files changed after registration; re-register or restore them",
                expected=expected_sha256,
                actual=actual,
                path=str(p),
                problems=problems,
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


def _unlink_manifest(object_dir: Path) -> None:
    """Drop an object's manifest once the object is gone (a stale one would only mislead)."""
    from registry import manifest  # imports this module: resolve at call time

    manifest.manifest_path(object_dir).unlink(missing_ok=True)


def _hostname() -> str:
    """This host's name as used in staging folder names (anything but ``[A-Za-z0-9._-]``
    becomes ``_`` so the name is always one safe path component)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "unknown-host"


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists here (a permission error means it does)."""
    if pid <= 0:
        return True  # 0 / negative would signal a process group: never treat as dead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(name: str, path: Path, now: float) -> bool:
    """Whether the staging folder ``name`` is provably abandoned (rules in
    :meth:`ArtifactStore.sweep_stale_staging`)."""
    owned = _OWNED.match(name)
    if owned:
        return owned["host"] == _hostname() and not _pid_alive(int(owned["pid"]))
    if _LEGACY.match(name):
        try:
            return now - path.stat().st_mtime > LEGACY_STAGING_MAX_AGE_S
        except OSError:
            return False
    return False
