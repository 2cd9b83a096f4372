"""Re-hashing stored artifacts into :class:`VerificationResult` rows (``RegistryStore.verify``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from registry.backend import ArtifactBackend
from registry.entities import AdapterVersion, VerificationResult
from registry.errors import HashMismatch, InvalidValue

T = TypeVar("T")


def verify_one(artifacts: ArtifactBackend, v: AdapterVersion) -> VerificationResult:
    """One version's result; a bad row (location outside the root, unreadable files) is a
    failed result too, so one bad row never hides the others."""
    try:
        path = str(artifacts.path(v.artifact_location))
        actual = artifacts.verify(v.artifact_location, v.sha256)
        return VerificationResult(v.ref, True, v.sha256, actual, path)
    except HashMismatch as e:
        return VerificationResult(v.ref, False, e.expected, e.actual, e.path, e.message, e.problems)
    except (InvalidValue, OSError) as e:
        msg = e.message if isinstance(e, InvalidValue) else str(e)
        return VerificationResult(v.ref, False, v.sha256, None, v.artifact_location, msg, (msg,))


def progress_bar(items: Sequence[T], enabled: bool, desc: str) -> Sequence[T] | Iterator[T]:
    """``items``, wrapped in a tqdm bar on stderr when ``enabled``."""
    if not enabled:
        return items
    from tqdm import tqdm  # only the CLI asks for bars; keep the import off the library path

    return tqdm(items, desc=desc, unit="artifact")
