"""``python -m pipelines.compose``: summaries, evaluation against registered accuracy, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kroncl.adapters import load_adapter
from kroncl.composition import accuracy, attach_adapters
from kroncl.models import ModelConfig, build_model
from pipelines.compose import main

REPO = Path(__file__).resolve().parents[2]


def _args(trained, *rest):
    return ["--registry-url", trained.url, "--artifacts", str(trained.artifacts), *rest]


def test_single_merged_eval_matches_registered_accuracy(trained, capsys):
    assert main(_args(trained, trained.refs["toy_larger"], "--merge", "--eval", "--json")) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "merged" and out["verified"] and out["base_model"] == "tiny-bert"
    (ev,) = out["eval"]
    registered = trained.store.get_version(trained.refs["toy_larger"]).metrics["acc"]
    assert ev["task"] == "toy_larger" and ev["rows"] == 24
    assert ev["acc"] == pytest.approx(registered) and ev["registry_acc"] == pytest.approx(registered)
    assert set(out["timings"]) == {"lookup", "fetch", "read", "base_model", "attach", "verify_base", "merge"}


def test_eval_without_task_labels_prints_routing_accuracy(trained, capsys):
    refs = [trained.refs["toy_larger"], trained.refs["toy_smaller"]]
    assert main(_args(trained, *refs, "--eval", "--task-labels", "unknown", "--json")) == 0
    evals = json.loads(capsys.readouterr().out)["eval"]
    assert [e["task"] for e in evals] == ["toy_larger", "toy_smaller"]
    assert all(0 <= e["routing_acc"] <= 1 for e in evals)
    assert main(_args(trained, *refs, "--eval", "--task-labels", "unknown")) == 0
    assert "of rows answered by its own set]" in capsys.readouterr().out


def test_multi_task_summary_text(trained, capsys):
    assert main(_args(trained, "--task", "toy_larger", "--bits", "32", trained.refs["toy_smaller"], "--eval")) == 0
    text = capsys.readouterr().out
    assert "mode: resident, routed by task" in text
    # REFs come first, then --task picks, in label order.
    assert "label 0  toy_smaller" in text and "label 1  toy_larger" in text
    assert f"<- {trained.refs['toy_larger']} " in text  # --bits 32 picked the fp32 version
    # ... and the summary says why, and whose version it is
    assert "chosen: newest 32-bit version of task toy_larger in the registry, registered " in text
    assert "chosen: named on the command line" in text
    assert "made by run compose-tests-run (stream toy, strategy per_task, seed 0, experience 0)" in text
    for task in ("toy_larger", "toy_smaller"):
        registered = trained.store.get_version(trained.refs[task]).metrics["acc"]
        assert f"eval {task}: test 24 rows, acc={registered:.4f}" in text


def test_run_selects_that_runs_versions(trained, capsys):
    assert main(_args(trained, "--task", "toy_larger", "--run", "compose-tests-run", "--json")) == 0
    (entry,) = json.loads(capsys.readouterr().out)["sets"]
    assert entry["version"] == trained.refs["toy_larger@int8"]  # the run's newest toy_larger version
    assert main(_args(trained, "--task", "toy_larger", "--run", "another-run")) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: run 'another-run' registered no version of task 'toy_larger'; list its versions "
                   "with python -m registry list --run another-run")


def test_eval_equals_accuracy_of_the_library_parts(trained):
    # The same number computed without the pipeline: load the file, attach, score.
    model = build_model(ModelConfig(name="tiny", seed=0, max_length=64))
    loaded = load_adapter(trained.store.fetch_artifact(trained.refs["toy_smaller"]))
    composed = attach_adapters(model, {"toy_smaller": loaded})
    acc = accuracy(composed, trained.splits["toy_smaller"].test)
    assert acc == pytest.approx(trained.store.get_version(trained.refs["toy_smaller"]).metrics["acc"])


def test_weights_register_a_merged_version_and_print_lineage(trained, capsys):
    refs = [trained.refs["toy_larger"], trained.refs["toy_smaller"]]
    assert main(_args(trained, *refs, "--weights", "0.7,0.3", "--name", "tiny-toy-cli", "--json")) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["combined"]["version"] == "tiny-toy-cli:1" and out["combined"]["merged_from"] == refs
    assert out["sets"][0]["method"] == "lora" and out["sets"][0]["r"] == 16
    assert {(e.version, e.relation) for e in trained.store.ancestors("tiny-toy-cli:1", max_depth=1)} == {
        (r, "merged_from") for r in refs}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tiny-toy_larger-kron:7"],
         "version 'tiny-toy_larger-kron:7' not found; adapter 'tiny-toy_larger-kron' has versions: 1, 2"),
        (["--task", "nope"], "task 'nope' not found"),
        (["tiny-toy_larger-kron:1", "--model-opt", "seed=1"], "is not the registered base model 'tiny-bert'"),
        (["tiny-toy_larger-kron:1", "tiny-toy_smaller-kron:1", "--weights", "1,1"], "name it with --name"),
        (["tiny-toy_larger-kron:1", "tiny-toy_smaller-kron:1", "--merge"], "--merge folds one adapter"),
        (["tiny-toy_larger-kron:1", "tiny-toy_smaller-lora:1"], "methods cannot be mixed"),
        ([], "choose at least one adapter version"),
    ],
)
def test_errors_exit_2_with_one_line(trained, capsys, argv, message):
    assert main(_args(trained, *argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_wrong_artifact_root_hints_at_artifacts_flag(trained, capsys, tmp_path):
    argv = ["--registry-url", trained.url, "--artifacts", str(tmp_path / "empty"), trained.refs["toy_larger"]]
    assert main(argv) == 2
    assert "artifact missing" in (err := capsys.readouterr().err) and "--artifacts DIR" in err


def test_module_entry_point_runs(trained):
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.compose", *_args(trained, trained.refs["toy_larger"])],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "== composed model on base tiny-bert" in proc.stdout and "weights verified" in proc.stdout


def test_save_unmerged_writes_each_set_in_the_adapter_format(trained, capsys, tmp_path):
    refs = [trained.refs["toy_larger"], trained.refs["toy_smaller"]]
    assert main(_args(trained, *refs, "--save", str(tmp_path / "out"))) == 0
    assert f"saved to {tmp_path / 'out'}" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "compose.json").read_text())
    assert [t["task"] for t in manifest["tasks"]] == ["toy_larger", "toy_smaller"] and manifest["sources"] == refs
    for ref, task in zip(refs, ("toy_larger", "toy_smaller")):
        saved = load_adapter(tmp_path / "out" / "adapters" / task)
        source = load_adapter(trained.store.fetch_artifact(ref))
        assert saved.meta["source"] == ref and saved.tensors.keys() == source.tensors.keys()
        assert all(saved.tensors[k].equal(source.tensors[k]) for k in source.tensors)
