"""``python -m pipelines.bench quant`` (quant, quant_train, quant_measure, quant_report): pure helpers
on hand-made rows, and a smoke run on the tiny model."""

from __future__ import annotations

import argparse
import doctest
import json
import os
from pathlib import Path

import pytest
import torch

import pipelines.bench.quant as bq
import pipelines.bench.quant_measure as bm
import pipelines.bench.quant_report as br
import pipelines.bench.quant_train as bt
from kroncl.config import DEFAULT_LR
from pipelines.bench.__main__ import main as bench_main

SHARED_DATA = Path(os.environ.get("KRONCL_SHARED_DATA") or Path(__file__).resolve().parents[2] / ".." / "shared" / "data")


def row(method="kron", scheme="int8", task="t", ratio=0.28, err=0.01, acc=0.5, drop=0.0, agree=1.0, seed=0):
    return bm.Row(task, method, scheme, int(1000 * ratio), ratio, err, 2 * err, acc, drop, agree, 200, seed)


@pytest.mark.parametrize("module", [bq, bm], ids=lambda m: m.__name__)
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted >= 2 and result.failed == 0


def test_accuracy_drop_is_in_points_and_signed():
    assert bm.accuracy_drop_points(0.75, 0.745) == pytest.approx(0.5)
    assert bm.accuracy_drop_points(0.5, 0.5) == 0.0
    assert bm.accuracy_drop_points(0.60, 0.62) == pytest.approx(-2.0)


