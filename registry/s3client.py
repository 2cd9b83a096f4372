"""The S3 calls the object-store artifact root makes (:mod:`registry.s3store`), with boto3's
failures turned into :class:`StorageError` messages that name the root and what to set.

boto3 finds the endpoint in ``AWS_ENDPOINT_URL`` (or the ``endpoint_url`` given) and the
credentials the usual way (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an
instance role); ``AWS_MAX_ATTEMPTS`` bounds its retries.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from registry.errors import InvalidValue, StorageError

SCHEME = "s3://"
ENV_ENDPOINT = "AWS_ENDPOINT_URL"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MISSING_KEY = ("NoSuchKey", "404")


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


def is_missing_key(e: BaseException) -> bool:
    """Whether ``e`` is S3's "no such key" (left raw by :meth:`Bucket.call`)."""
    return getattr(e, "response", {}).get("Error", {}).get("Code") in _MISSING_KEY


class Bucket:
    """One bucket through one boto3 client; ``root`` (the ``s3://`` URI) names it in errors.

    Raises:
        StorageError: boto3 is not installed.
    """

    def __init__(self, root: str, name: str, endpoint_url: str | None) -> None:
        self.root, self.name, self.endpoint_url = root, name, endpoint_url
        try:
            import boto3
        except ImportError as e:  # pragma: no cover - boto3 is a pinned dependency
            raise StorageError(f"artifact root {root}: boto3 is not installed; pip install boto3") from e
        self._client = boto3.session.Session().client("s3", endpoint_url=endpoint_url)

    def call(self, op: str, **kwargs: Any) -> Any:
        """``client.<op>(Bucket=..., **kwargs)``; failures become :class:`StorageError`, except
        a missing key (``NoSuchKey``/404, see :func:`is_missing_key`), which the caller handles."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return getattr(self._client, op)(Bucket=self.name, **kwargs)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in _MISSING_KEY and op != "head_bucket":
                raise
            raise self._refused(code, e) from e
        except NoCredentialsError as e:
            raise StorageError(
                f"artifact root {self.root}: no credentials for the object store; set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            ) from e
        except BotoCoreError as e:
            raise StorageError(
                f"artifact root {self.root}: cannot reach the object store at {self._endpoint()} "
                f"({e}); set {ENV_ENDPOINT} or registry.s3_endpoint_url to the S3 server's "
                "address (e.g. http://minio:9000)"
            ) from e

    def _endpoint(self) -> str:
        return self.endpoint_url or "the default AWS endpoint"

    def _refused(self, code: str, e: Exception) -> StorageError:
        where = f"artifact root {self.root} (endpoint {self._endpoint()})"
        if code in ("NoSuchBucket", "404"):
            return StorageError(
                f"{where}: bucket {self.name!r} does not exist; create it (e.g. "
                f"aws s3 mb s3://{self.name}) or point registry.artifacts / --artifacts at "
                f"another bucket (and {ENV_ENDPOINT} at its server)"
            )
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
            return StorageError(
                f"{where}: the object store refused the credentials ({code}); set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to a key that may "
                f"read and write s3://{self.name}"
            )
        return StorageError(f"{where}: the object store failed: {e}")

    def check(self) -> None:
        """One request that fails clearly on a missing bucket, bad credentials or endpoint."""
        self.call("head_bucket")

    def get(self, key: str) -> bytes | None:
        """An object's bytes, ``None`` when there is no such key."""
        try:
            return self.call("get_object", Key=key)["Body"].read()
        except Exception as e:
            if is_missing_key(e):
                return None
            raise

    def list(self, prefix: str) -> list[dict[str, Any]]:
        """Every object under a key prefix (``Key``, ``Size``, ``LastModified``)."""
        found: list[dict[str, Any]] = []
        token: dict[str, str] = {}
        while True:
            page = self.call("list_objects_v2", Prefix=prefix, **token)
            found += page.get("Contents", [])
            if not page.get("IsTruncated"):
                return found
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def delete(self, keys: Sequence[str]) -> None:
        """Delete these keys (missing ones are no error), 1000 per request."""
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self.call("delete_objects", Delete={"Objects": batch, "Quiet": True})
