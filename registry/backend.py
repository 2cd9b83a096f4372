"""The artifact-root interface the registry codes against, and the choice of backend.

Two backends implement it: a folder (:class:`registry.artifacts.ArtifactStore`) and an
S3-compatible object store (:class:`registry.s3store.S3ArtifactStore`, chosen by an
``s3://bucket/prefix`` root), which stages, hashes and caches through a folder store so that
hashing and manifests live in one place (:mod:`registry.hashing`, :mod:`registry.manifest`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from registry.artifacts import ArtifactStore, StagedArtifact, StoredArtifact
from registry.s3client import is_object_store
from registry.s3store import S3ArtifactStore


class ArtifactBackend(Protocol):
    """What ``registry.versions``, ``registry.verify`` and :class:`RegistryStore` use."""

    root: Path | str

    def location_for(self, sha256: str) -> str:
        """``objects/<sha[:2]>/<sha>``; raises InvalidValue on a malformed hash."""
        ...

    def path(self, location: str) -> Path | str:
        """Where a stored location lives (a path, or an ``s3://`` URI), for messages."""
        ...

    def exists(self, sha256: str) -> bool: ...

    def staged(
        self, src: str | os.PathLike[str], files: Sequence[str] | None = None
    ) -> AbstractContextManager[StagedArtifact]:
        """Copy and hash ``src`` somewhere no reader looks; cleaned up on exit."""
        ...

    def lock(self, sha256: str) -> AbstractContextManager[None]: ...

    def publish(self, staged: StagedArtifact) -> StoredArtifact:
        """Make a staged artifact visible, atomically (a no-op when already stored)."""
        ...

    def remove(self, sha256: str) -> bool: ...

    def verify(self, location: str, expected_sha256: str) -> str:
        """Re-hash the stored artifact; raises HashMismatch naming it."""
        ...

    def fetch(self, location: str, expected_sha256: str) -> Path:
        """A verified local directory holding the artifact's files."""
        ...


def open_artifacts(
    root: str | os.PathLike[str],
    *,
    endpoint_url: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ArtifactStore | S3ArtifactStore:
    """The artifact root ``root``: an object store for ``s3://bucket/prefix``, else a folder.

    Args:
        endpoint_url: the S3 API's address (object stores only; default ``$AWS_ENDPOINT_URL``).
        cache_dir: local folder for an object store's staging and verified copies.
    """
    if is_object_store(root):
        return S3ArtifactStore(str(root), endpoint_url=endpoint_url, cache_dir=cache_dir)
    return ArtifactStore(root)
