"""Registry errors: one base class with a stable machine-readable ``code``.

Every error the store raises is a :class:`RegistryError`; database exceptions are translated into
these in :meth:`registry.session.Sessions.session`, so callers never need to catch
SQLAlchemy types. Messages name the offending value and say what to change.
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base class for every registry error.

    Attributes:
        code: stable identifier for programs (``"NOT_FOUND"``, ``"ALREADY_EXISTS"``, ...).
        message: the human-readable message (also ``str(err)``).
        retryable: whether running the same call again may succeed (lock timeouts,
            serialization failures, lost get-or-create races); the store retries these itself.
    """

    code: str = "REGISTRY_ERROR"
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(RegistryError):
    """A named record (base model, task, adapter, version, alias, tag, artifact) does not exist."""

    code = "NOT_FOUND"


class AlreadyExists(RegistryError):
    """A record with the same identity exists and cannot be created again."""

    code = "ALREADY_EXISTS"


class Conflict(RegistryError):
    """The request contradicts stored state (dependents exist, a cycle, mismatched identity)."""

    code = "CONFLICT"


class HashMismatch(RegistryError):
    """An artifact's content no longer matches the sha256 recorded for it.

    Attributes:
        expected: the recorded sha256.
        actual: the sha256 computed now (``None`` when the artifact is missing).
        path: the artifact path that was checked.
        problems: one phrase per file that is missing, extra or different (or why that cannot
            be told); empty when not known.
    """

    code = "HASH_MISMATCH"

    def __init__(
        self,
        message: str,
        *,
        expected: str,
        actual: str | None,
        path: str,
        problems: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual
        self.path = path
        self.problems = problems


class InvalidName(RegistryError):
    """A name or reference does not follow the naming rule it is checked against."""

    code = "INVALID_NAME"


class InvalidValue(RegistryError):
    """A field value is out of range or of the wrong kind (bits, rank, metric values, ...)."""

    code = "INVALID_VALUE"


class SchemaTooNew(RegistryError):
    """The database was migrated by newer code than this one; refusing to touch it.

    Attributes:
        database_revision: the Alembic revision stamped in the database.
        code_head: the newest revision this code knows.
    """

    code = "SCHEMA_TOO_NEW"

    def __init__(self, message: str, *, database_revision: str, code_head: str) -> None:
        super().__init__(message)
        self.database_revision = database_revision
        self.code_head = code_head


class DatabaseError(RegistryError):
    """The database failed in a way the registry cannot attribute to the request
    (unreachable server, locked file after all retries, ...)."""

    code = "DATABASE_ERROR"


class StorageError(RegistryError):
    """The artifact store cannot be used: an object store's bucket is missing, the credentials
    are refused or absent, or its endpoint cannot be reached. The message names the artifact
    root and what to set (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...)."""

    code = "STORAGE_ERROR"
