"""kroncl adapter registry: versioned adapter artifacts, lineage and aliases in SQL.

Three layers, as in MLflow's model registry:

* ``registry.entities`` - plain frozen dataclasses callers see;
* ``registry.rows``     - SQLAlchemy rows (created by Alembic migrations in
  ``registry/migrations``);
* ``registry.store``    - :class:`RegistryStore`, the only public code touching rows (a facade
  over ``registry.catalog``, ``versions``, ``search``, ``lineage``, ``labels``).

Artifacts (adapter directories or files) live in a content-addressed :class:`ArtifactStore` and
are verified by sha256 whenever they are fetched; the artifact root is a folder or, given as
``s3://bucket/prefix``, an S3-compatible object store (:mod:`registry.s3store`, fetched through a
verified local cache). Database backends: SQLite by default
(``sqlite:///runs/registry.db``), PostgreSQL by URL (``postgresql+psycopg://...``).

This package imports neither torch nor ``kroncl``: it stores metadata, lineage, hashes and
file locations, never tensors. CLI: ``python -m registry --help``.

Example::

    store = RegistryStore("sqlite:///runs/registry.db")
    store.register_base_model("sentence-transformers/all-MiniLM-L6-v2", revision="abc123")
    store.register_task("arc-easy")
    store.register_adapter("arc-easy-kron", "arc-easy", "sentence-transformers/all-MiniLM-L6-v2")
    v = store.register_version("arc-easy-kron", "out/adapter", method="kron", a_out=4, a_in=4,
                               r=8, alpha=16, bits=32, metrics={"acc": 0.61})
    store.set_alias("arc-easy-kron", "production", v.number)
    path = store.fetch_artifact("arc-easy-kron@production")   # verified directory
"""

from registry.artifacts import ArtifactStore, StoredArtifact, hash_artifact, tree_sha256
from registry.entities import (
    CONTINUED_FROM,
    EXPORTED_FROM,
    MERGED_FROM,
    QUANTIZED_FROM,
    Adapter,
    AdapterVersion,
    BaseModel,
    LineageEntry,
    Task,
    VerificationResult,
)
from registry.errors import (
    AlreadyExists,
    Conflict,
    DatabaseError,
    HashMismatch,
    InvalidName,
    InvalidValue,
    NotFound,
    RegistryError,
    SchemaTooNew,
    StorageError,
)
from registry.names import LATEST, VersionRef, parse_ref
from registry.store import RegistryStore

__all__ = [
    "CONTINUED_FROM",
    "EXPORTED_FROM",
    "LATEST",
    "MERGED_FROM",
    "QUANTIZED_FROM",
    "Adapter",
    "AdapterVersion",
    "AlreadyExists",
    "ArtifactStore",
    "BaseModel",
    "Conflict",
    "DatabaseError",
    "HashMismatch",
    "InvalidName",
    "InvalidValue",
    "LineageEntry",
    "NotFound",
    "RegistryError",
    "RegistryStore",
    "SchemaTooNew",
    "StorageError",
    "StoredArtifact",
    "Task",
    "VerificationResult",
    "VersionRef",
    "hash_artifact",
    "parse_ref",
    "tree_sha256",
]
