"""Registry versions mirrored into a real MLflow store (SQLite): LoggedModel + registered-model
version + aliases, idempotent, a failed mirror loses nothing and ``sync-mlflow`` completes it.

Everything is read back from the MLflow store with a fresh client, never from the mirror's
return values alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from registry import RegistryStore
from registry.cli import main
from registry.mlflow_models import LOGGED_MODEL_TAG, MODEL_VERSION_TAG, mirror_version, sync_mlflow


@pytest.fixture
def mlflow_store(tmp_path: Path) -> tuple[str, str]:
    """(tracking URI, run id) of a real SQLite MLflow store with one run in experiment ``kroncl``."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("kroncl", artifact_location=(tmp_path / "mlartifacts").as_uri())
    return uri, client.create_run(exp, run_name="toy").info.run_id


@pytest.fixture
def unreachable(closed_port: int, monkeypatch: pytest.MonkeyPatch) -> str:
    """An MLflow server URI nothing answers on; refused at once (no retries)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    return f"http://127.0.0.1:{closed_port}"


def add_version(store: RegistryStore, make_artifact, run_id: str | None, *, bits: int = 32,
                acc: float = 0.5, content: str = "weights") -> str:
    v = store.register_version("arc-kron", make_artifact(content), method="kron", bits=bits, a_out=2, a_in=2,
                               r=4, alpha=8.0, param_count=96, metrics={"acc": acc}, mlflow_run_id=run_id,
                               tags={"experience": "0"})
    return v.ref


def test_a_version_becomes_a_logged_model_and_a_registered_model_version(populated, make_artifact, mlflow_store):
    uri, run_id = mlflow_store
    ref = add_version(populated, make_artifact, run_id, acc=0.625)
    populated.set_alias("arc-kron", "production", 1)
    mirrored = mirror_version(populated, ref, MlflowClient(uri))

    client = MlflowClient(uri)
    mv = client.get_model_version("arc-kron", mirrored.version)
    assert mv.source == f"models:/{mirrored.model_id}" and mv.run_id == run_id
    sha = populated.get_version(ref).sha256
    assert mv.tags["kroncl.ref"] == "arc-kron:1" and mv.tags["kroncl.sha256"] == sha
    assert client.get_model_version_by_alias("arc-kron", "production").version == mv.version
    model = client.get_logged_model(mirrored.model_id)
    assert str(model.status).endswith("READY") and model.source_run_id == run_id and model.name == "arc-kron"
    assert {k: model.params[k] for k in ("method", "A", "r", "alpha", "bits", "base_model")} == {
        "method": "kron", "A": "2x2", "r": "4", "alpha": "8.0", "bits": "32", "base_model": "org/tiny-bert"}
    assert {m.key: m.value for m in model.metrics} == {"registered/arc-easy/32bit/acc": 0.625}
    assert json.loads(model.tags["mlflow.modelVersions"]) == [{"name": "arc-kron", "version": mv.version}]
    # The adapter files, as the registry stores them — and nothing else (never base weights).
    assert sorted(f.path for f in client.list_logged_model_artifacts(mirrored.model_id)) == [
        "adapter.safetensors", "adapter_config.json"]
    assert [o.model_id for o in client.get_run(run_id).outputs.model_outputs] == [mirrored.model_id]
    # The kroncl version records where it went.
    tags = populated.get_version(ref).tags
    assert tags[LOGGED_MODEL_TAG] == mirrored.model_id and tags[MODEL_VERSION_TAG] == f"arc-kron/{mv.version}"


def test_mirroring_again_creates_nothing(populated, make_artifact, mlflow_store):
    uri, run_id = mlflow_store
    ref = add_version(populated, make_artifact, run_id)
    first = mirror_version(populated, ref, MlflowClient(uri))
    again = mirror_version(populated, ref, MlflowClient(uri))
    assert (again.model_id, again.version, again.created) == (first.model_id, first.version, False)
    client = MlflowClient(uri)
    assert len(client.search_model_versions("name = 'arc-kron'")) == 1
    assert len(client.search_logged_models(experiment_ids=[client.get_run(run_id).info.experiment_id])) == 1


def test_a_mirror_killed_before_finalizing_is_redone_not_duplicated(populated, make_artifact, mlflow_store):
    uri, run_id = mlflow_store
    ref = add_version(populated, make_artifact, run_id)
    client = MlflowClient(uri)
    exp_id = client.get_run(run_id).info.experiment_id
    half = client.create_logged_model(exp_id, name="arc-kron", tags={"kroncl.ref": ref})  # PENDING, no files
    mirrored = mirror_version(populated, ref, client)
    models = client.search_logged_models(experiment_ids=[exp_id])
    assert [m.model_id for m in models] == [mirrored.model_id] and mirrored.model_id != half.model_id


def test_quantized_and_fp32_versions_are_two_versions_of_one_registered_model(populated, make_artifact,
                                                                              mlflow_store):
    uri, run_id = mlflow_store
    add_version(populated, make_artifact, run_id, bits=32, acc=0.5)
    add_version(populated, make_artifact, run_id, bits=8, acc=0.4, content="packed")
    res = sync_mlflow(populated, MlflowClient(uri))
    assert res.failed == [] and [m.ref for m in res.mirrored] == ["arc-kron:1", "arc-kron:2"]
    client = MlflowClient(uri)
    by_ref = {mv.tags["kroncl.ref"]: mv for mv in client.search_model_versions("name = 'arc-kron'")}
    assert sorted(by_ref) == ["arc-kron:1", "arc-kron:2"]
    bits = {ref: client.get_logged_model(mv.source.removeprefix("models:/")).params["bits"]
            for ref, mv in by_ref.items()}
    assert bits == {"arc-kron:1": "32", "arc-kron:2": "8"}


def test_a_failed_mirror_loses_nothing_and_sync_completes_it(populated, make_artifact, mlflow_store, unreachable):
    uri, run_id = mlflow_store
    ref = add_version(populated, make_artifact, run_id)
    populated.set_alias("arc-kron", "production", 1)
    res = sync_mlflow(populated, MlflowClient(unreachable))
    assert res.mirrored == [] and [r for r, _ in res.failed] == [ref]
    v = populated.get_version(ref)
    assert MODEL_VERSION_TAG not in v.tags and populated.fetch_artifact(ref).is_dir()  # the version is intact

    res = sync_mlflow(populated, MlflowClient(uri))
    assert res.failed == [] and [m.ref for m in res.mirrored] == [ref] and res.aliases == {"arc-kron": {"production": "1"}}
    assert MlflowClient(uri).get_model_version_by_alias("arc-kron", "production").tags["kroncl.ref"] == ref
    again = sync_mlflow(populated, MlflowClient(uri))  # nothing missing any more
    assert (again.mirrored, again.failed) == ([], [])


def test_sync_repoints_an_alias_moved_in_the_registry(populated, make_artifact, mlflow_store):
    uri, run_id = mlflow_store
    add_version(populated, make_artifact, run_id)
    add_version(populated, make_artifact, run_id, content="second")
    populated.set_alias("arc-kron", "production", 1)
    sync_mlflow(populated, MlflowClient(uri))
    populated.set_alias("arc-kron", "production", 2)
    assert sync_mlflow(populated, MlflowClient(uri)).aliases == {"arc-kron": {"production": "2"}}
    mv = MlflowClient(uri).get_model_version_by_alias("arc-kron", "production")
    assert mv.tags["kroncl.ref"] == "arc-kron:2"


def test_sync_mlflow_command(store_paths, make_artifact, mlflow_store, capsys):
    url, artifacts, store = store_paths
    uri, run_id = mlflow_store
    add_version(store, make_artifact, run_id)
    reg = ["--url", url, "--artifacts", artifacts]
    assert main([*reg, "alias", "set", "arc-kron", "staging", "1"]) == 0
    assert "sync-mlflow" not in capsys.readouterr().out  # not mirrored yet: nothing to say
    assert main([*reg, "sync-mlflow", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "mirrored arc-kron:1 -> arc-kron v1" in out and out.rstrip().endswith("1 mirrored")
    assert "alias    arc-kron@staging -> v1" in out
    assert main([*reg, "alias", "set", "arc-kron", "production", "1"]) == 0  # a mirrored version: say how
    assert "run sync-mlflow --tracking-uri URI to move it there too" in capsys.readouterr().out
    assert main(["--url", url, "--artifacts", artifacts, "--json", "sync-mlflow", "--tracking-uri", uri]) == 0
    assert json.loads(capsys.readouterr().out) == {"aliases": {"arc-kron": {"production": "1", "staging": "1"}},
                                                  "failed": [], "mirrored": []}


def test_one_bad_version_does_not_stop_the_others_and_the_command_exits_1(store_paths, make_artifact,
                                                                           mlflow_store, capsys):
    url, artifacts, store = store_paths
    uri, run_id = mlflow_store
    add_version(store, make_artifact, run_id)
    add_version(store, make_artifact, run_id, content="second")
    for f in store.fetch_artifact("arc-kron:1").iterdir():  # version 1's files are gone from the artifact root
        f.unlink()
    assert main(["--url", url, "--artifacts", artifacts, "sync-mlflow", "--tracking-uri", uri]) == 1
    captured = capsys.readouterr()
    assert "failed   arc-kron:1:" in captured.out and "mirrored arc-kron:2 -> arc-kron v1" in captured.out
    assert "1 could not be mirrored" in captured.err and "run sync-mlflow again" in captured.err
    assert MODEL_VERSION_TAG not in store.get_version("arc-kron:1").tags


def test_an_unreachable_store_is_one_clear_error(store_paths, make_artifact, tmp_path, capsys):
    url, artifacts, store = store_paths
    add_version(store, make_artifact, None)
    (tmp_path / "file").write_text("")
    bad = f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}"  # its directory is a regular file
    assert main(["--url", url, "--artifacts", artifacts, "sync-mlflow", "--tracking-uri", bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot open the MLflow store") and "--tracking-uri" in err


@pytest.fixture
def store_paths(tmp_path: Path):
    """(url, artifact root, store) of a SQLite registry with the ``populated`` adapter."""
    url, artifacts = f"sqlite:///{tmp_path / 'reg.db'}", str(tmp_path / "artifacts")
    store = RegistryStore(url, artifacts)
    store.register_base_model("org/tiny-bert", revision="rev1")
    store.register_task("arc-easy")
    store.register_adapter("arc-kron", "arc-easy", "org/tiny-bert")
    yield url, artifacts, store
    store.close()
