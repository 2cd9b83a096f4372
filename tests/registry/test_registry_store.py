"""RegistryStore on SQLite and (marked postgres) PostgreSQL: round trips, queries, error paths."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from registry import (
    LATEST,
    Conflict,
    HashMismatch,
    InvalidName,
    InvalidValue,
    NotFound,
    RegistryStore,
    hash_artifact,
)

MakeArtifact = Callable[..., Path]


def _register(store: RegistryStore, make_artifact: MakeArtifact, content: str, **kw: object):  # type: ignore[no-untyped-def]
    kw.setdefault("method", "kron")
    return store.register_version(kw.pop("adapter", "arc-kron"), make_artifact(content), **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# Entities <-> rows
# ------------------------------------------------------------------------------------------------


def test_version_round_trips_every_field(
    populated: RegistryStore, make_artifact: MakeArtifact
) -> None:
    src = make_artifact("w" * 100, config='{"method": "kron"}')
    before = datetime.now(UTC)
    v = populated.register_version(
        "arc-kron",
        src,
        method="kron",
        a_out=4,
        a_in=2,
        r=8,
        alpha=16.0,
        bits=8,
        param_count=1234,
        metrics={"acc": 0.625, "bwt": -0.05},
        config={"lr": 1e-3, "targets": ["q", "v"], "nested": {"a": None}},
        mlflow_run_id="0123abcd",
        tags={"stage": "dev", "seed": "0"},
    )
    got = populated.get_version("arc-kron:1")
    assert got == v
    assert (got.adapter, got.number, got.task, got.base_model) == (
        "arc-kron",
        1,
        "arc-easy",
        "org/tiny-bert",
    )
    assert (got.method, got.a_out, got.a_in, got.r, got.alpha, got.bits, got.param_count) == (
        "kron",
        4,
        2,
        8,
        16.0,
        8,
        1234,
    )
    assert got.sha256 == hash_artifact(src)[0]
    assert got.size_bytes == 100 + len('{"method": "kron"}')
    assert got.metrics == {"acc": 0.625, "bwt": -0.05}
    assert got.config == {"lr": 1e-3, "targets": ["q", "v"], "nested": {"a": None}}
    assert got.mlflow_run_id == "0123abcd"
    assert got.tags == {"stage": "dev", "seed": "0"}
    assert got.aliases == (LATEST,)
    assert got.created_at is not None and got.created_at.tzinfo is not None
    assert before <= got.created_at <= datetime.now(UTC)
    assert got.ref == "arc-kron:1"
    assert populated.fetch_artifact("arc-kron:1") == populated.artifacts.path(got.artifact_location)


def test_base_model_task_adapter_round_trip_and_get_or_create(populated: RegistryStore) -> None:
    m = populated.get_base_model("org/tiny-bert")
    assert (m.name, m.revision) == ("org/tiny-bert", "rev1")
    assert populated.register_base_model("org/tiny-bert") == m  # get, revision kept
    assert populated.register_task("arc-easy") == populated.get_task("arc-easy")
    a = populated.register_adapter("arc-kron", "arc-easy", "org/tiny-bert")
    assert (a.name, a.task, a.base_model, a.latest_version) == (
        "arc-kron",
        "arc-easy",
        "org/tiny-bert",
        0,
    )
    assert [t.name for t in populated.list_tasks()] == ["arc-easy"]
    assert [b.name for b in populated.list_base_models()] == ["org/tiny-bert"]
    assert [x.name for x in populated.list_adapters(task="arc-easy")] == ["arc-kron"]
    # An unpinned model gets pinned by a later registration with a revision.
    populated.register_base_model("org/other")
    assert populated.register_base_model("org/other", revision="abc").revision == "abc"


# ------------------------------------------------------------------------------------------------
# Error paths: type, code and message
# ------------------------------------------------------------------------------------------------


def test_not_found_errors_name_the_missing_thing(
    populated: RegistryStore, make_artifact: MakeArtifact
) -> None:
    _register(populated, make_artifact, "a")
    cases = [
        (lambda: populated.get_task("nope"), "task 'nope' not found"),
        (lambda: populated.get_base_model("org/nope"), "base model 'org/nope' not found"),
        (lambda: populated.get_adapter("nope"), "adapter 'nope' not found"),
        (
            lambda: populated.get_version("arc-kron:7"),
            "version 'arc-kron:7' not found; adapter 'arc-kron' has versions: 1",
        ),
        (
            lambda: populated.get_version("arc-kron@prod"),
            "alias 'prod' not found for adapter 'arc-kron'; its aliases: latest",
        ),
        (
            lambda: populated.register_adapter("x", "no-task", "org/tiny-bert"),
            "task 'no-task' not found",
        ),
        (lambda: populated.delete_alias("arc-kron", "prod"), "alias 'prod' not found"),
        (lambda: populated.delete_tag("arc-kron:1", "k"), "tag 'k' not set on arc-kron:1"),
        (lambda: populated.search_versions(task="typo"), "task 'typo' not found"),
        (
            lambda: populated.register_version("arc-kron", "/nonexistent/x", method="kron"),
            "does not exist",
        ),
    ]
    for call, message in cases:
        with pytest.raises(NotFound) as info:
            call()
        assert info.value.code == "NOT_FOUND"
        assert message in str(info.value)


def test_latest_of_an_empty_adapter_is_not_found(populated: RegistryStore) -> None:
    with pytest.raises(NotFound, match="'arc-kron' has no versions"):
        populated.get_version("arc-kron")


def test_conflicts_on_identity_mismatch(populated: RegistryStore) -> None:
    with pytest.raises(Conflict) as info:
        populated.register_base_model("org/tiny-bert", revision="rev2")
    assert info.value.code == "CONFLICT"
    assert "'rev1', not 'rev2'" in str(info.value)
    populated.register_task("obqa")
    with pytest.raises(
        Conflict, match="exists for task 'arc-easy' on base model 'org/tiny-bert', not task 'obqa'"
    ):
        populated.register_adapter("arc-kron", "obqa", "org/tiny-bert")


def test_invalid_names_and_values_are_refused_before_writing(
    populated: RegistryStore, make_artifact: MakeArtifact
) -> None:
    src = make_artifact("x")
    bad_calls = [
        (InvalidName, lambda: populated.register_task("../x"), "invalid task name '../x'"),
        (
            InvalidName,
            lambda: populated.register_adapter("a/b", "arc-easy", "org/tiny-bert"),
            "invalid adapter name 'a/b'",
        ),
        (
            InvalidName,
            lambda: populated.register_version("arc-kron", src, method="Kron!"),
            "invalid method 'Kron!'",
        ),
        (
            InvalidName,
            lambda: populated.register_version("arc-kron", src, method="kron", tags={"a b": "x"}),
            "invalid tag key 'a b'",
        ),
        (
            InvalidName,
            lambda: populated.register_version("arc-kron", src, method="kron", metrics={"": 1.0}),
            "invalid metric name ''",
        ),
        (
            InvalidName,
            lambda: populated.register_version(
                "arc-kron", src, method="kron", parents=[("x:1", "Bad")]
            ),
            "invalid lineage relation 'Bad'",
        ),
        (
            InvalidName,
            lambda: populated.register_version("arc-kron", src, method="kron", aliases=["latest"]),
            "alias 'latest' is reserved",
        ),
        (
            InvalidValue,
            lambda: populated.register_version("arc-kron", src, method="kron", bits=0),
            "bits=0",
        ),
        (
            InvalidValue,
            lambda: populated.register_version("arc-kron", src, method="kron", r=-1),
            "r=-1",
        ),
        (
            InvalidValue,
            lambda: populated.register_version(
                "arc-kron", src, method="kron", metrics={"acc": float("nan")}
            ),
            "metric 'acc' has value nan",
        ),
        (
            InvalidValue,
            lambda: populated.register_version(
                "arc-kron", src, method="kron", config={"x": object()}
            ),
            "config is not JSON-serialisable",
        ),
        (
            InvalidValue,
            lambda: populated.register_version("arc-kron", src, method="kron", mlflow_run_id="a b"),
            "invalid MLflow run id 'a b'",
        ),
    ]
    for exc, call, message in bad_calls:
        with pytest.raises(exc) as info:
            call()
        assert message in str(info.value), str(info.value)
    assert populated.search_versions() == []
    assert list((populated.artifacts.root / "objects").rglob("*.safetensors")) == []


def test_hash_mismatch_on_fetch_after_tampering(
    populated: RegistryStore, make_artifact: MakeArtifact
) -> None:
    v = _register(populated, make_artifact, "clean")
    stored = populated.artifacts.path(v.artifact_location)
    (stored / "adapter.safetensors").write_bytes(b"dirty")
    with pytest.raises(HashMismatch) as info:
        populated.fetch_artifact("arc-kron:1")
    assert info.value.code == "HASH_MISMATCH"
    assert info.value.expected == v.sha256 and info.value.actual != v.sha256
    assert str(stored) in str(info.value)
    [result] = populated.verify("arc-kron:1")
    assert not result.ok and result.expected == v.sha256 and result.actual == info.value.actual


# ------------------------------------------------------------------------------------------------
# Search
# ------------------------------------------------------------------------------------------------


def test_search_filters_combine(populated: RegistryStore, make_artifact: MakeArtifact) -> None:
    populated.register_task("obqa")
    populated.register_base_model("org/other")
    populated.register_adapter("obqa-lora", "obqa", "org/other")
    _register(populated, make_artifact, "1", metrics={"acc": 0.4}, bits=32, tags={"stage": "dev"})
    _register(populated, make_artifact, "2", metrics={"acc": 0.6}, bits=8, tags={"stage": "prod"})
    _register(populated, make_artifact, "3", bits=4)  # no metrics at all
    _register(
        populated, make_artifact, "4", adapter="obqa-lora", method="lora", metrics={"acc": 0.9}
    )

    def refs(**kw: object) -> list[str]:
        return [v.ref for v in populated.search_versions(**kw)]  # type: ignore[arg-type]

    assert refs() == ["arc-kron:1", "arc-kron:2", "arc-kron:3", "obqa-lora:1"]
    assert refs(task="obqa") == ["obqa-lora:1"]
    assert refs(base_model="org/tiny-bert") == ["arc-kron:1", "arc-kron:2", "arc-kron:3"]
    assert refs(method="lora") == ["obqa-lora:1"]
    assert refs(bits=8) == ["arc-kron:2"]
    assert refs(metric="acc", min_value=0.5) == ["arc-kron:2", "obqa-lora:1"]
    assert refs(metric="acc", min_value=0.5, max_value=0.7) == ["arc-kron:2"]
    assert refs(min_metrics={"acc": 0.6}) == ["arc-kron:2", "obqa-lora:1"]
    assert refs(tags={"stage": "dev"}) == ["arc-kron:1"]
    assert refs(tags={"stage": None}) == ["arc-kron:1", "arc-kron:2"]
    assert refs(task="arc-easy", metric="acc", min_value=0.5) == ["arc-kron:2"]
    assert refs(limit=2) == ["arc-kron:1", "arc-kron:2"]
    assert refs(adapter="obqa-lora") == ["obqa-lora:1"]
    with pytest.raises(InvalidValue, match="need metric="):
        populated.search_versions(min_value=0.5)


# ------------------------------------------------------------------------------------------------
# Aliases
# ------------------------------------------------------------------------------------------------


def test_alias_set_move_delete_and_dynamic_latest(
    populated: RegistryStore, make_artifact: MakeArtifact
) -> None:
    for i in range(3):
        _register(populated, make_artifact, f"v{i}")
    assert populated.list_aliases("arc-kron") == {"latest": 3}

    v = populated.set_alias("arc-kron", "production", 1)
    assert v.ref == "arc-kron:1" and v.aliases == ("production",)
    assert populated.get_version("arc-kron@production").number == 1

    moved = populated.set_alias("arc-kron", "production", 2)  # move
    assert moved.aliases == ("production",)
    assert populated.get_version("arc-kron:1").aliases == ()
    assert populated.list_aliases("arc-kron") == {"latest": 3, "production": 2}

    with pytest.raises(InvalidName, match="reserved"):
        populated.set_alias("arc-kron", LATEST, 1)
    with pytest.raises(NotFound, match="version 'arc-kron:9' not found"):
        populated.set_alias("arc-kron", "staging", 9)

    # latest follows the highest number, also across deletes.
    assert populated.get_version("arc-kron@latest").number == 3
    populated.delete_version("arc-kron:3")
    assert populated.get_version("arc-kron").number == 2
    assert populated.get_version("arc-kron:2").aliases == ("latest", "production")

    populated.delete_alias("arc-kron", "production")
    with pytest.raises(NotFound, match="alias 'production' not found"):
        populated.get_version("arc-kron@production")


def test_register_version_can_set_aliases(
    populated: RegistryStore, make_artifact: MakeArtifact
) -> None:
    _register(populated, make_artifact, "a", aliases=["staging"])
    v2 = _register(populated, make_artifact, "b", aliases=["staging", "candidate"])
    assert v2.aliases == ("latest", "candidate", "staging")
    assert populated.get_version("arc-kron", alias="staging").number == 2
    assert populated.get_version("arc-kron", 1).aliases == ()


# ------------------------------------------------------------------------------------------------
# Updates and deletes
# ------------------------------------------------------------------------------------------------


def test_tags_run_id_and_metrics_updates(
    populated: RegistryStore, make_artifact: MakeArtifact
) -> None:
    _register(populated, make_artifact, "a", tags={"k": "1"}, metrics={"acc": 0.5})
    assert populated.set_tag("arc-kron:1", "k", "2").tags == {"k": "2"}
    assert populated.set_tag("arc-kron:1", "other", "x").tags == {"k": "2", "other": "x"}
    populated.delete_tag("arc-kron:1", "k")
    assert populated.get_version("arc-kron:1").tags == {"other": "x"}
    assert populated.set_mlflow_run_id("arc-kron:1", "run42").mlflow_run_id == "run42"
    assert [v.ref for v in populated.search_versions(mlflow_run_id="run42")] == ["arc-kron:1"]
    assert populated.set_mlflow_run_id("arc-kron:1", None).mlflow_run_id is None
    assert populated.log_metrics("arc-kron:1", {"bwt": -0.1}).metrics == {"acc": 0.5, "bwt": -0.1}


def test_delete_refuses_dependents_and_pinned_aliases(
    populated: RegistryStore, make_artifact: MakeArtifact
) -> None:
    _register(populated, make_artifact, "a")
    _register(populated, make_artifact, "b", parents=[("arc-kron:1", "continued_from")])
    _register(populated, make_artifact, "c", bits=8, parents=[("arc-kron:1", "quantized_from")])
    with pytest.raises(Conflict) as info:
        populated.delete_version("arc-kron:1")
    assert info.value.code == "CONFLICT"
    assert "arc-kron:2 (continued_from), arc-kron:3 (quantized_from)" in str(info.value)

    populated.set_alias("arc-kron", "production", 3)
    with pytest.raises(Conflict, match="alias\\(es\\) production point at it"):
        populated.delete_version("arc-kron:3")
    populated.delete_alias("arc-kron", "production")

    gone = populated.delete_version("arc-kron:3")
    assert gone.ref == "arc-kron:3"
    assert not populated.artifacts.exists(gone.sha256)
    populated.delete_version("arc-kron:2")
    populated.delete_version("arc-kron:1")  # no dependents left
    assert populated.search_versions() == []
    # Numbers are never reused after a delete.
    assert _register(populated, make_artifact, "d").number == 4


def test_shared_content_is_stored_once_and_kept_while_referenced(
    populated: RegistryStore, make_artifact: MakeArtifact
) -> None:
    v1 = _register(populated, make_artifact, "same")
    v2 = _register(populated, make_artifact, "same")
    assert v1.sha256 == v2.sha256 and v1.artifact_location == v2.artifact_location
    populated.delete_version("arc-kron:1")
    assert populated.fetch_artifact("arc-kron:2").is_dir()  # still referenced by v2
    populated.delete_version("arc-kron:2")
    assert not populated.artifacts.exists(v1.sha256)


def test_single_file_artifacts(populated: RegistryStore, make_artifact: MakeArtifact) -> None:
    v = populated.register_version(
        "arc-kron", make_artifact("one", single_file=True), method="lora", r=4
    )
    path = populated.fetch_artifact(v.ref)
    assert [p.name for p in path.iterdir()] == ["adapter.safetensors"]
    assert (path / "adapter.safetensors").read_bytes() == b"one"
