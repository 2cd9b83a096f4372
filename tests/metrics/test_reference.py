"""Chance level, majority-answer rate and the collapse check beside the accuracy matrix."""

from __future__ import annotations

import doctest

import pytest
from types import SimpleNamespace as Row

import kroncl.metrics.reference as reference
from kroncl.metrics import AccuracyMatrix
from kroncl.metrics.reference import ReferenceRates, reference_rates, top_prediction
from pipelines.summary import collapse_warnings, format_matrix, stuck_warnings


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


def test_a_task_that_learnt_nothing_is_a_warning_naming_the_task():
    import math

    refs = {"three_way": ReferenceRates(1 / 3, 0.36, 1), "yes_no": ReferenceRates(0.5, 0.65, 0),
            "arc_easy": ReferenceRates(0.25, 0.3, 2)}
    def rec(task, epochs, uniform, acc):
        return {"task": task, "train_loss": {"epochs": epochs, "chance": uniform, "acc": acc, "test_rows": 100}}
    stuck = rec("three_way", [1.0990, 1.0986, 1.0979], math.log(3), 0.35)
    learnt = rec("yes_no", [0.69, 0.52], math.log(2), 0.55)
    # ARC-Easy with MiniLM: the loss barely moved, yet accuracy left chance (0.37 > 0.25 + 2·0.043)
    ranked = rec("arc_easy", [1.3864, 1.3718], math.log(4), 0.37)
    # records of older runs (no train_loss, or one without the accuracy) are skipped, not guessed
    older = [{"task": "old_run"}, {"task": "arc_easy", "train_loss": {"epochs": [1.386], "chance": math.log(4)}}]
    (warning,) = stuck_warnings([stuck, learnt, ranked, *older], refs)
    assert warning.startswith("warning: three_way: nothing learnt — training loss never left chance (1.098 at best "
                              "over 3 epochs; uniform scores give 1.099) and test accuracy 0.350 is within 2 "
                              "standard errors of chance 0.333")
    assert "train.lr" in warning


def test_train_loss_collector_averages_the_epoch_and_the_uniform_loss_over_padded_choices():
    import math

    import torch
    from types import SimpleNamespace

    from kroncl.models.base import PAD_SCORE
    from kroncl.strategy.plugins import TrainLossCollector

    collector, ce = TrainLossCollector(), torch.nn.functional.cross_entropy
    strategy = SimpleNamespace(experience=SimpleNamespace(current_experience=1), _criterion=ce, world=None)
    collector.before_training_exp(strategy)
    collector.before_training_epoch(strategy)
    # batch 1: uniform over 4 choices; batch 2 (3 rows): one of 3 choices (the 4th padded), confident
    for scores, labels in ((torch.zeros(1, 4), torch.tensor([2])),
                           (torch.tensor([[9.0, 0.0, 0.0, PAD_SCORE]] * 3), torch.tensor([0, 0, 0]))):
        strategy.mb_output, strategy.mb_y = scores, labels
        collector.after_training_iteration(strategy)
    collector.after_training_epoch(strategy)
    confident = float(ce(torch.tensor([[9.0, 0.0, 0.0]]), torch.tensor([0])))
    assert collector.epochs[1] == [pytest.approx((math.log(4) + 3 * confident) / 4)]
    assert collector.chance[1] == pytest.approx((math.log(4) + 3 * math.log(3)) / 4)
