"""A run's registry versions on MLflow's Models pages: what ``int4_run`` leaves in its MLflow store,
read back with a fresh client; and an offline run whose versions ``sync-mlflow`` mirrors later."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

from registry import RegistryStore
from registry.mlflow_models import LOGGED_MODEL_TAG, MODEL_VERSION_TAG

REPO = Path(__file__).resolve().parents[2]


def registry_versions(url: str, artifacts: Path) -> list:
    with RegistryStore(url, artifacts) as store:
        return store.search_versions()


def test_every_version_of_the_run_is_a_registered_model_version(int4_run):
    versions = registry_versions(int4_run.registry_url, int4_run.registry_artifacts)
    client = MlflowClient(int4_run.tracking_uri)
    assert len(versions) == 4  # two tasks, fp32 + int4 each
    for v in versions:
        name, number = v.tags[MODEL_VERSION_TAG].split("/")
        assert name == v.adapter
        mv = client.get_model_version(name, number)
        assert mv.tags["kroncl.ref"] == v.ref and mv.tags["kroncl.sha256"] == v.sha256
        assert mv.run_id == int4_run.result.mlflow_run_id
        model = client.get_logged_model(v.tags[LOGGED_MODEL_TAG])
        assert mv.source == f"models:/{model.model_id}"
        assert (model.params["bits"], model.params["method"], model.params["r"]) == (str(v.bits), "kron", str(v.r))
        model_metrics = {m.key: m.value for m in model.metrics}
        assert model_metrics[f"registered/{v.task}/{v.bits}bit/acc"] == v.metrics["acc"]
        # The registry's artifact files, no more (never the base model's weights).
        with RegistryStore(int4_run.registry_url, int4_run.registry_artifacts) as store:
            stored = sorted(p.name for p in store.fetch_artifact(v.ref).iterdir())
        assert sorted(f.path for f in client.list_logged_model_artifacts(model.model_id)) == stored


def test_the_run_page_lists_the_logged_models(int4_run):
    client = MlflowClient(int4_run.tracking_uri)
    outputs = client.get_run(int4_run.result.mlflow_run_id).outputs.model_outputs
    versions = registry_versions(int4_run.registry_url, int4_run.registry_artifacts)
    assert sorted(o.model_id for o in outputs) == sorted(v.tags[LOGGED_MODEL_TAG] for v in versions)
    assert sorted((o.step for o in outputs)) == [0, 0, 1, 1]  # the experience that made each


def test_an_offline_runs_versions_are_mirrored_later_by_sync_mlflow(offline_int8_run, tmp_path):
    # A copy: other tests read the session's offline registry as the run left it.
    src = offline_int8_run.runs_root
    with sqlite3.connect(src / "registry.db") as live, sqlite3.connect(tmp_path / "registry.db") as copy:
        live.backup(copy)  # WAL mode: the file alone may not hold the last commits
    shutil.copytree(src / "registry_artifacts", tmp_path / "registry_artifacts")
    url, artifacts = f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "registry_artifacts"
    before = registry_versions(url, artifacts)
    assert before and all(MODEL_VERSION_TAG not in v.tags for v in before)  # MLflow was down: nothing mirrored

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "registry", "--url", url, "--artifacts", str(artifacts),
           "sync-mlflow", "--tracking-uri", uri]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith(f"{len(before)} mirrored")
    client = MlflowClient(uri)
    for v in registry_versions(url, artifacts):
        name, number = v.tags[MODEL_VERSION_TAG].split("/")
        assert client.get_model_version(name, number).tags["kroncl.ref"] == v.ref