def test_agreement_counts_same_answers_and_rejects_mismatched_predictions():
    assert bm.agreement(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 0, 3])) == 0.75
    with pytest.raises(ValueError, match=r"\(3,\) and \(2,\)"):
        bm.agreement(torch.tensor([0, 1, 2]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="non-empty"):
        bm.agreement(torch.tensor([]), torch.tensor([]))


def test_bytes_ratio_refuses_an_empty_reference():
    assert bm.bytes_ratio(34, 256) == pytest.approx(34 / 256)
    with pytest.raises(ValueError, match="0 bytes"):
        bm.bytes_ratio(10, 0)


def test_targets_pass_and_fail_on_the_issue_thresholds():
    good = [
        row("kron", "fp32", ratio=1.0, err=0.0), row("kron", "int8", drop=0.5, err=0.004),
        row("kron", "int4", ratio=0.133, drop=1.0, err=0.09),
        row("lora", "fp32", ratio=1.0, err=0.0), row("lora", "int8", drop=0.0, err=0.005),
        row("lora", "int4", ratio=0.166, drop=1.5, err=0.10),
    ]
    verdicts = {t.name: t for t in br.check_targets(good)}
    assert [t.passed for t in verdicts.values()] == [True, True, False]
    kron_vs_lora = verdicts["Kron-LoRA degrades less than LoRA (Kron vs LoRA)"]
    # int8: lower error but a larger drop (0.5 > 0.0); int4: lower error and smaller drop.
    assert "lower ΔW error in 2/2, drop <= LoRA's in 1/2" in kron_vs_lora.detail

    bad = [row("kron", "int4", ratio=0.17), row("kron", "int8", drop=0.51)]
    verdicts = br.check_targets(bad)
    assert [(t.name, t.passed) for t in verdicts] == [
        ("int4 bytes <= 1/6 of fp32", False), ("int8 accuracy drop <= 0.5 points", False)]
    assert "t/kron 0.170" in verdicts[0].detail and "t/kron +0.51" in verdicts[1].detail


def test_kron_vs_lora_is_only_judged_on_pairs_of_the_same_task_and_scheme():
    rows = [row("kron", "int8", task="a"), row("lora", "int8", task="b")]
    assert [t.name for t in br.check_targets(rows)] == ["int8 accuracy drop <= 0.5 points"]


def test_table_aligns_columns_and_leaves_self_comparisons_of_fp32_blank():
    rows = [row("kron", "fp32", ratio=1.0, err=0.0, acc=0.8125), row("lora", "nf4", ratio=0.1328, err=0.1234, acc=0.8, drop=1.25, agree=0.97)]
    rows[0].bytes = 683_000
    lines = br.format_table(rows).splitlines()
    assert len(lines) == 4 and set(lines[1]) <= {"-", " "}
    assert len({len(line) for line in lines}) == 1  # fixed width
    assert lines[2].split() == ["Kron-LoRA", "fp32", "667.0", "KiB", "1.000", "-", "-", "81.25", "-", "-"]
    assert lines[3].split() == ["LoRA", "nf4", "132", "B", "0.133", "0.1234", "0.2468", "80.00", "+1.25", "97.0"]
    md = br.format_markdown_table(rows).splitlines()
    assert md[0].startswith("| method | scheme |") and md[1].endswith("---:|") and len(md) == 4


def test_seeds_give_mean_and_sample_std_and_judge_targets_on_means():
    rows = [row("kron", "fp32", ratio=1.0, err=0.0, acc=a, seed=i) for i, a in enumerate((0.40, 0.50, 0.60))]
    rows += [row("kron", "int8", acc=a, drop=d, err=e, seed=i)
             for i, (a, d, e) in enumerate(((0.40, 0.0, 0.01), (0.49, 1.0, 0.02), (0.60, 0.0, 0.03)))]
    (fp32, int8) = br.over_seeds(rows)
    assert fp32.n_seeds == 3 and fp32.mean.accuracy == pytest.approx(0.5) and fp32.acc_std == pytest.approx(0.1)
    assert int8.mean.drop_points == pytest.approx(1 / 3) and int8.mean.delta_err_max == pytest.approx(0.06)
    assert int8.drop_std == pytest.approx(0.57735, abs=1e-5)
    line = br.format_table(rows).splitlines()[3]
    assert "49.67 ± 10.02" in line and "+0.33 ± 0.58" in line
    (int8_target,) = [t for t in br.check_targets(rows) if t.name.startswith("int8")]
    assert int8_target.passed and "t/kron +0.33" in int8_target.detail  # the mean, not seed 1's +1.00


def test_equal_bytes_pairs_each_kron_scheme_with_the_nearest_lora_size():
    rows = [row("kron", "fp32", ratio=1.0, acc=0.45), row("kron", "int8", ratio=0.28, acc=0.44),
            row("lora", "fp32", ratio=2.0, acc=0.47), row("lora", "int4", ratio=0.27, acc=0.46),
            row("lora", "int8", ratio=0.56, acc=0.47)]
    assert br.equal_bytes(rows) == ["t: Kron-LoRA int8 280 B 44.00 % vs LoRA int4 270 B 46.00 % (0.96x the bytes)"]


def test_parse_choices_resolves_aliases_and_names_the_flag_on_errors():
    assert bq.parse_choices("toy, arc,toy", None, "--tasks", bq.TASK_ALIASES) == ["toy_larger", "arc_easy"]
    assert bq.parse_choices("arc_challenge", None, "--tasks", bq.TASK_ALIASES) == ["arc_challenge"]
    with pytest.raises(argparse.ArgumentTypeError, match=r"--methods: unknown 'dora'; choose from kron, lora"):
        bq.parse_choices("kron,dora", list(bt.METHODS), "--methods")
    with pytest.raises(argparse.ArgumentTypeError, match="--tasks needs at least one"):
        bq.parse_choices(" , ", None, "--tasks")


def test_bad_flag_values_exit_with_the_flag_named(capsys):
    with pytest.raises(SystemExit) as exc:
        bq.main(["--max-test", "0"])
    assert exc.value.code == 2
    assert "--max-test=0 must be >= 1" in capsys.readouterr().err
    for flags, message in ((["--seeds", "0,x"], "--seeds='0,x' must be a comma list of integers"),
                           (["--keep-below", "-1"], "--keep-below=-1 must be >= 0"),
                           (["--lr", "0"], "--lr=0.0 must be > 0")):
        with pytest.raises(SystemExit):
            bq.main(flags)
        assert message in capsys.readouterr().err


def test_answering_with_routes_evaluation_and_restores_the_trained_set():
    from kroncl.strategy.adapter_sets import AdapterSets

    sets = AdapterSets("sequential", current="stream")
    with pytest.raises(RuntimeError), bm.answering_with(sets, "quant_int8"):
        assert sets.route(0) == "quant_int8"
        raise RuntimeError
    assert sets.current == "stream" and sets.route(0) == "stream"


@pytest.fixture(scope="module")
def tiny_trained():
    from kroncl.data import StreamConfig, build_stream

    settings = bt.BenchSettings(tasks=["toy_larger"], methods=["kron"], model="tiny", max_train=48, max_test=32,
                                epochs=1, lr=1e-2, device="cpu")
    tasks = build_stream(StreamConfig(name="t", tasks=["toy_larger"], max_train=48, max_test=32, validation_fraction=0.0))
    return bt.train_adapter(tasks, "kron", settings, log=lambda _: None)


def test_a_copied_set_answers_exactly_like_the_trained_one(tiny_trained):
    """The quantized rows are evaluated through a second resident set: with fp32 tensors that
    path must reproduce the trained set's predictions exactly."""
    from kroncl.adapters import adapter_state_dict, add_adapter, delete_adapter, load_adapter_state_dict

    t = tiny_trained
    acc, pred = bm.evaluate_set(t.strategy, t.benchmark.test_stream, t.adapter_set, t.recorder)
    add_adapter(t.backbone, "copy")
    try:
        load_adapter_state_dict(t.backbone, adapter_state_dict(t.backbone, t.adapter_set), "copy")
        acc2, pred2 = bm.evaluate_set(t.strategy, t.benchmark.test_stream, "copy", t.recorder)
    finally:
        delete_adapter(t.backbone, "copy")
    assert len(pred) == 32 and torch.equal(pred, pred2) and acc == acc2


def test_measure_schemes_leaves_only_the_trained_set_and_orders_errors(tiny_trained):
    from kroncl.adapters import adapter_names, adapter_state_dict

    t = tiny_trained
    before = adapter_state_dict(t.backbone, t.adapter_set)
    res = bm.measure_schemes(t, log=lambda _: None)
    assert adapter_names(t.backbone) == [t.adapter_set]
    after = adapter_state_dict(t.backbone, t.adapter_set)
    assert all(torch.equal(before[k], after[k]) for k in before)
    by = {r.scheme: r for r in res.rows}
    assert list(by) == list(bm.SCHEMES)
    assert by["fp32"].bytes == sum(v.numel() * 4 for v in before.values())
    assert by["int8"].delta_err_mean < by["int4"].delta_err_mean
    assert by["int4"].bytes < by["int8"].bytes < by["fp32"].bytes and by["int4"].bytes == by["nf4"].bytes
    assert set(res.per_layer_error["int4"]) == set(res.per_layer_error["int8"])
    assert any(k.endswith("classifier") for k in res.per_layer_error["int4"])  # the head is quantized too
    for r in res.rows[1:]:
        assert r.drop_points == pytest.approx((by["fp32"].accuracy - r.accuracy) * 100)
        assert 0.0 <= r.agreement <= 1.0 and r.n_test == 32


def test_keep_below_rows_keep_small_tensors_and_lower_the_error_of_kron(tiny_trained):
    from kroncl.adapters import adapter_state_dict

    t = tiny_trained
    res = bm.measure_schemes(t, keep_below=65, log=lambda _: None)
    by = {r.scheme: r for r in res.rows}
    assert list(by) == ["fp32", "int8", "int4", "nf4", "int8-k", "int4-k", "nf4-k"]
    small = [v for v in adapter_state_dict(t.backbone, t.adapter_set).values() if v.numel() < 65]
    assert small  # Kron's A factors (and the head's bias delta)
    for kind in ("int8", "int4", "nf4"):
        assert by[kind + "-k"].delta_err_mean < by[kind].delta_err_mean
        assert by[kind + "-k"].bytes > by[kind].bytes  # 16 bits instead of 4/8 plus a shared scale
    assert by["int4-k"].bytes - by["int4"].bytes < 2 * sum(v.numel() for v in small)


def test_command_smoke_on_the_tiny_model(tmp_path, capsys):
    out = tmp_path / "bench" / "quant"
    code = bench_main(["quant", "--model", "tiny", "--tasks", "toy", "--max-train", "32", "--max-test", "24",
                       "--epochs", "1", "--threads", "0", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["command"].startswith("python -m pipelines.bench quant --model tiny")
    assert report["settings"]["max_train"] == 32 and report["settings"]["seeds"] == [0]
    assert report["settings"]["lr"] is None  # each method at its train.lr default
    assert {m: i["lr"] for m, i in report["tasks"]["toy_larger"]["methods"].items()} == {
        "kron": DEFAULT_LR["kron"], "lora": DEFAULT_LR["lora"]}
    rows = report["tasks"]["toy_larger"]["rows"]
    assert [(r["method"], r["scheme"]) for r in rows] == [(m, s) for m in ("kron", "lora") for s in bm.SCHEMES]
    assert report["tasks"]["toy_larger"]["sizes"]["test"] == 24
    assert [t["name"] for t in report["targets"]][0] == "int4 bytes <= 1/6 of fp32"
    assert report["targets"][0]["passed"] is True
    assert br.format_table([bm.Row(**r) for r in rows]) in printed
    assert "classifier head" in printed and "wrote " in printed
    md = out.with_suffix(".md").read_text()
    assert md.startswith("# Quantized adapter artifacts") and "| Kron-LoRA | int4 |" in md


@pytest.mark.integration
def test_command_on_real_arc_data_with_the_tiny_model(tmp_path, capsys):
    out = tmp_path / "q"
    code = bq.main(["--model", "tiny", "--tasks", "arc_challenge", "--methods", "lora", "--max-train", "16",
                    "--max-test", "16", "--epochs", "1", "--threads", "0", "--data-dir", str(SHARED_DATA), "--out", str(out)])
    assert code == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["tasks"]["arc_challenge"]["sizes"]["train"] == 16
    assert [r["scheme"] for r in report["tasks"]["arc_challenge"]["rows"]] == list(bm.SCHEMES)


def test_answering_with_refuses_per_task_routing():
    from kroncl.strategy.adapter_sets import AdapterSets

    with pytest.raises(ValueError, match="sequential mode, got mode 'per_task'"), \
            bm.answering_with(AdapterSets("per_task", current="task0"), "x"):
        pass
