"""An artifact root in an S3-compatible object store: ``registry.artifacts=s3://bucket/prefix``.

Same addressing and guarantees as the folder root (:class:`registry.artifacts.ArtifactStore`),
with keys instead of paths::

    <prefix>/objects/<sha[:2]>/<sha>/<relative path>      the artifact's files
    <prefix>/objects/<sha[:2]>/<sha>.manifest.json        its manifest: written LAST
    <prefix>/tmp/<host>-<pid>-<uuid hex>/<relative path>  uploads in flight

The store keeps no logic of its own for hashing or manifests: a local :class:`ArtifactStore`
(the *cache*, a folder on this machine) stages and hashes the files exactly as the folder root
does, and holds verified copies of what was fetched; :mod:`registry.manifest` encodes and
compares manifests for both.

* **Publishing** uploads the staged copy to ``tmp/`` keys, copies them to their ``objects/``
  keys, writes the manifest, then deletes the ``tmp/`` keys. An object exists once its manifest
  does: a writer killed before that leaves only ``tmp/`` keys (or ``objects/`` keys with no
  manifest), which no reader sees. When the manifest is already there (and there is a key for
  each file it lists) the publish is a no-op. Two writers of the same content write the same bytes
  to the same keys, so their race is harmless.
* **Fetching** downloads the object, re-stages it into the cache (hashing it) and refuses it
  with :class:`HashMismatch` naming the ``s3://`` object and the files that differ, unless the
  hash is the recorded one. A verified cache copy is used without a download.
* **Stale uploads**: :meth:`S3ArtifactStore.sweep_stale_staging` deletes ``tmp/`` folders whose
  newest key is older than an age (another host's pid cannot be checked from here, so only age
  tells a killed writer from a slow one).
* **Locks**: :meth:`lock` is the cache's per-host lock; across hosts nothing serialises a
  removal (``delete``, ``gc --apply``) against a registration of the same content elsewhere.

The S3 calls and their clear errors (:class:`registry.errors.StorageError`: missing bucket,
refused or absent credentials, unreachable endpoint) are in :mod:`registry.s3client`.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from registry import manifest
from registry.artifacts import ArtifactStore, StagedArtifact, StoredArtifact, _hostname
from registry.errors import HashMismatch, InvalidValue
from registry.faults import fault_point
from registry.s3client import (  # noqa: F401  (is_object_store, parse_uri: re-exported)
    ENV_ENDPOINT,
    SCHEME,
    Bucket,
    is_missing_key,
    is_object_store,
    parse_uri,
)

ENV_CACHE = "KRONCL_ARTIFACT_CACHE"
#: ``tmp/`` folders whose newest key is older than this are swept when a store is opened.
STAGING_MAX_AGE_S = 24 * 3600
_LOCATION = re.compile(r"^objects/[0-9a-f]{2}/[0-9a-f]{64}$")


def default_cache_dir(bucket: str, prefix: str) -> Path:
    """``$KRONCL_ARTIFACT_CACHE/<bucket>/<prefix>``, else under ``$XDG_CACHE_HOME`` or
    ``~/.cache`` in ``kroncl/artifacts/<bucket>/<prefix>``."""
    base = os.environ.get(ENV_CACHE)
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "kroncl" / "artifacts")
    return Path(base).expanduser() / bucket / prefix


@dataclass(frozen=True)
class S3StagedArtifact(StagedArtifact):
    """A staged artifact whose files are also uploaded under ``tmp_prefix`` (``None``: not
    uploaded, because the object was already published when staging began)."""

    tmp_prefix: str | None = None


class S3ArtifactStore:
    """Content-addressed artifacts under ``s3://bucket/prefix`` (rules in the module docstring).

    Args:
        uri: ``s3://bucket/prefix``.
        endpoint_url: the S3 API's address; default ``$AWS_ENDPOINT_URL``, else AWS.
        cache_dir: local folder for staging and verified copies; default
            :func:`default_cache_dir`.
        sweep: delete ``tmp/`` folders older than ``staging_max_age_s`` on open.
        staging_max_age_s: the age for ``sweep``.

    Raises:
        InvalidValue: a malformed URI.
        StorageError: the bucket is missing, the credentials are refused or absent, or the
            endpoint cannot be reached (checked on open, with one request).
    """

    def __init__(
        self,
        uri: str,
        *,
        endpoint_url: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        sweep: bool = True,
        staging_max_age_s: float = STAGING_MAX_AGE_S,
    ) -> None:
        self.bucket, self.prefix = parse_uri(uri)
        self.root = f"{SCHEME}{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.endpoint_url = endpoint_url or os.environ.get(ENV_ENDPOINT) or None
        self.cache = ArtifactStore(
            cache_dir if cache_dir is not None else default_cache_dir(self.bucket, self.prefix)
        )
        self._s3 = Bucket(self.root, self.bucket, self.endpoint_url)
        self._s3.check()
        self.swept: tuple[str, ...] = ()
        if sweep:
            self.swept = tuple(self.sweep_stale_staging(max_age_s=staging_max_age_s))

    def __repr__(self) -> str:
        return f"S3ArtifactStore({self.root!r}, endpoint_url={self.endpoint_url!r})"

    # -- keys -------------------------------------------------------------------------------------

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    location_for = staticmethod(ArtifactStore.location_for)

    def _checked(self, location: str) -> str:
        if not isinstance(location, str) or not _LOCATION.match(location):
            raise InvalidValue(
                f"artifact location {location!r} is not objects/<sha[:2]>/<sha> under the "
                f"artifact root {self.root!r}"
            )
        return location

    def path(self, location: str) -> str:
        """The ``s3://`` URI of a stored location (for messages and ``show``).

        Raises:
            InvalidValue: a location this store does not write (a tampered or foreign row).
        """
        return f"{SCHEME}{self.bucket}/{self._key(self._checked(location))}"

    def _manifest_key(self, location: str) -> str:
        return self._key(location + manifest.SUFFIX)

    def _read_manifest(self, location: str) -> bytes | None:
        """The manifest's bytes, ``None`` when the object is not published."""
        return self._s3.get(self._manifest_key(location))

    def exists(self, sha256: str) -> bool:
        """Whether an artifact with this hash is published (its manifest exists)."""
        return self._read_manifest(self.location_for(sha256)) is not None

    # -- writing ----------------------------------------------------------------------------------

    @contextmanager
    def lock(self, sha256: str) -> Iterator[None]:
        """The cache's advisory lock for ``sha256``: serialises this host's writers and removers
        (see the module docstring for other hosts)."""
        with self.cache.lock(sha256):
            yield

    @contextmanager
    def staged(
        self, src: str | os.PathLike[str], files: Sequence[str] | None = None
    ) -> Iterator[S3StagedArtifact]:
        """Stage ``src`` in the cache (hashing it, rules of :meth:`ArtifactStore.staged`), then
        upload it to ``tmp/`` keys unless the object is already published; the keys are deleted
        on exit (a killed writer's are left to :meth:`sweep_stale_staging`)."""
        with self.cache.staged(src, files) as local:
            tmp: str | None = None
            try:
                if not self._complete(self.location_for(local.sha256), local.entries):
                    tmp = self._upload(local)
                yield S3StagedArtifact(local.path, local.sha256, local.size_bytes, local.entries, tmp)
            finally:
                if tmp is not None:
                    self._s3.delete([o["Key"] for o in self._s3.list(tmp)])

    def _upload(self, local: StagedArtifact) -> str:
        """Upload a staged copy's files under a fresh, owner-named ``tmp/`` prefix; return it."""
        tmp = self._key(f"tmp/{_hostname()}-{os.getpid()}-{uuid.uuid4().hex}/")
        for rel, _ in local.entries:
            with open(local.path / rel, "rb") as f:
                self._s3.call("put_object", Key=tmp + rel, Body=f)
            fault_point("s3_upload", file=rel)
        return tmp

    def _complete(self, location: str, entries: Sequence[tuple[str, str]]) -> bool:
        """Whether the object is published with a manifest of exactly these files and a key for
        each (a cheap check: one read and one listing, no download)."""
        body = self._read_manifest(location)
        if body is None or manifest.decode(body, location.rsplit("/", 1)[1]) != dict(entries):
            return False
        base = self._key(location) + "/"
        return {o["Key"][len(base):] for o in self._s3.list(base)} == {rel for rel, _ in entries}

    def publish(self, staged: S3StagedArtifact) -> StoredArtifact:
        """Copy the uploaded files to their ``objects/`` keys, then write the manifest (call
        while holding :meth:`lock`). A published, complete object is reused as it is."""
        location = self.location_for(staged.sha256)
        if self._complete(location, staged.entries):
            self._keep_in_cache(staged)
            return StoredArtifact(staged.sha256, staged.size_bytes, location, created=False)
        # Not uploaded while staging because it was published then: removed since, so upload now.
        tmp = staged.tmp_prefix or self._upload(staged)
        try:
            base = self._key(location) + "/"
            for rel, _ in staged.entries:
                source = {"Bucket": self.bucket, "Key": tmp + rel}
                self._s3.call("copy_object", Key=base + rel, CopySource=source)
            fault_point("s3_publish", sha256=staged.sha256)
            body = manifest.encode(staged.sha256, staged.entries)
            self._s3.call("put_object", Key=self._manifest_key(location), Body=body)
        finally:
            if tmp != staged.tmp_prefix:  # staged() deletes its own
                self._s3.delete([o["Key"] for o in self._s3.list(tmp)])
        self._keep_in_cache(staged)
        return StoredArtifact(staged.sha256, staged.size_bytes, location, created=True)

    def _keep_in_cache(self, staged: StagedArtifact) -> None:
        """Move the writer's staged copy into the cache (the caller holds :meth:`lock`, the
        cache's), so fetching it here needs no download; it is verified like any cached copy."""
        if not self.cache.exists(staged.sha256):
            self.cache.publish(staged)

    def put(
        self, src: str | os.PathLike[str], files: Sequence[str] | None = None
    ) -> StoredArtifact:
        """Stage, upload and publish ``src`` (or only ``files`` in it), outside the registry."""
        with self.staged(src, files) as staged, self.lock(staged.sha256):
            return self.publish(staged)

    def remove(self, sha256: str) -> bool:
        """Delete the object (manifest first, so it is never visible half-deleted) and its cached
        copy (call while holding :meth:`lock`). Returns whether a manifest was there."""
        location = self.location_for(sha256)
        had = self._read_manifest(location) is not None
        self._s3.delete([self._manifest_key(location)])
        self._s3.delete([o["Key"] for o in self._s3.list(self._key(location) + "/")])
        self.cache.remove(sha256)
        return had

    def sweep_stale_staging(
        self, *, max_age_s: float = STAGING_MAX_AGE_S, now: float | None = None
    ) -> list[str]:
        """Delete the ``tmp/`` folders whose newest key is older than ``max_age_s``; return their
        ``s3://`` URIs. A writer still uploading keeps its folder young, so give ``max_age_s``
        well over the longest upload.

        Args:
            now: clock for the age rule (``time.time()``); for tests.
        """
        now = time.time() if now is None else now
        base = self._key("tmp/")
        folders: dict[str, list[dict[str, Any]]] = {}
        for o in self._s3.list(base):
            folders.setdefault(o["Key"][len(base):].split("/", 1)[0], []).append(o)
        removed = []
        for name, objs in sorted(folders.items()):
            if now - max(o["LastModified"].timestamp() for o in objs) > max_age_s:
                self._s3.delete([o["Key"] for o in objs])
                removed.append(f"{SCHEME}{self.bucket}/{base}{name}/")
        return removed

    # -- reading ----------------------------------------------------------------------------------

    @contextmanager
    def _downloaded(self, location: str, expected_sha256: str) -> Iterator[StagedArtifact]:
        """Download the object into the cache's staging area and stage it (hashing it there);
        raise :class:`HashMismatch` unless it hashes to ``expected_sha256``."""
        uri = self.path(location)
        body = self._read_manifest(location)
        if body is None:
            raise HashMismatch(
                f"artifact missing at {uri!r}: expected sha256 {expected_sha256}, found no "
                "manifest (the object was never published, or was deleted)",
                expected=expected_sha256, actual=None, path=uri,
                problems=("artifact manifest is missing",),
            )
        tmp = self.cache.root / "tmp" / f"{_hostname()}-{os.getpid()}-{uuid.uuid4().hex}"
        base = self._key(location) + "/"
        try:
            for o in self._s3.list(base):
                rel = PurePosixPath(o["Key"][len(base):])
                if rel.is_absolute() or ".." in rel.parts or not rel.parts:
                    raise HashMismatch(
                        f"artifact at {uri!r} holds a key {o['Key']!r} that is not a relative "
                        f"file name; expected sha256 {expected_sha256}",
                        expected=expected_sha256, actual=None, path=uri,
                        problems=(f"bad key {o['Key']!r}",),
                    )
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                try:
                    self._s3.call("download_file", Key=o["Key"], Filename=str(tmp / rel))
                except Exception as e:
                    if not is_missing_key(e):
                        raise
                    # the key vanished after the listing (a concurrent delete)
                    raise HashMismatch(
                        f"artifact at {uri!r}: key {o['Key']!r} vanished while downloading ({e}); "
                        f"expected sha256 {expected_sha256}",
                        expected=expected_sha256, actual=None, path=uri,
                        problems=(f"file {rel.as_posix()!r} is missing",),
                    ) from e
            if not tmp.is_dir():
                raise HashMismatch(
                    f"artifact at {uri!r} has a manifest but no files; expected sha256 "
                    f"{expected_sha256}: re-register it",
                    expected=expected_sha256, actual=None, path=uri,
                    problems=("artifact files are missing",),
                )
            with self.cache.staged(tmp) as staged:
                if staged.sha256 != expected_sha256:
                    problems = tuple(
                        manifest.compare(manifest.decode(body, expected_sha256), dict(staged.entries))
                    )
                    raise HashMismatch(
                        f"artifact at {uri!r} has sha256 {staged.sha256}, expected "
                        f"{expected_sha256} ({'; '.join(problems)}): the object changed after "
                        "registration; re-register or restore it",
                        expected=expected_sha256, actual=staged.sha256, path=uri,
                        problems=problems,
                    )
                yield staged
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def verify(self, location: str, expected_sha256: str) -> str:
        """Download and re-hash the stored object (never the cache), refreshing the cache.

        Raises:
            HashMismatch: the object is missing or its files differ (naming its ``s3://`` URI).
        """
        self.fetch(location, expected_sha256, use_cache=False)
        return expected_sha256

    def fetch(self, location: str, expected_sha256: str, *, use_cache: bool = True) -> Path:
        """A verified local copy of a stored object: the cache's, when it still hashes to
        ``expected_sha256``, else a fresh download, verified, then kept in the cache.

        Raises:
            HashMismatch: the downloaded object is missing or differs (see :meth:`verify`).
        """
        self._checked(location)
        if use_cache and self.cache.exists(expected_sha256):
            try:
                return self.cache.fetch(location, expected_sha256)
            except HashMismatch:
                pass  # a damaged cached copy: download it again
        with self._downloaded(location, expected_sha256) as staged, self.lock(expected_sha256):
            self.cache.publish(staged)
        return self.cache.path(location)
