"""Chance level, majority-answer rate and the collapse check beside the accuracy matrix."""

from __future__ import annotations

import doctest
from types import SimpleNamespace as Row

import kroncl.metrics.reference as reference
from kroncl.metrics import AccuracyMatrix
from kroncl.metrics.reference import ReferenceRates, reference_rates, top_prediction
from pipelines.summary import collapse_warnings, format_matrix


def test_doctests():
    assert doctest.testmod(reference).failed == 0


def test_majority_is_the_always_same_position_rate_and_ties_take_the_first_position():
    rows = [Row(choices=("t", "f"), label=0)] * 13 + [Row(choices=("t", "f"), label=1)] * 7
    assert reference_rates(rows) == ReferenceRates(chance=0.5, majority=0.65, majority_choice=0)
    assert reference_rates([Row(choices="abc", label=2), Row(choices="abc", label=1)]).majority_choice == 1
    assert top_prediction({}) [0] == -1


def test_summary_shows_chance_and_majority_rows_and_warns_when_predictions_collapse():
    matrix = AccuracyMatrix(["yes_no", "three_way"])
    matrix.set_baseline(0, 0.5)
    matrix.set_baseline(1, 0.33)
    matrix.set_row(0, [0.65, 0.34])
    refs = {"yes_no": ReferenceRates(0.5, 0.65, 0), "three_way": ReferenceRates(1 / 3, 0.36, 1)}
    table = format_matrix(matrix, refs).splitlines()
    assert table[-2].split() == ["(chance)", "0.500", "0.333"]
    assert table[-1].split() == ["(majority)", "0.650", "0.360"]
    artifacts = [{"top_choice": {"yes_no": [0, 1.0], "three_way": [2, 0.5]}}]
    (warning,) = collapse_warnings(artifacts, refs)
    assert warning.startswith("warning: yes_no: 100% of test rows get answer 0")
    assert "0.650" in warning
    assert collapse_warnings([{"top_choice": {"yes_no": [0, 0.9]}}], refs) == []
