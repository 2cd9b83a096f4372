"""``pipelines.bench continual`` and ``sweep`` on real tiny runs (toy stream, tiny model): the
printed mean ± std are those of the runs' own summary.json files; a refused combination is
marked, not a crash; a real Hydra multirun is read back grouped by its varying key."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.bench.__main__ import main as bench_main
from pipelines.bench.results_table import load_run

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--stream", "toy", "--model", "tiny", "--max-train", "48", "--max-test", "24", "--epochs", "1",
         "--set", "train.threads=1"]
METRICS = ("acc", "bwt", "fwt", "forgetting")


def expected(values: list[float], signed: bool) -> str:
    mean, std = statistics.fmean(values), statistics.stdev(values)
    mean = round(mean, 3) + 0.0  # the table prints no "-0.000" for a mean that rounds to 0
    return (f"{mean:+.3f}" if signed else f"{mean:.3f}") + f" ± {std:.3f}"


def table_rows(out: str, first: str) -> dict[tuple[str, str], list[str]]:
    """Printed rows starting with adapter ``first``..., split on the two-space column gaps."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("  ") if c.strip()]
        if cells and cells[0] in first.split(","):
            rows[(cells[0], cells[1])] = cells
    return rows


@pytest.fixture(scope="module")
def continual(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("bench-continual")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = bench_main(["continual", *SMALL, "--adapters", "kron2x2,lora8",
                         "--strategies", "sequential,per_task+ewc", "--seeds", "0,1", "--out", str(out_dir)])
    assert rc == 0
    return out_dir, buf.getvalue()


def test_printed_mean_std_are_those_of_the_runs(continual):
    out_dir, out = continual
    rows = table_rows(out, "kron2x2,lora8")
    for adapter in ("kron2x2", "lora8"):
        summaries = [json.loads((out_dir / "runs" / "toy" / f"{adapter}-sequential-known-s{s}" / "summary.json").read_text())
                     for s in (0, 1)]
        cells = rows[(adapter, "sequential")]
        # adapter, strategy, labels, lr, params/set, ACC, BWT, FWT, forgetting, val, n
        assert cells[4] == f"{summaries[0]['param_counts']['adapter_set']:,}"
        for i, m in enumerate(METRICS):
            assert cells[5 + i] == expected([s["summary"][m] for s in summaries], signed=m != "acc"), m
        vals = [load_run(out_dir / "runs" / "toy" / f"{adapter}-sequential-known-s{s}").val_acc for s in (0, 1)]
        assert cells[9] == f"{statistics.fmean(vals):.3f} ± {statistics.stdev(vals):.3f}"
        assert cells[10] == "2"
        chance = summaries[0]["reference"]["toy_larger"]["chance"]
        assert f"toy_larger: chance {chance:.3f}" in out
    # per task, before any training -> after the last experience: the matrix files' first and last rows
    matrices = [json.loads((out_dir / "runs" / "toy" / f"kron2x2-sequential-known-s{s}" / "metrics"
                            / "accuracy_matrix.json").read_text()) for s in (0, 1)]
    line = next(x for x in out.splitlines() if x.startswith("  kron2x2 sequential lr "))
    for j, task in enumerate(matrices[0]["task_names"]):
        before = expected([m["baseline"][j] for m in matrices], signed=False)
        after = expected([m["rows"][-1][j] for m in matrices], signed=False)
        assert f"{task} {before} -> {after}" in line
    doc = json.loads((out_dir / "results.json").read_text())
    row = next(r for r in doc["streams"]["toy"]["rows"] if r["adapter"] == "lora8" and r["strategy"] == "sequential")
    assert row["seeds"] == [0, 1] and row["n"] == 2
    assert row["final_per_task"]["toy_smaller"]["n"] == 2
    assert (out_dir / "results.md").read_text().startswith("### stream toy")


def test_refused_combination_is_marked_not_run(continual):
    out_dir, out = continual
    cells = table_rows(out, "kron2x2,lora8")[("kron2x2", "per_task+ewc")]
    assert cells[-2:] == ["0", cells[-1]] and cells[-1].startswith("refused:")
    assert not list((out_dir / "runs" / "toy").glob("*per_task+ewc*/summary.json"))
    doc = json.loads((out_dir / "results.json").read_text())
    note = next(r["note"] for r in doc["streams"]["toy"]["rows"] if r["strategy"] == "per_task+ewc")
    assert note.startswith("refused: strategy=per_task cannot use ewc: EWC")


def test_rerun_reads_finished_cells_back(continual, capsys):
    out_dir, out = continual
    assert bench_main(["continual", *SMALL, "--adapters", "lora8", "--strategies", "sequential",
                       "--seeds", "0,1", "--out", str(out_dir)]) == 0
    again = capsys.readouterr().out
    assert table_rows(again, "lora8")[("lora8", "sequential")] == table_rows(out, "lora8")[("lora8", "sequential")]


def test_rerun_with_another_budget_in_the_same_out_is_refused(continual, capsys):
    out_dir, _ = continual
    small = [a if a != "48" else "40" for a in SMALL]  # --max-train 40
    with pytest.raises(SystemExit):
        bench_main(["continual", *small, "--adapters", "lora8", "--strategies", "sequential",
                    "--seeds", "0", "--out", str(out_dir)])
    assert "holds a run of another configuration; use another --out" in capsys.readouterr().err


def test_sweep_pools_seeds_of_the_same_config(continual, capsys):
    out_dir, _ = continual
    assert bench_main(["sweep", str(out_dir / "runs"), "--out", str(out_dir / "sweep")]) == 0
    out = capsys.readouterr().out
    assert "4 runs" in out and "2 configurations" in out and "adapter.method" in out
    doc = json.loads((out_dir / "sweep" / "sweep.json").read_text())
    assert sorted((r["adapter.method"], r["n"], tuple(r["seeds"])) for r in doc["streams"]["toy"]["rows"]) == \
        [("kron", 2, (0, 1)), ("lora", 2, (0, 1))]


def test_sweep_reads_a_real_hydra_multirun(tmp_path, capsys):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "kroncl.run", "-m", "stream=toy", "model=tiny", "stream.max_train=48",
           "stream.max_test=24", "train.epochs=1", "train.progress=false", "train.threads=1", "tracking=off",
           "registry=off", f"paths.runs={tmp_path / 'runs'}", "train.lr=1e-3,3e-3", "seed=0"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "multirun").exists()  # under paths.runs, not the current directory
    (sweep,) = (tmp_path / "runs" / "multirun" / "toy").iterdir()  # <paths.runs>/multirun/<stream>/<start>/
    summaries = sorted(sweep.rglob("summary.json"))
    assert [p.parent.name for p in summaries] == ["0", "1"]  # <job number>/
    assert bench_main(["sweep", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "varying: train.lr" in out
    by_lr = {}
    for path in summaries:
        lr = [line for line in (path.parent / "overrides.yaml").read_text().splitlines() if "train.lr" in line]
        by_lr[lr[0].split("=")[1]] = json.loads(path.read_text())["summary"]["acc"]
    for lr, acc in by_lr.items():
        line = next(row for row in out.splitlines() if row.startswith(lr + " "))
        assert f"{acc:.3f} ± n/a" in line


def test_a_setting_error_stops_with_its_message_not_a_refused_row(tmp_path, capsys):
    rc = bench_main(["continual", "--stream", "arc", "--model", "tiny", "--data-dir", str(tmp_path / "none"),
                     "--adapters", "lora8", "--strategies", "sequential", "--seeds", "0", "--out", str(tmp_path)])
    assert rc == 2
    assert "is not a directory" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("args,message", [
    (["--adapters", "kron2x2,dora8"], "unknown adapter 'dora8'; choices: kron2x2, kron4x4, lora8, lora16 or kron<a_out>x<a_in>"),
    (["--adapters", "kron0x2"], "unknown adapter 'kron0x2'"),
    (["--strategies", "sequential,gem"], "unknown strategy 'gem'; choices: sequential"),
    (["--lr", "kron2x2=6e-3,dora=1e-3"], "--lr: unknown method 'dora'"),
    (["--lr", "kron2x2=fast"], "--lr kron2x2: 'fast' is not a number"),
    (["--seeds", "0,one"], "--seeds: 'one' is not an integer"),
    (["--labels", "maybe"], "unknown labels 'maybe'; choices: known, unknown"),
])
def test_bad_input_names_the_value_and_the_choices(args, message, capsys):
    with pytest.raises(SystemExit):
        bench_main(["continual", *args])
    assert message in capsys.readouterr().err


def test_lr_grid_picks_by_validation_not_test():
    from pipelines.bench.continual import Cell
    from pipelines.bench.results_table import RunInfo

    def info(val, acc):
        return RunInfo(Path("."), {"seed": 0}, {"acc": acc}, {}, {}, [], val)

    cell = Cell("toy", "lora8", "sequential", "known")
    cell.runs = {1e-3: [info(0.7, 0.2), info(0.6, 0.2)], 1e-2: [info(0.5, 0.9), info(0.5, 0.9)]}
    lr, runs = cell.chosen()
    assert lr == 1e-3 and runs == cell.runs[1e-3]  # best mean validation (0.65), not best test
    assert "lr by val 0.650" in cell.note


@pytest.mark.parametrize("name,adapter", [
    ("kron8x8", {"method": "kron", "a_out": 8, "a_in": 8, "r": 8}),
    ("kron2x4", {"method": "kron", "a_out": 2, "a_in": 4, "r": 8}),
    ("lora32", {"method": "lora", "r": 32}),
])
def test_d_a_ablation_names_compose_to_their_adapter(name, adapter):
    from pipelines.bench.continual import adapter_overrides, compose

    cfg = compose(["model=tiny", *adapter_overrides(name)])
    assert {k: cfg.adapter[k] for k in adapter} == adapter


def test_a_cell_that_learnt_nothing_is_marked(tmp_path, capsys):
    """lr 1e-12 trains nothing: the loss stays at ln 2 (or above) and the accuracy at chance on
    both toy tasks, and the row says so in the printed table and results.json, by the rule the
    run's summary warns with."""
    assert bench_main(["continual", *SMALL, "--adapters", "lora8", "--strategies", "sequential", "--seeds", "0",
                       "--lr", "1e-12", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert table_rows(out, "lora8")[("lora8", "sequential")][-1] == "learnt nothing: toy_larger,toy_smaller"
    assert "training loss never fell 2% below ln(choices) and its test accuracy stayed within 2" in out
    run_dir = tmp_path / "runs" / "toy" / "lora8-sequential-known-lr1e-12-s0"
    assert "warning: toy_smaller: nothing learnt — training loss never left chance" in (run_dir / "summary.txt").read_text()
    row = json.loads((tmp_path / "results.json").read_text())["streams"]["toy"]["rows"][0]
    assert row["learnt_nothing"] == ["toy_larger", "toy_smaller"]
