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
  manifest), which no reader sees. When the manifest is already there (and the object's keys and
  sizes match it) the publish is a no-op. Two writers of the same content write the same bytes
  to the same keys, so their race is harmless.
* **Fetching** downloads the object, re-stages it into the cache (hashing it) and refuses it
  with :class:`HashMismatch` naming the ``s3://`` object and the files that differ, unless the
  hash is the recorded one. A verified cache copy is used without a download.
* **Stale uploads**: :meth:`S3ArtifactStore.sweep_stale_staging` deletes ``tmp/`` folders whose
  newest key is older than an age (another host's pid cannot be checked from here, so only age
  tells a killed writer from a slow one).
* **Locks**: :meth:`lock` is the cache's per-host lock; across hosts nothing serialises a
  removal (``delete``, ``gc --apply``) against a registration of the same content elsewhere.

boto3 finds the endpoint in ``AWS_ENDPOINT_URL`` (or the ``endpoint_url`` given, i.e.
``registry.s3_endpoint_url``) and credentials the usual way (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance role).
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
from registry.errors import HashMismatch, InvalidValue, StorageError
from registry.faults import fault_point

SCHEME = "s3://"
ENV_ENDPOINT = "AWS_ENDPOINT_URL"
ENV_CACHE = "KRONCL_ARTIFACT_CACHE"
#: ``tmp/`` folders whose newest key is older than this are swept when a store is opened.
STAGING_MAX_AGE_S = 24 * 3600
_LOCATION = re.compile(r"^objects/[0-9a-f]{2}/[0-9a-f]{64}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def is_object_store(root: object) -> bool:
    """Whether an artifact root names an object store (``s3://...``) rather than a folder."""
    return isinstance(root, str) and root.startswith(SCHEME)


def parse_uri(uri: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket[/prefix]``; the prefix has no leading/trailing ``/``.

    Raises:
        InvalidValue: not ``s3://``, or a bucket name S3 would refuse.
    """
    if not is_object_store(uri):
        raise InvalidValue(f"artifact root {uri!r} is not an s3://BUCKET/PREFIX URI")
    bucket, _, prefix = uri[len(SCHEME):].partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET.match(bucket) or ".." in prefix.split("/"):
        raise InvalidValue(
            f"artifact root {uri!r}: {bucket!r} is not a bucket name (3-63 lowercase letters, "
            "digits, '.' or '-') or the prefix holds '..'; use s3://BUCKET/PREFIX"
        )
    return bucket, prefix


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
        self._client = self._make_client()
        self._call("head_bucket", Bucket=self.bucket)
        self.swept: tuple[str, ...] = ()
        if sweep:
            self.swept = tuple(self.sweep_stale_staging(max_age_s=staging_max_age_s))

    def __repr__(self) -> str:
        return f"S3ArtifactStore({self.root!r}, endpoint_url={self.endpoint_url!r})"

    # -- the client and its errors ----------------------------------------------------------------

    def _make_client(self) -> Any:
        try:
            import boto3
        except ImportError as e:  # pragma: no cover - boto3 is a pinned dependency
            raise StorageError(
                f"artifact root {self.root}: boto3 is not installed; pip install boto3"
            ) from e
        return boto3.session.Session().client("s3", endpoint_url=self.endpoint_url)

    def _call(self, op: str, **kwargs: Any) -> Any:
        """``client.<op>(**kwargs)`` with the client's failures turned into :class:`StorageError`
        naming the root and what to set (a missing key is left to the caller: ``NoSuchKey``)."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return getattr(self._client, op)(**kwargs)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404") and op != "head_bucket":
                raise
            raise self._storage_error(code, e) from e
        except NoCredentialsError as e:
            raise StorageError(
                f"artifact root {self.root}: no credentials for the object store; set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            ) from e
        except BotoCoreError as e:
            raise StorageError(
                f"artifact root {self.root}: cannot reach the object store at "
                f"{self._endpoint_name()} ({e}); set {ENV_ENDPOINT} or registry.s3_endpoint_url "
                "to the S3 server's address (e.g. http://minio:9000)"
            ) from e

    def _endpoint_name(self) -> str:
        return self.endpoint_url or "the default AWS endpoint"

    def _storage_error(self, code: str, e: Exception) -> StorageError:
        where = f"artifact root {self.root} (endpoint {self._endpoint_name()})"
        if code in ("NoSuchBucket", "404"):
            return StorageError(
                f"{where}: bucket {self.bucket!r} does not exist; create it (e.g. "
                f"aws s3 mb s3://{self.bucket}) or point registry.artifacts / --artifacts at "
                f"another bucket (and {ENV_ENDPOINT} at its server)"
            )
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
            return StorageError(
                f"{where}: the object store refused the credentials ({code}); set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to a key that may "
                f"read and write s3://{self.bucket}"
            )
        return StorageError(f"{where}: the object store failed: {e}")

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

    def _list(self, prefix: str) -> list[dict[str, Any]]:
        """Every object under a key prefix (``Key``, ``Size``, ``LastModified``)."""
        found: list[dict[str, Any]] = []
        token: dict[str, str] = {}
        while True:
            page = self._call("list_objects_v2", Bucket=self.bucket, Prefix=prefix, **token)
            found += page.get("Contents", [])
            if not page.get("IsTruncated"):
                return found
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def _delete(self, keys: Sequence[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self._call("delete_objects", Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def _read_manifest(self, location: str) -> bytes | None:
        """The manifest's bytes, ``None`` when the object is not published."""
        try:
            body = self._call("get_object", Bucket=self.bucket, Key=self._manifest_key(location))
        except Exception as e:
            if getattr(e, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return body["Body"].read()

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
                    tmp = self._key(f"tmp/{_hostname()}-{os.getpid()}-{uuid.uuid4().hex}/")
                    for rel, _ in local.entries:
                        with open(local.path / rel, "rb") as f:
                            self._call("put_object", Bucket=self.bucket, Key=tmp + rel, Body=f)
                        fault_point("s3_upload", file=rel)
                yield S3StagedArtifact(local.path, local.sha256, local.size_bytes, local.entries, tmp)
            finally:
                if tmp is not None:
                    self._delete([o["Key"] for o in self._list(tmp)])

    def _complete(self, location: str, entries: Sequence[tuple[str, str]]) -> bool:
        """Whether the object is published with a manifest of exactly these files and a key for
        each (a cheap check: one read and one listing, no download)."""
        body = self._read_manifest(location)
        if body is None or manifest.decode(body, location.rsplit("/", 1)[1]) != dict(entries):
            return False
        base = self._key(location) + "/"
        return {o["Key"][len(base):] for o in self._list(base)} == {rel for rel, _ in entries}

    def publish(self, staged: S3StagedArtifact) -> StoredArtifact:
        """Copy the uploaded files to their ``objects/`` keys, then write the manifest (call
        while holding :meth:`lock`). A published, complete object is reused as it is."""
        location = self.location_for(staged.sha256)
        if staged.tmp_prefix is None or self._complete(location, staged.entries):
            self._keep_in_cache(staged)
            return StoredArtifact(staged.sha256, staged.size_bytes, location, created=False)
        base = self._key(location) + "/"
        for rel, _ in staged.entries:
            source = {"Bucket": self.bucket, "Key": staged.tmp_prefix + rel}
            self._call("copy_object", Bucket=self.bucket, Key=base + rel, CopySource=source)
        fault_point("s3_publish", sha256=staged.sha256)
        body = manifest.encode(staged.sha256, staged.entries)
        self._call("put_object", Bucket=self.bucket, Key=self._manifest_key(location), Body=body)
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
        self._delete([self._manifest_key(location)])
        self._delete([o["Key"] for o in self._list(self._key(location) + "/")])
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
        for o in self._list(base):
            folders.setdefault(o["Key"][len(base):].split("/", 1)[0], []).append(o)
        removed = []
        for name, objs in sorted(folders.items()):
            if now - max(o["LastModified"].timestamp() for o in objs) > max_age_s:
                self._delete([o["Key"] for o in objs])
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
            for o in self._list(base):
                rel = PurePosixPath(o["Key"][len(base):])
                if rel.is_absolute() or ".." in rel.parts or not rel.parts:
                    raise HashMismatch(
                        f"artifact at {uri!r} holds a key {o['Key']!r} that is not a relative "
                        f"file name; expected sha256 {expected_sha256}",
                        expected=expected_sha256, actual=None, path=uri,
                        problems=(f"bad key {o['Key']!r}",),
                    )
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                self._call("download_file", Bucket=self.bucket, Key=o["Key"], Filename=str(tmp / rel))
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
