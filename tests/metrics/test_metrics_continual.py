"""Hand-computed 3x3 accuracy matrices against the GEM / Chaudhry / Avalanche formulas."""

from __future__ import annotations

import math

import pytest

from kroncl.metrics import (
    average_accuracy,
    avalanche_bwt,
    avalanche_bwt_per_task,
    avalanche_forgetting,
    avalanche_forgetting_per_task,
    avalanche_forward_transfer,
    avalanche_forward_transfer_per_task,
    backward_transfer,
    backward_transfer_per_task,
    forgetting,
    forgetting_per_task,
    forward_transfer,
    forward_transfer_per_task,
    metrics_over_time,
    summarize,
)

# Plain sequential fine-tuning: every earlier task drops after the next one is learned.
R_PLAIN = [
    [0.80, 0.40, 0.10],
    [0.60, 0.90, 0.35],
    [0.70, 0.50, 0.95],
]
B_PLAIN = [0.25, 0.30, 0.20]

# Task 0 *improves* after experience 1 (0.60 -> 0.80) and then drops: Chaudhry's max over
# earlier rows (0.80) differs from Avalanche's "right after training" value (0.60).
R_TRANSFER = [
    [0.60, 0.30, 0.20],
    [0.80, 0.70, 0.25],
    [0.50, 0.75, 0.90],
]
B_TRANSFER = [0.25, 0.25, 0.25]

# Zero-shot accuracy on task 1 after experience 0 (0.8) beats its accuracy after training it
# (0.6): Chaudhry's max runs over rows before task 1 was trained too.
R_ZEROSHOT_PEAK = [
    [0.9, 0.8, 0.1],
    [0.7, 0.6, 0.2],
    [0.5, 0.4, 0.9],
]


def approx(x):
    return pytest.approx(x, abs=1e-12)


def test_plain_sequential_matrix():
    assert average_accuracy(R_PLAIN) == approx((0.70 + 0.50 + 0.95) / 3)
    assert backward_transfer_per_task(R_PLAIN) == approx([0.70 - 0.80, 0.50 - 0.90])
    assert backward_transfer(R_PLAIN) == approx(-0.25)
    assert forward_transfer_per_task(R_PLAIN, B_PLAIN) == approx([0.40 - 0.30, 0.35 - 0.20])
    assert forward_transfer(R_PLAIN, B_PLAIN) == approx(0.125)
    assert forgetting_per_task(R_PLAIN) == approx([0.10, 0.40])
    assert forgetting(R_PLAIN) == approx(0.25)
    # No intermediate peak: Avalanche and Chaudhry agree, and BWT = -forgetting.
    assert avalanche_forgetting_per_task(R_PLAIN) == approx([0.10, 0.40])
    assert avalanche_forgetting(R_PLAIN) == approx(0.25)
    assert avalanche_bwt(R_PLAIN) == approx(-0.25)
    assert avalanche_forward_transfer(R_PLAIN, B_PLAIN) == approx(0.125)


def test_chaudhry_and_avalanche_forgetting_differ_when_a_task_improves_later():
    assert forgetting_per_task(R_TRANSFER) == approx([0.80 - 0.50, 0.70 - 0.75])
    assert forgetting(R_TRANSFER) == approx(0.125)
    assert avalanche_forgetting_per_task(R_TRANSFER) == approx([0.60 - 0.50, 0.70 - 0.75])
    assert avalanche_forgetting(R_TRANSFER) == approx(0.025)
    # Avalanche's BWT is the negated forgetting and equals GEM's BWT.
    assert avalanche_bwt_per_task(R_TRANSFER) == approx([-0.10, 0.05])
    assert avalanche_bwt(R_TRANSFER) == approx(-0.025)
    assert backward_transfer(R_TRANSFER) == approx(-0.025)
    assert forward_transfer(R_TRANSFER, B_TRANSFER) == approx((0.05 + 0.0) / 2)


def test_chaudhry_max_includes_rows_before_the_task_was_trained():
    assert forgetting_per_task(R_ZEROSHOT_PEAK) == approx([0.4, 0.8 - 0.4])
    assert avalanche_forgetting_per_task(R_ZEROSHOT_PEAK) == approx([0.4, 0.6 - 0.4])
    assert forgetting(R_ZEROSHOT_PEAK) == approx(0.4)
    assert avalanche_forgetting(R_ZEROSHOT_PEAK) == approx(0.3)


