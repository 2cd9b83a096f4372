"""Lineage edges between versions (``child --relation--> parent``) and walks over them.

The graph stays acyclic: :func:`add_lineage` checks, in the same transaction, that the child
is not already an ancestor of the parent; on PostgreSQL an advisory lock serialises those
checks with concurrent edge inserts. Walks are one recursive CTE, capped at
``MAX_LINEAGE_DEPTH``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Integer, func, literal_column, select, text
from sqlalchemy.orm import Session

from registry.entities import LineageEntry
from registry.errors import AlreadyExists, Conflict
from registry.lookups import RefLike, version_row
from registry.rows import SqlAdapter, SqlAdapterVersion, SqlLineageEdge

MAX_LINEAGE_DEPTH = 10_000
"""Walks stop here: a guard against a cycle planted in the database behind the store's back."""

_PG_LINEAGE_LOCK = 0x6B726F6E636C02  # serialises cycle checks with edge inserts on PostgreSQL


def add_lineage(s: Session, dialect: str, child: RefLike, parent: RefLike, relation: str) -> None:
    """Insert one edge; Conflict on a self-link or a cycle, AlreadyExists on a repeat."""
    if dialect == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LINEAGE_LOCK})
    crow, prow = version_row(s, child), version_row(s, parent)
    cref, pref = f"{crow.adapter.name}:{crow.number}", f"{prow.adapter.name}:{prow.number}"
    if crow.id == prow.id:
        raise Conflict(f"cannot link {cref} to itself: lineage must stay acyclic")
    if s.get(SqlLineageEdge, (crow.id, prow.id)) is not None:
        raise AlreadyExists(f"lineage edge {cref} -> {pref} already exists")
    # A cycle appears iff the child is already an ancestor of the parent.
    path = _lineage_path(_walk(s, prow.id, up=True, max_depth=None), pref, cref)
    if path:
        raise Conflict(
            f"cannot add {cref} --{relation}--> {pref}: {pref} already derives from "
            f"{cref} ({' -> '.join(path)}), so the edge would make a cycle"
        )
    s.add(SqlLineageEdge(child_id=crow.id, parent_id=prow.id, relation=relation))


def ancestors(s: Session, ref: RefLike, max_depth: int | None) -> list[LineageEntry]:
    return _walk(s, version_row(s, ref).id, up=True, max_depth=max_depth)


def descendants(s: Session, ref: RefLike, max_depth: int | None) -> list[LineageEntry]:
    return _walk(s, version_row(s, ref).id, up=False, max_depth=max_depth)


def _walk(s: Session, start_id: int, *, up: bool, max_depth: int | None) -> list[LineageEntry]:
    """Recursive CTE over lineage edges from ``start_id`` (up: towards parents)."""
    E = SqlLineageEdge
    near, far = (E.child_id, E.parent_id) if up else (E.parent_id, E.child_id)
    cap = min(max_depth if max_depth is not None else MAX_LINEAGE_DEPTH, MAX_LINEAGE_DEPTH)
    if cap < 1:
        return []
    walk = (
        select(
            near.label("via"),
            far.label("node"),
            E.relation.label("relation"),
            literal_column("1", Integer).label("depth"),
        )
        .where(near == start_id)
        .cte("walk", recursive=True)
    )
    step = (
        select(near, far, E.relation, walk.c.depth + 1)
        .join(walk, near == walk.c.node)
        .where(walk.c.depth < cap)
    )
    walk = walk.union(step)
    edges = s.execute(
        select(walk.c.via, walk.c.node, walk.c.relation, func.min(walk.c.depth)).group_by(
            walk.c.via, walk.c.node, walk.c.relation
        )
    ).all()
    ids = {i for via, node, _, _ in edges for i in (via, node)}
    names = {
        vid: f"{a}:{n}"
        for vid, a, n in s.execute(
            select(SqlAdapterVersion.id, SqlAdapter.name, SqlAdapterVersion.number)
            .join(SqlAdapter, SqlAdapter.id == SqlAdapterVersion.adapter_id)
            .where(SqlAdapterVersion.id.in_(ids))
        )
    }
    # Report each edge at the depth its far end is first reached.
    node_depth: dict[int, int] = {}
    for _, node, _, depth in edges:
        node_depth[node] = min(depth, node_depth.get(node, depth))
    entries = [
        LineageEntry(version=names[node], relation=rel, depth=node_depth[node], via=names[via])
        for via, node, rel, _ in edges
    ]
    return sorted(entries, key=lambda e: (e.depth, e.version, e.via))


def _lineage_path(ancestors: Sequence[LineageEntry], start: str, goal: str) -> list[str]:
    """Shortest ``start -> ... -> goal`` path along ancestor entries, ``[]`` when unreachable."""
    parents: dict[str, list[str]] = {}
    for e in ancestors:
        parents.setdefault(e.via, []).append(e.version)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for parent in sorted(parents.get(node, [])):
                if parent not in previous and parent != start:
                    previous[parent] = node
                    nxt.append(parent)
        frontier = nxt
    if goal not in previous:
        return []
    path = [goal]
    while path[-1] != start:
        path.append(previous[path[-1]])
    return path[::-1]
