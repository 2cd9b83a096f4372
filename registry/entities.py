"""Plain, immutable records returned by the store.

These are what callers see: no SQLAlchemy session, no lazy loading, safe to pass between threads
and processes. The store builds them from rows (``registry.rows``) at the end of each managed
session, so they never hold a database connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Well-known lineage relations; any lower_snake_case word is accepted (see names.RELATION_RULE).
CONTINUED_FROM = "continued_from"
"""Child was trained starting from the parent's weights (per-task warm start)."""
QUANTIZED_FROM = "quantized_from"
"""Child is a lower-bit encoding of the parent."""
MERGED_FROM = "merged_from"
"""Child combines several parents (one edge per parent)."""
EXPORTED_FROM = "exported_from"
"""Child is the parent converted to another file format (e.g. PEFT LoKr)."""


@dataclass(frozen=True)
class BaseModel:
    """A base (backbone) model adapters are trained on.

    Attributes:
        name: hub id or local name, e.g. ``"sentence-transformers/all-MiniLM-L6-v2"``.
        revision: hub revision or content hash of the weights; ``None`` when unpinned.
        description: free text.
        created_at: UTC registration time.
    """

    name: str
    revision: str | None
    description: str | None
    created_at: datetime


@dataclass(frozen=True)
class Task:
    """A task of the continual stream (e.g. ``"arc-easy"``)."""

    name: str
    description: str | None
    created_at: datetime


@dataclass(frozen=True)
class Adapter:
    """A named line of adapter versions for one task on one base model.

    Attributes:
        name: unique adapter name.
        task: task name.
        base_model: base model name.
        description: free text.
        created_at: UTC registration time.
        latest_version: highest version number ever allocated (0 before the first version);
            numbers are never reused, even after a delete.
    """

    name: str
    task: str
    base_model: str
    description: str | None
    created_at: datetime
    latest_version: int


@dataclass(frozen=True)
class AdapterVersion:
    """One immutable adapter artifact plus its metadata.

    Attributes:
        adapter: adapter name.
        number: version number within the adapter, starting at 1.
        task: task name (from the adapter).
        base_model: base model name (from the adapter).
        method: adapter method, e.g. ``"kron"`` or ``"lora"``.
        a_out: Kronecker factor rows (``None`` for methods without it).
        a_in: Kronecker factor columns (``None`` for methods without it).
        r: rank of the low-rank factor.
        alpha: scaling numerator (scale = alpha / r).
        bits: storage precision of the weights (32, 16, 8, 4, ...).
        param_count: trainable parameters in the adapter.
        artifact_location: path of the artifact relative to the artifact root.
        sha256: content hash of the artifact (see ``registry.artifacts.tree_sha256``).
        size_bytes: total size of the artifact's files.
        metrics: metric name -> value (e.g. ``{"acc": 0.61}``).
        mlflow_run_id: MLflow run that produced it, if any.
        config: free JSON (the training/adapter config).
        created_at: UTC registration time.
        tags: free key/value tags.
        aliases: alias names pointing at this version (``latest`` included when it does).
    """

    adapter: str
    number: int
    task: str
    base_model: str
    method: str
    a_out: int | None
    a_in: int | None
    r: int | None
    alpha: float | None
    bits: int
    param_count: int | None
    artifact_location: str
    sha256: str
    size_bytes: int
    metrics: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        """The canonical reference ``ADAPTER:NUMBER``."""
        return f"{self.adapter}:{self.number}"


@dataclass(frozen=True)
class LineageEntry:
    """One edge met while walking the lineage DAG away from a start version.

    For ``ancestors``: ``version`` is a parent of ``via`` (``via --relation--> version``).
    For ``descendants``: ``version`` is a child of ``via`` (``version --relation--> via``).

    Attributes:
        version: reference ``ADAPTER:NUMBER`` of the version reached.
        relation: the edge's relation, e.g. ``"continued_from"``.
        depth: shortest number of edges from the start version to ``version`` along this walk
            (1 = direct parent/child).
        via: reference of the version on the other end of the edge.
    """

    version: str
    relation: str
    depth: int
    via: str


@dataclass(frozen=True)
class VerificationResult:
    """Outcome of re-hashing one version's artifact.

    Attributes:
        version: reference ``ADAPTER:NUMBER``.
        ok: whether the artifact exists and its hash matches.
        expected: recorded sha256.
        actual: sha256 computed now (``None`` when the artifact is missing).
        path: absolute path that was checked.
        message: empty when ``ok``; otherwise why not.
        problems: when not ``ok``, one phrase per missing / extra / different file (or
            ``artifact directory is missing``, or why the file cannot be named).
    """

    version: str
    ok: bool
    expected: str
    actual: str | None
    path: str
    message: str = ""
    problems: tuple[str, ...] = ()
