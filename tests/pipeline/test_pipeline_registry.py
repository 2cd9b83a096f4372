"""What one run with ``quant=int4`` leaves in the adapter registry, through the store and the CLI."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from registry import CONTINUED_FROM, QUANTIZED_FROM, RegistryStore, hash_artifact

REPO = Path(__file__).resolve().parents[2]
TASKS = ["toy_larger", "toy_smaller"]


@pytest.fixture(scope="module")
def store(int4_run):
    s = RegistryStore(int4_run.registry_url, int4_run.registry_artifacts)
    yield s
    s.close()


def registry_cli(int4_run, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "registry", "--url", int4_run.registry_url,
           "--artifacts", str(int4_run.registry_artifacts), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_each_experience_has_an_fp32_and_an_int4_version(int4_run, store):
    refs = sorted(v.ref for v in store.search_versions())
    assert refs == sorted(r for rec in int4_run.result.artifacts for r in (rec["fp32_ref"], rec["quant_ref"]))
    assert len(refs) == 2 * len(TASKS)
    counts = json.loads((int4_run.run_dir / "summary.json").read_text())["param_counts"]
    for i, (task, rec) in enumerate(zip(TASKS, int4_run.result.artifacts)):
        fp32, q = store.get_version(rec["fp32_ref"]), store.get_version(rec["quant_ref"])
        assert fp32.adapter == q.adapter == f"tiny-{task}-kron"
        assert (fp32.task, fp32.bits, q.task, q.bits) == (task, 32, task, 4)
        assert (fp32.method, fp32.a_out, fp32.a_in, fp32.r, fp32.alpha) == ("kron", 2, 2, 8, 16.0)
        assert fp32.param_count == counts["adapter_set"] == q.param_count
        assert fp32.tags["experience"] == q.tags["experience"] == str(i)
        assert fp32.tags["strategy"] == "sequential"
        # run identity: every version names the run that made it and what it ran
        record = json.loads((int4_run.run_dir / "run.json").read_text())
        for v in (fp32, q):
            assert v.tags["kroncl.run"] == record["run_id"] and v.tags["stream"] == "toy"
            assert v.tags["seed"] == "0" and v.tags["config_hash"] == record["config_hash"]
        # the registered accuracy is R[i][i] of the run's matrix
        assert fp32.metrics["acc"] == pytest.approx(int4_run.result.matrix.rows[i][i])
        assert q.metrics["quant_rel_err_mean"] == pytest.approx(rec["delta_rel_error"]["quant_rel_err_mean"])
        # the registered artifacts are byte for byte the folders the run wrote
        assert fp32.sha256 == hash_artifact(rec["fp32_dir"])[0]
        assert q.sha256 == hash_artifact(rec["quant_dir"])[0]
        assert "latest" in q.aliases
        assert fp32.base_model == q.base_model


def test_lineage_quantized_from_and_continued_from(int4_run, store):
    (r0, r1) = int4_run.result.artifacts
    for rec in (r0, r1):
        parents = [(e.version, e.relation) for e in store.ancestors(rec["quant_ref"], max_depth=1)]
        assert parents == [(rec["fp32_ref"], QUANTIZED_FROM)]
    assert store.ancestors(r0["fp32_ref"]) == []
    assert [(e.version, e.relation, e.depth) for e in store.ancestors(r1["fp32_ref"])] == [
        (r0["fp32_ref"], CONTINUED_FROM, 1)
    ]
    # the second int4 version descends from the first experience through its fp32 parent
    assert [(e.version, e.relation, e.depth) for e in store.ancestors(r1["quant_ref"])] == [
        (r1["fp32_ref"], QUANTIZED_FROM, 1), (r0["fp32_ref"], CONTINUED_FROM, 2)
    ]
    children = {(e.version, e.relation) for e in store.descendants(r0["fp32_ref"], max_depth=1)}
    assert children == {(r0["quant_ref"], QUANTIZED_FROM), (r1["fp32_ref"], CONTINUED_FROM)}


def test_artifacts_verify(int4_run, store):
    results = store.verify()
    assert len(results) == 4 and all(r.ok for r in results), [r.message for r in results]
    fetched = store.fetch_artifact(int4_run.result.artifacts[1]["quant_ref"])
    assert sorted(p.name for p in fetched.iterdir()) == ["adapter.safetensors", "adapter_config.json"]


def test_cli_list_show_lineage(int4_run):
    (r0, r1) = int4_run.result.artifacts
    listed = registry_cli(int4_run, "list")
    assert listed.returncode == 0, listed.stderr
    for rec in (r0, r1):
        for ref, bits in ((rec["fp32_ref"], "32"), (rec["quant_ref"], "4")):
            line = next(line for line in listed.stdout.splitlines() if line.split()[:1] == [ref])
            assert line.split()[1:5] == [rec["task"], "tiny-bert", "kron", bits]

    shown = registry_cli(int4_run, "--json", "show", r1["fp32_ref"])
    assert shown.returncode == 0, shown.stderr
    version = json.loads(shown.stdout)
    assert version["bits"] == 32 and version["task"] == "toy_smaller"
    assert version["mlflow_run_id"] == int4_run.result.mlflow_run_id

    text = registry_cli(int4_run, "show", r1["quant_ref"])
    assert text.returncode == 0, text.stderr
    assert int4_run.result.mlflow_run_id in text.stdout and "bits           4" in text.stdout

    lineage = registry_cli(int4_run, "lineage", r1["quant_ref"])
    assert lineage.returncode == 0, lineage.stderr
    rows = [line.split() for line in lineage.stdout.splitlines() if line[:1].isdigit()]
    assert rows == [["1", r1["fp32_ref"], QUANTIZED_FROM, r1["quant_ref"]],
                    ["2", r0["fp32_ref"], CONTINUED_FROM, r1["fp32_ref"]]]


def test_the_cli_command_the_summary_prints_works(int4_run):
    """The summary's ``python -m registry ...`` hint, run as printed (with verify), finds the artifacts."""
    line = next(line for line in int4_run.printed.splitlines() if line.startswith("registry: "))
    hint = line[line.index("(this run's versions: ") + len("(this run's versions: "): line.rindex(")")]
    args = shlex.split(hint)
    assert args[:3] == ["python", "-m", "registry"] and args[-3:] == ["list", "--run", int4_run.result.run_id]
    listed = subprocess.run([sys.executable, *args[1:]], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert sorted(line.split()[0] for line in listed.stdout.splitlines()[2:]) == sorted(
        r for rec in int4_run.result.artifacts for r in (rec["fp32_ref"], rec["quant_ref"]))
    verify = subprocess.run([sys.executable, *args[1:-3], "verify"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.count(" ok ") == 4