def test_metrics_over_time_by_hand():
    rows = metrics_over_time(R_TRANSFER, B_TRANSFER)
    assert [r["experience"] for r in rows] == [0, 1, 2]

    first, second, last = rows
    assert first["acc"] == approx(0.60)
    assert first["bwt"] is None and first["forgetting"] is None and first["fwt"] is None
    assert first["avalanche_forgetting"] == 0.0 and first["avalanche_bwt"] == 0.0
    # Avalanche already counts the next, untrained task: R[0][1] - b[1].
    assert first["avalanche_fwt"] == approx(0.30 - 0.25)

    assert second["acc"] == approx((0.80 + 0.70) / 2)
    assert second["bwt"] == approx(0.80 - 0.60)
    assert second["forgetting"] == approx(0.60 - 0.80)
    assert second["fwt"] == approx(0.30 - 0.25)
    assert second["avalanche_forgetting"] == approx(-0.20)
    assert second["avalanche_bwt"] == approx(0.20)
    assert second["avalanche_fwt"] == approx(((0.30 - 0.25) + (0.25 - 0.25)) / 2)

    # The last entry is the summary of the whole stream.
    summary = summarize(R_TRANSFER, B_TRANSFER)
    for key in ("acc", "bwt", "fwt", "forgetting", "avalanche_forgetting", "avalanche_bwt", "avalanche_fwt"):
        assert last[key] == approx(summary[key]), key


def test_metrics_over_time_accepts_a_stream_still_running():
    rows = metrics_over_time(R_PLAIN[:2], B_PLAIN)
    assert len(rows) == 2
    assert rows[1]["acc"] == approx((0.60 + 0.90) / 2)
    assert rows[1]["avalanche_fwt"] == approx(((0.40 - 0.30) + (0.35 - 0.20)) / 2)


def test_summarize_contents():
    s = summarize(R_PLAIN, B_PLAIN)
    assert s["num_tasks"] == 3
    assert s["per_task"]["final_acc"] == R_PLAIN[2]
    assert s["per_task"]["bwt"] == approx([-0.10, -0.40])
    assert s["per_task"]["fwt"] == approx([0.10, 0.15])
    assert s["per_task"]["forgetting"] == approx([0.10, 0.40])


def test_single_task_edge_case():
    R = [[0.7]]
    assert average_accuracy(R) == approx(0.7)
    assert backward_transfer(R) is None
    assert forgetting(R) is None
    assert forward_transfer(R, [0.5]) is None
    assert backward_transfer_per_task(R) == [] and forgetting_per_task(R) == []
    # Avalanche's Mean() reports 0.0 when it has seen nothing.
    assert avalanche_forgetting(R) == 0.0
    assert avalanche_bwt(R) == 0.0
    assert avalanche_forward_transfer(R, [0.5]) == 0.0
    s = summarize(R, None)
    assert s["bwt"] is None and s["fwt"] is None and s["avalanche_fwt"] is None


def test_missing_baseline():
    assert forward_transfer(R_PLAIN, None) is None
    assert forward_transfer_per_task(R_PLAIN, None) is None
    assert avalanche_forward_transfer(R_PLAIN, None) is None
    partial = [0.25, None, 0.20]
    assert forward_transfer_per_task(R_PLAIN, partial) == [None, approx(0.15)]
    assert forward_transfer(R_PLAIN, partial) is None
    assert avalanche_forward_transfer_per_task(R_PLAIN, partial) is None
    # b[0] is never used by FWT.
    assert forward_transfer(R_PLAIN, [None, 0.30, 0.20]) == approx(0.125)


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ([], "no rows"),
        ([[0.1, 0.2], [0.3]], "row 1 has 1 entries"),
        ([[0.1, None], [0.3, 0.4]], r"R\[0\]\[1\]=None"),
        ([[0.1, math.nan], [0.3, 0.4]], "not finite"),
        ([[0.1, 0.2, 0.3], [0.3, 0.4, 0.5]], "expected square"),
    ],
)
def test_invalid_matrices_are_rejected(matrix, message):
    with pytest.raises(ValueError, match=message):
        backward_transfer(matrix)


def test_short_baseline_is_rejected():
    with pytest.raises(ValueError, match="baseline has 2 entries"):
        forward_transfer(R_PLAIN, [0.1, 0.2])
