"""Lineage DAG: ancestors/descendants with depth and relation, cycle refusal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from registry import AlreadyExists, Conflict, LineageEntry, RegistryStore

MakeArtifact = Callable[..., Path]


@pytest.fixture
def dag(populated: RegistryStore, make_artifact: MakeArtifact) -> RegistryStore:
    """Hand-built DAG (child --relation--> parent)::

    arc-kron:1 <-continued_from- arc-kron:2 <-continued_from- arc-kron:3
                                    ^                            ^
                                    | quantized_from             | merged_from
                                 q4:1 <------- merged_from ---- merged:1
    """
    s = populated
    s.register_adapter("q4", "arc-easy", "org/tiny-bert")
    s.register_adapter("merged", "arc-easy", "org/tiny-bert")

    def reg(adapter: str, content: str, parents: list[tuple[str, str]]) -> None:
        s.register_version(adapter, make_artifact(content), method="kron", parents=parents)

    reg("arc-kron", "1", [])
    reg("arc-kron", "2", [("arc-kron:1", "continued_from")])
    reg("arc-kron", "3", [("arc-kron:2", "continued_from")])
    reg("q4", "q", [("arc-kron:2", "quantized_from")])
    reg("merged", "m", [("arc-kron:3", "merged_from"), ("q4:1", "merged_from")])
    return s


def E(version: str, relation: str, depth: int, via: str) -> LineageEntry:
    return LineageEntry(version=version, relation=relation, depth=depth, via=via)


def test_ancestors_with_depth_relation_and_every_path(dag: RegistryStore) -> None:
    assert dag.ancestors("merged:1") == [
        E("arc-kron:3", "merged_from", 1, "merged:1"),
        E("q4:1", "merged_from", 1, "merged:1"),
        E("arc-kron:2", "continued_from", 2, "arc-kron:3"),
        E("arc-kron:2", "quantized_from", 2, "q4:1"),
        E("arc-kron:1", "continued_from", 3, "arc-kron:2"),
    ]
    assert dag.ancestors("arc-kron:1") == []


def test_descendants_with_shortest_depth(dag: RegistryStore) -> None:
    assert dag.descendants("arc-kron:1") == [
        E("arc-kron:2", "continued_from", 1, "arc-kron:1"),
        E("arc-kron:3", "continued_from", 2, "arc-kron:2"),
        E("q4:1", "quantized_from", 2, "arc-kron:2"),
        E("merged:1", "merged_from", 3, "arc-kron:3"),
        E("merged:1", "merged_from", 3, "q4:1"),
    ]


def test_max_depth_and_alias_refs(dag: RegistryStore) -> None:
    assert [e.version for e in dag.descendants("arc-kron:1", max_depth=1)] == ["arc-kron:2"]
    dag.set_alias("arc-kron", "production", 2)
    assert [e.version for e in dag.ancestors("arc-kron@production")] == ["arc-kron:1"]
    assert dag.ancestors("arc-kron:3", max_depth=0) == []


def test_cycles_self_loops_and_duplicate_edges_are_refused(dag: RegistryStore) -> None:
    with pytest.raises(Conflict) as info:
        dag.add_lineage("arc-kron:1", "merged:1", "continued_from")
    assert info.value.code == "CONFLICT"
    assert "would make a cycle" in str(info.value)
    assert "merged:1 -> arc-kron:3 -> arc-kron:2 -> arc-kron:1" in str(info.value)

    with pytest.raises(Conflict, match="to itself"):
        dag.add_lineage("q4:1", "q4:1", "continued_from")
    with pytest.raises(AlreadyExists) as dup:
        dag.add_lineage("q4:1", "arc-kron:2", "quantized_from")
    assert dup.value.code == "ALREADY_EXISTS"
    assert "q4:1 -> arc-kron:2 already exists" in str(dup.value)

    # A new edge that keeps the graph acyclic is fine and shows up in the walks.
    dag.add_lineage("q4:1", "arc-kron:1", "exported_from")
    assert E("arc-kron:1", "exported_from", 1, "q4:1") in dag.ancestors("q4:1")
    # The refused edges were not written.
    assert dag.ancestors("arc-kron:1") == []
