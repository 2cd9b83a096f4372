"""Garbage collection of the artifact root: what no version row needs any more.

Three kinds of leftovers are found (:func:`collect`):

* **orphan objects** -- ``objects/ab/<sha>/`` (and its ``.manifest.json``) that no version row
  references, e.g. left by a writer killed between publishing and committing its row;
* **staging leftovers** in ``tmp/`` -- folders of dead writers *on this host* (their pid no
  longer runs), and ownerless old-format folders older than the grace period. Live writers'
  folders are never touched; other hosts' folders only with ``include_other_hosts`` (their pids
  cannot be checked from here, so only age protects a slow writer there). Names this store does
  not write are reported and left alone;
* **rows whose artifact directory is missing** -- reported only. With ``delete_missing_rows``
  they are deleted like ``delete`` would (refused when lineage or aliases depend on them): the
  row is the only record of metrics and lineage, and a wrong ``--artifacts`` root or an
  unmounted disk makes *every* row look missing, so this is never done as a side effect.

Safety against concurrent writers: a writer publishes an object and commits its row while
holding ``ArtifactStore.lock(sha)``. Removal takes the same lock and re-reads the database
under it, so an object whose row commits meanwhile is kept. Objects (and staging folders under
the age rules) younger than ``grace_s`` are skipped as well: the lock is an ``flock``, which is
per host and unreliable on NFS, so the age is the only guard against a writer on another host.
The age is measured from the later of mtime and ctime, since publishing (a rename) updates
the ctime. With ``apply=False`` (the default) nothing is changed.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from registry import manifest
from registry.artifacts import _LEGACY, _OWNED, ArtifactStore, _hostname, _pid_alive
from registry.entities import AdapterVersion
from registry.errors import InvalidValue, RegistryError

DEFAULT_GRACE_S = 3600


@dataclass(frozen=True)
class GcItem:
    """One thing ``gc`` found.

    Attributes:
        kind: ``orphan-object``, ``orphan-manifest``, ``staging``, ``missing-artifact``,
            ``unknown``.
        path: relative to the artifact root (for ``missing-artifact``: the row's location).
        size_bytes: bytes it occupies (0 for a missing artifact).
        action: ``remove`` (to be / was removed), ``keep`` or ``report``; ``removed`` once done.
        reason: why, in words.
        version: ``ADAPTER:N`` for ``missing-artifact`` rows.
    """

    kind: str
    path: str
    size_bytes: int
    action: str
    reason: str
    version: str | None = None


@dataclass(frozen=True)
class GcReport:
    """What ``gc`` found (and, with ``applied``, did)."""

    items: tuple[GcItem, ...]
    applied: bool

    @property
    def reclaimable_bytes(self) -> int:
        """Bytes of the items marked (or done) for removal."""
        return sum(i.size_bytes for i in self.items if i.action in ("remove", "removed"))


def checked_clock(grace_s: float, now: float | None) -> float:
    """``now`` (default: the time) after refusing a grace that is not seconds >= 0; both stores' gc."""
    if isinstance(grace_s, bool) or not isinstance(grace_s, (int, float)) or not grace_s >= 0:
        raise InvalidValue(f"grace={grace_s!r}: expected a number of seconds >= 0")
    return time.time() if now is None else now


def collect(
    artifacts: ArtifactStore,
    versions: Sequence[AdapterVersion],
    is_referenced: Callable[[str], bool],
    delete_row: Callable[[str], object],
    *,
    apply: bool = False,
    grace_s: float = DEFAULT_GRACE_S,
    include_other_hosts: bool = False,
    delete_missing_rows: bool = False,
    now: float | None = None,
    before_lock: Callable[[str], None] | None = None,
) -> GcReport:
    """Find (and with ``apply`` remove) leftovers; rules in the module docstring.

    Args:
        versions: every version row, a snapshot taken *before* the scan.
        is_referenced: fresh database lookup "does any row reference this sha", called under
            the sha's lock right before removing it.
        delete_row: deletes a version by ref (for ``delete_missing_rows``).
        before_lock: called with the sha just before its lock is taken (a test seam).

    Raises:
        InvalidValue: bad ``grace_s``, or ``apply`` on an empty database while objects exist
            (a wrong ``--url`` would otherwise delete every artifact).
    """
    now = checked_clock(grace_s, now)
    items: list[GcItem] = []
    items += _objects(artifacts, {v.sha256 for v in versions}, grace_s, now)
    if apply and not versions and any(i.kind == "orphan-object" for i in items):
        raise InvalidValue(
            "refusing to apply gc: the database holds no versions but the artifact root "
            f"{str(artifacts.root)!r} holds objects; check --url/--artifacts, "
            "or delete the objects by hand if that is really intended"
        )
    items += _staging(artifacts, apply, grace_s, now, include_other_hosts)
    items += _missing_rows(artifacts, versions, apply and delete_missing_rows, delete_row)
    done = [_act(artifacts, i, apply, is_referenced, before_lock) for i in items]
    return GcReport(tuple(done), apply)


def _objects(artifacts: ArtifactStore, shas: set[str], grace_s: float, now: float) -> list[GcItem]:
    """Unreferenced entries under ``objects/`` (removal happens later, in :func:`_act`)."""
    found: list[GcItem] = []
    for fan in sorted((artifacts.root / "objects").iterdir()):
        entries = sorted(fan.iterdir()) if fan.is_dir() and not fan.is_symlink() else [fan]
        for p in entries:
            item = _object_item(artifacts, p, shas, grace_s, now)
            if item is not None:
                found.append(item)
    return found


def _object_item(
    artifacts: ArtifactStore, p: Path, shas: set[str], grace_s: float, now: float
) -> GcItem | None:
    """The verdict on one entry of ``objects/ab/``; ``None`` when a row needs it."""
    rel = p.relative_to(artifacts.root).as_posix()
    name = p.name.removesuffix(manifest.SUFFIX)
    is_manifest = name != p.name
    if not _is_sha(name) or p.is_symlink() or p.is_dir() == is_manifest:
        return GcItem("unknown", rel, _size(p), "report", "not written by this store; left alone")
    if name in shas or (is_manifest and p.with_name(name).is_dir()):
        return None  # referenced, or a manifest that goes with its object
    kind = "orphan-manifest" if is_manifest else "orphan-object"
    if _age(p, now) < grace_s:
        return GcItem(kind, rel, _size(p), "keep", f"younger than the grace period ({grace_s:g}s)")
    return GcItem(kind, rel, _size(p), "remove", "no version references it")


def _act(
    artifacts: ArtifactStore,
    item: GcItem,
    apply: bool,
    is_referenced: Callable[[str], bool],
    before_lock: Callable[[str], None] | None,
) -> GcItem:
    """Remove one orphan object/manifest under its sha lock, after re-reading the database."""
    if not apply or item.action != "remove" or not item.kind.startswith("orphan-"):
        return item
    sha = Path(item.path).name.removesuffix(manifest.SUFFIX)
    if before_lock is not None:
        before_lock(sha)
    with artifacts.lock(sha):
        if is_referenced(sha):
            return replace(item, action="keep", reason="a version row committed meanwhile")
        if item.kind == "orphan-object":
            artifacts.remove(sha)
        else:
            (artifacts.root / item.path).unlink(missing_ok=True)
    return replace(item, action="removed")


def _staging(
    artifacts: ArtifactStore, apply: bool, grace_s: float, now: float, other_hosts: bool
) -> list[GcItem]:
    """Leftovers in ``tmp/``; removed right away with ``apply`` (no row can refer to them)."""
    found = []
    for p in sorted((artifacts.root / "tmp").iterdir()):
        rel, size = p.relative_to(artifacts.root).as_posix(), _size(p)
        action, reason = _staging_verdict(p, now, grace_s, other_hosts)
        if apply and action == "remove":
            shutil.rmtree(p, ignore_errors=True)
            action, reason = ("keep", "could not be removed") if p.exists() else ("removed", reason)
        kind = "unknown" if action == "report" else "staging"
        found.append(GcItem(kind, rel, size, action, reason))
    return found


def _staging_verdict(p: Path, now: float, grace_s: float, other_hosts: bool) -> tuple[str, str]:
    """``(action, reason)`` for one entry of ``tmp/``."""
    if p.is_symlink() or not p.is_dir():
        return "report", "not a staging folder; left alone"
    old = _age(p, now) >= grace_s
    young = "younger than the grace period"
    owned = _OWNED.match(p.name)
    if owned and owned["host"] == _hostname():
        pid = int(owned["pid"])
        if _pid_alive(pid):
            return "keep", f"writer pid {pid} is alive"
        return "remove", f"writer pid {pid} is dead"
    if owned:
        if not other_hosts:
            return "keep", f"belongs to host {owned['host']!r} (pass --include-other-hosts)"
        return ("remove", "other host's folder, old") if old else ("keep", f"other host's, {young}")
    if _LEGACY.match(p.name):
        return ("remove", "ownerless old-format folder") if old else ("keep", f"ownerless, {young}")
    return "report", "not a name this store writes; left alone"


def _missing_rows(
    artifacts: ArtifactStore,
    versions: Sequence[AdapterVersion],
    delete: bool,
    delete_row: Callable[[str], object],
) -> list[GcItem]:
    """Rows whose artifact directory is gone: reported; deleted only when asked to."""
    found = []
    for v in versions:
        try:
            if artifacts.path(v.artifact_location).is_dir():
                continue
            reason = "artifact directory is missing"
        except InvalidValue as e:
            reason = e.message
        action = "report"
        if delete:
            try:
                delete_row(v.ref)
                action = "removed"
            except RegistryError as e:
                action, reason = "keep", f"{reason}; row not deleted: {e.message}"
        else:
            reason += "; row kept (pass --delete-missing-rows --apply to delete it)"
        found.append(GcItem("missing-artifact", v.artifact_location, 0, action, reason, v.ref))
    return found


def _is_sha(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _age(p: Path, now: float) -> float:
    """Seconds since ``p`` last changed or was renamed into place (newest of mtime and ctime)."""
    st = p.lstat()
    return now - max(st.st_mtime, st.st_ctime)


def _size(p: Path) -> int:
    """Bytes of the files under ``p`` (not following symlinks)."""
    if p.is_symlink() or not p.is_dir():
        return p.lstat().st_size
    return sum((Path(d) / f).lstat().st_size for d, _, fs in os.walk(p) for f in fs)
