"""``python -m registry`` on a temporary SQLite registry.

Each command is run end to end in a subprocess at least once (status codes, stdout/stderr, no
traceback); the finer filter combinations go through ``registry.cli.main`` in-process, which is
the same parser and store without paying interpreter start-up for every case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from registry import RegistryStore
from registry.cli import main

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), full_env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "registry", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


def ok(*args: str, env: dict[str, str] | None = None) -> str:
    r = cli(*args, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def fails(*args: str) -> str:
    """Run a command that must fail cleanly: status 2, one stderr line, no traceback."""
    r = cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


@pytest.fixture
def reg(tmp_path: Path) -> tuple[str, RegistryStore]:
    """arc-kron:1 <-continued_from- arc-kron:2 <-quantized_from- q4:1 (artifacts beside the db)."""
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    store = RegistryStore(url)  # default artifact root: beside the SQLite file
    assert store.artifacts.root == (tmp_path / "registry_artifacts").resolve()
    store.register_base_model("org/tiny-bert", revision="rev1")
    store.register_task("arc-easy")
    store.register_adapter("arc-kron", "arc-easy", "org/tiny-bert")
    store.register_adapter("q4", "arc-easy", "org/tiny-bert")
    for i, (adapter, kw) in enumerate(
        [
            ("arc-kron", dict(metrics={"acc": 0.4}, tags={"stage": "dev"})),
            ("arc-kron", dict(metrics={"acc": 0.7}, parents=[("arc-kron:1", "continued_from")])),
            ("q4", dict(metrics={"acc": 0.69}, bits=4, parents=[("arc-kron:2", "quantized_from")])),
        ]
    ):
        src = tmp_path / f"src{i}"
        src.mkdir()
        (src / "adapter.safetensors").write_bytes(f"weights {i}".encode())
        store.register_version(adapter, src, method="kron", r=4, **kw)  # type: ignore[arg-type]
    return url, store


def inproc(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``main(args)`` in this process: (status, stdout, stderr); argparse errors included."""
    try:
        status = main(list(args))
    except SystemExit as e:  # argparse rejects the command line
        status = int(e.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def refs(stdout: str) -> list[str]:
    return [f"{v['adapter']}:{v['number']}" for v in json.loads(stdout)]


def test_list(reg: tuple[str, RegistryStore]) -> None:
    url, _ = reg
    table = ok("--url", url, "list")
    assert table.splitlines()[0].split()[:3] == ["VERSION", "TASK", "BASE"]
    assert [line.split()[0] for line in table.splitlines()[2:]] == [
        "arc-kron:1",
        "arc-kron:2",
        "q4:1",
    ]
    # Global options also work after the command.
    assert refs(ok("list", "--url", url, "--min-metric", "acc=0.5", "--json")) == [
        "arc-kron:2",
        "q4:1",
    ]


def test_list_filters_in_process(
    reg: tuple[str, RegistryStore], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = reg

    def listed(*args: str) -> list[str]:
        status, out, err = inproc(capsys, "--url", url, "--json", "list", *args)
        assert status == 0, err
        return refs(out)

    assert listed() == ["arc-kron:1", "arc-kron:2", "q4:1"]
    assert listed("--bits", "4") == ["q4:1"]
    assert listed("--tag", "stage=dev") == ["arc-kron:1"]
    assert listed("--adapter", "q4") == ["q4:1"]
    assert listed("--min-metric", "acc=0.5", "--min-metric", "acc=0.695") == ["arc-kron:2"]
    assert listed(
        "--task", "arc-easy", "--base-model", "org/tiny-bert", "--method", "kron", "--limit", "1"
    ) == ["arc-kron:1"]
    assert (
        inproc(capsys, "--url", url, "list", "--method", "lora")[1].strip() == "no versions match"
    )
    status, _, err = inproc(capsys, "--url", url, "list", "--task", "typo")
    assert (
        status == 2
        and err.strip() == "error: task 'typo' not found; register it with register_task()"
    )


def test_show(reg: tuple[str, RegistryStore], capsys: pytest.CaptureFixture[str]) -> None:
    url, store = reg
    v = store.get_version("arc-kron:2")
    text = ok("--url", url, "show", "arc-kron")
    assert "version        arc-kron:2" in text
    assert f"sha256         {v.sha256}" in text
    assert "metric         acc = 0.7" in text
    status, out, _ = inproc(capsys, "--url", url, "--json", "show", "arc-kron:1")
    assert status == 0 and json.loads(out)["tags"] == {"stage": "dev"}


def test_tasks_models_adapters(
    reg: tuple[str, RegistryStore], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = reg
    assert "arc-easy" in ok("--url", url, "tasks")
    status, out, _ = inproc(capsys, "--url", url, "models")
    assert status == 0 and out.splitlines()[2].split() == ["org/tiny-bert", "rev1", "-"]
    status, out, _ = inproc(capsys, "--url", url, "--json", "adapters")
    assert [(a["name"], a["latest_version"]) for a in json.loads(out)] == [
        ("arc-kron", 2),
        ("q4", 1),
    ]


def test_lineage_both_directions(
    reg: tuple[str, RegistryStore], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = reg
    rows = [line.split() for line in ok("--url", url, "lineage", "q4:1").splitlines()[3:]]
    assert rows == [
        ["1", "arc-kron:2", "quantized_from", "q4:1"],
        ["2", "arc-kron:1", "continued_from", "arc-kron:2"],
    ]
    status, out, _ = inproc(
        capsys, "--url", url, "--json", "lineage", "arc-kron:1", "--descendants"
    )
    down = json.loads(out)
    assert status == 0 and down["direction"] == "descendants"
    assert [(e["version"], e["depth"]) for e in down["entries"]] == [("arc-kron:2", 1), ("q4:1", 2)]
    assert (
        inproc(capsys, "--url", url, "lineage", "arc-kron:1")[1].strip()
        == "ancestors of arc-kron:1: none"
    )


def test_alias_set_move_delete(
    reg: tuple[str, RegistryStore], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = reg
    assert (
        ok("--url", url, "alias", "set", "arc-kron", "production", "1").strip()
        == "arc-kron@production -> arc-kron:1"
    )
    assert json.loads(ok("--url", url, "--json", "show", "arc-kron@production"))["number"] == 1
    assert inproc(capsys, "--url", url, "alias", "set", "arc-kron", "production", "2")[0] == 0
    status, out, _ = inproc(capsys, "--url", url, "--json", "alias", "list", "arc-kron")
    assert json.loads(out) == {"latest": 2, "production": 2}
    assert inproc(capsys, "--url", url, "alias", "delete", "arc-kron", "production")[0] == 0
    err = fails("--url", url, "show", "arc-kron@production")
    assert "alias 'production' not found for adapter 'arc-kron'" in err
    status, _, err = inproc(capsys, "--url", url, "alias", "set", "arc-kron", "latest", "1")
    assert status == 2 and "reserved" in err


def test_verify_detects_tampering(
    reg: tuple[str, RegistryStore], capsys: pytest.CaptureFixture[str]
) -> None:
    url, store = reg
    status, out, _ = inproc(capsys, "--url", url, "verify")
    assert status == 0 and [line.split()[1] for line in out.splitlines()[2:-1]] == ["ok"] * 3
    assert out.splitlines()[-1] == "3 versions checked, 0 problems"
    v = store.get_version("arc-kron:2")
    (store.artifacts.path(v.artifact_location) / "adapter.safetensors").write_bytes(b"tampered")
    r = cli("--url", url, "verify")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "arc-kron:2  MISMATCH" in r.stdout
    assert (
        f"expected {v.sha256}" in r.stderr
        and str(store.artifacts.path(v.artifact_location)) in r.stderr
    )
    assert inproc(capsys, "--url", url, "verify", "arc-kron:1")[0] == 0
    status, out, err = inproc(capsys, "--url", url, "--json", "verify", "arc-kron:2")
    assert status == 2 and [(r["version"], r["ok"]) for r in json.loads(out)] == [
        ("arc-kron:2", False)
    ]


def test_delete_refuses_dependents_then_deletes(
    reg: tuple[str, RegistryStore], capsys: pytest.CaptureFixture[str]
) -> None:
    url, store = reg
    err = fails("--url", url, "delete", "arc-kron:1")
    assert "arc-kron:2 (continued_from)" in err
    sha = store.get_version("q4:1").sha256
    assert ok("--url", url, "delete", "q4:1").strip() == "deleted q4:1"
    assert not store.artifacts.exists(sha)
    assert refs(inproc(capsys, "--url", url, "--json", "list")[1]) == ["arc-kron:1", "arc-kron:2"]


def test_errors_are_one_line_with_status_2(
    reg: tuple[str, RegistryStore], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = reg
    assert "adapter 'nope' not found" in fails("--url", url, "show", "nope:1")
    for args, message in [
        (["--url", url, "show", "../etc"], "error: invalid adapter name '../etc'"),
        (["--url", "mysql://u@h/db", "list"], "error: unsupported registry backend 'mysql'"),
        (["--url", url, "lineage", "arc-kron:0"], "error: invalid version reference 'arc-kron:0'"),
    ]:
        status, _, err = inproc(capsys, *args)
        assert status == 2 and err.startswith(message) and len(err.strip().splitlines()) == 1, err
    status, out, _ = inproc(capsys, "--url", url, "--json", "show", "nope")
    assert status == 2 and json.loads(out)["error"] == "NOT_FOUND"
    status, _, err = inproc(capsys, "--url", url, "list", "--min-metric", "acc")
    assert status == 2 and "must look like NAME=VALUE" in err


def test_url_and_artifact_root_from_environment(
    reg: tuple[str, RegistryStore], tmp_path: Path
) -> None:
    url, store = reg
    out = ok(
        "--json",
        "show",
        "q4",
        env={"KRONCL_REGISTRY_URL": url, "KRONCL_ARTIFACT_ROOT": str(store.artifacts.root)},
    )
    assert json.loads(out)["number"] == 1


def test_registry_imports_neither_torch_nor_kroncl() -> None:
    code = (
        "import sys, registry, registry.cli, registry.store;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'kroncl'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize(
    "args, names",
    [
        (["show", "arc-kron:99999999999999999999"], "'arc-kron:99999999999999999999'"),
        (["show", "arc-kron:2147483648"], "'arc-kron:2147483648'"),
        (["show", "arc-kron:²"], "'arc-kron:²'"),
        (["show", "arc-kron:٣"], "'arc-kron:٣'"),
        (["show", "arc-kron:-1"], "'arc-kron:-1'"),
        (["lineage", "arc-kron:1_0"], "'arc-kron:1_0'"),
        (["verify", "arc-kron:99999999999999999999"], "'arc-kron:99999999999999999999'"),
        (["delete", "arc-kron:²"], "'arc-kron:²'"),
        (["alias", "set", "arc-kron", "prod", "99999999999999999999"], "'99999999999999999999'"),
        (["alias", "set", "arc-kron", "prod", "-1"], "'-1'"),
        (["alias", "set", "arc-kron", "prod", "٣"], "'٣'"),
        (["list", "--bits", "65"], "--bits '65'"),
        (["list", "--bits", "²"], "--bits '²'"),
        (["list", "--limit", "-1"], "--limit '-1'"),
        (["list", "--limit", "99999999999999999999"], "--limit '99999999999999999999'"),
        (["lineage", "arc-kron:1", "--max-depth", "0"], "--max-depth '0'"),
        (["gc", "--grace", "-5"], "--grace '-5'"),
        (["gc", "--grace", "nan"], "--grace 'nan'"),
    ],
)
def test_out_of_range_arguments_are_one_line_status_2(
    reg: tuple[str, RegistryStore], capsys: pytest.CaptureFixture[str], args: list[str], names: str
) -> None:
    """Each bad number names the value and the accepted form; no traceback, no usage block."""
    url, _ = reg
    status, out, err = inproc(capsys, "--url", url, *args)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert names in lines[0] and "Traceback" not in err
    assert "ASCII digits" in lines[0] or "seconds >= 0" in lines[0]


def test_huge_version_number_end_to_end(reg: tuple[str, RegistryStore]) -> None:
    url, _ = reg
    line = fails("--url", url, "show", "arc-kron:99999999999999999999")
    assert "version number in 1..2147483647" in line
