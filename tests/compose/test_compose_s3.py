"""A run registering into an ``s3://`` artifact root, and composition loading from it on another
machine (its own empty cache): the logits equal the trained model's. The object store is moto's
server on loopback, spoken to over real HTTP by boto3 (no mocks of S3)."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from moto.server import ThreadedMotoServer

from kroncl.adapters import AdapterConfig
from kroncl.config import RegistryConfig
from pipelines.compose import compose, select_versions
from pipelines.compose import main as compose_main
from pipelines.registration import Registrar
from registry import RegistryStore
from registry.s3store import S3ArtifactStore

ATOL = 1e-5
KRON = AdapterConfig(method="kron", a_out=2, a_in=2, r=4, alpha=8.0, targets=["query", "key", "value", "dense"],
                     head_targets=["classifier"])
MODEL_NODE = {"name": "tiny", "seed": 0, "max_length": 64}  # as the compose conftest trains


@pytest.fixture(scope="module")
def moto_endpoint():
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_a_run_registers_into_s3_and_compose_loads_it_elsewhere(
    trained, live_scores, make_batch, moto_endpoint, monkeypatch, tmp_path: Path, capsys
):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "NO_PROXY": "127.0.0.1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # the config's setting must carry it
    monkeypatch.setenv("KRONCL_ARTIFACT_CACHE", str(tmp_path / "writer-cache"))
    bucket = f"kroncl-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    uri, url = f"s3://{bucket}/team", f"sqlite:///{tmp_path / 'registry.db'}"
    settings = SimpleNamespace(
        registry=RegistryConfig(url=url, artifacts=uri, s3_endpoint_url=moto_endpoint),
        runs_root=tmp_path / "runs", model=SimpleNamespace(seed=0, name="tiny"),
        result_config={"model": MODEL_NODE, "seed": 0},
    )
    registrar = Registrar.from_config(settings, trained.model, KRON, None, run_id="s3-run")
    assert isinstance(registrar.store.artifacts, S3ArtifactStore) and registrar.store.artifacts.root == uri
    folder = trained.store.fetch_artifact(trained.refs["toy_larger"])
    ref = registrar.register("toy_larger", folder, bits=32, metrics={"acc": 0.5}, param_count=1, experience=0)
    registrar.store.close()

    with RegistryStore(url, uri, s3_endpoint_url=moto_endpoint, artifact_cache=tmp_path / "reader") as store:
        composition = compose(store, select_versions(store, [ref]))
        assert composition.verified
        batch = make_batch(trained.model, trained.splits["toy_larger"].test, 0)
        live = live_scores(trained.sets["toy_larger"], batch)
        assert (composition.composed(batch) - live).abs().max().item() <= ATOL
        assert any((tmp_path / "reader").rglob("*.safetensors"))  # loaded from the verified cache

    # The compose CLI on a third machine: endpoint and cache from the environment.
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("KRONCL_ARTIFACT_CACHE", str(tmp_path / "cli-cache"))
    assert compose_main(["--registry-url", url, "--artifacts", uri, ref, "--merge", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verified"] and out["mode"] == "merged"
    assert any((tmp_path / "cli-cache").rglob("*.safetensors"))
