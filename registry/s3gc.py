"""Garbage collection of an ``s3://`` artifact root (``RegistryStore.gc`` on an object store).

The same report as :func:`registry.gc.collect`, from one listing of the prefix:

* **orphan objects** -- published objects (manifest present) no version row references, and
  ``objects/`` keys with no manifest (a writer killed between copying and writing the manifest:
  never visible, so never referenced); removed under the sha's lock after re-reading the database,
  and only once older than ``grace_s`` (the lock is per host: age guards other hosts' writers);
* **staging leftovers** -- ``tmp/`` folders whose newest key is older than ``grace_s``, whichever
  host wrote them (another host's pid cannot be checked; age is the only rule);
* **rows whose object has no manifest** -- reported; deleted only with ``delete_missing_rows``.

Keys this store does not write are reported and left alone. ``apply=False`` changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from registry import manifest
from registry.entities import AdapterVersion
from registry.errors import InvalidValue, RegistryError
from registry.gc import DEFAULT_GRACE_S, GcItem, GcReport, checked_clock
from registry.s3store import S3ArtifactStore

_OBJECT_KEY = re.compile(r"^objects/([0-9a-f]{2})/([0-9a-f]{64})(\.manifest\.json|/.+)$")


def collect(
    artifacts: S3ArtifactStore,
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
    """Find (and with ``apply`` remove) leftovers; arguments as :func:`registry.gc.collect`
    (``include_other_hosts`` changes nothing here: every host's ``tmp/`` folder goes by age)."""
    now = checked_clock(grace_s, now)
    base = artifacts._key("")
    objects: dict[str, list[dict[str, Any]]] = {}
    published: set[str] = set()
    items: list[GcItem] = []
    for o in artifacts._s3.list(artifacts._key("objects/")):
        rel = o["Key"][len(base):]
        m = _OBJECT_KEY.match(rel)
        if m is None or m[1] != m[2][:2]:
            items.append(GcItem("unknown", rel, o["Size"], "report", "not written by this store; left alone"))
            continue
        objects.setdefault(m[2], []).append(o)
        if m[3] == manifest.SUFFIX:
            published.add(m[2])
    shas = {v.sha256 for v in versions}
    for sha, objs in sorted(objects.items()):
        if sha in shas and sha in published:
            continue
        location, size = artifacts.location_for(sha), sum(o["Size"] for o in objs)
        reason = "no version references it" if sha in published else "never published (no manifest)"
        if now - max(o["LastModified"].timestamp() for o in objs) < grace_s:
            action, reason = "keep", f"younger than the grace period ({grace_s:g}s)"
        else:
            action = "remove"
        items.append(GcItem("orphan-object", location, size, action, reason))
    if apply and not versions and any(i.kind == "orphan-object" for i in items):
        raise InvalidValue(
            "refusing to apply gc: the database holds no versions but the artifact root "
            f"{artifacts.root!r} holds objects; check --url/--artifacts, "
            "or delete the objects by hand if that is really intended"
        )
    items += _staging(artifacts, apply, grace_s, now)
    for v in versions:
        if v.sha256 in published:
            continue
        action, reason = "report", "object has no manifest (missing)"
        if apply and delete_missing_rows:
            try:
                delete_row(v.ref)
                action = "removed"
            except RegistryError as e:
                action, reason = "keep", f"{reason}; row not deleted: {e.message}"
        else:
            reason += "; row kept (pass --delete-missing-rows --apply to delete it)"
        items.append(GcItem("missing-artifact", v.artifact_location, 0, action, reason, v.ref))
    return GcReport(tuple(_act(artifacts, i, apply, is_referenced, before_lock) for i in items), apply)


def _staging(artifacts: S3ArtifactStore, apply: bool, grace_s: float, now: float) -> list[GcItem]:
    """``tmp/`` folders: removed (with ``apply``) once their newest key is older than ``grace_s``."""
    tmp = artifacts._key("tmp/")
    folders: dict[str, list[dict[str, Any]]] = {}
    for o in artifacts._s3.list(tmp):
        folders.setdefault(o["Key"][len(tmp):].split("/", 1)[0], []).append(o)
    found = []
    for name, objs in sorted(folders.items()):
        size, rel = sum(o["Size"] for o in objs), f"tmp/{name}"
        if now - max(o["LastModified"].timestamp() for o in objs) < grace_s:
            found.append(GcItem("staging", rel, size, "keep", "younger than the grace period"))
            continue
        if apply:
            artifacts._s3.delete([o["Key"] for o in objs])
        found.append(GcItem("staging", rel, size, "removed" if apply else "remove", "upload older than the grace period"))
    return found


def _act(
    artifacts: S3ArtifactStore,
    item: GcItem,
    apply: bool,
    is_referenced: Callable[[str], bool],
    before_lock: Callable[[str], None] | None,
) -> GcItem:
    """Remove one orphan object under its sha lock, after re-reading the database."""
    if not apply or item.action != "remove" or item.kind != "orphan-object":
        return item
    sha = item.path.rsplit("/", 1)[1]
    if before_lock is not None:
        before_lock(sha)
    with artifacts.lock(sha):
        if is_referenced(sha):
            return replace(item, action="keep", reason="a version row committed meanwhile")
        artifacts.remove(sha)
    return replace(item, action="removed")
