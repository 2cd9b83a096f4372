"""relative_error and delta_error_report against hand-computed numbers."""

import math

import pytest
import torch

from kroncl.quant import delta_error_report, relative_error


def test_relative_error_hand_computed():
    delta = torch.tensor([[3.0, 4.0]])  # ‖ΔW‖ = 5
    assert relative_error(delta, torch.tensor([[3.0, 0.0]])) == pytest.approx(0.8)
    assert relative_error(delta, delta) == 0.0


def test_relative_error_of_zero_update():
    zero = torch.zeros(2, 3)
    assert relative_error(zero, zero) == 0.0
    assert relative_error(zero, torch.full((2, 3), 1e-3)) == math.inf


def test_relative_error_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(2, 3\) vs \(3, 2\)"):
        relative_error(torch.zeros(2, 3), torch.zeros(3, 2))


def test_report_hand_computed():
    big = torch.tensor([[3.0, 4.0]])  # norm 5, error norm 1 -> 0.2
    big_hat = torch.tensor([[3.0, 3.0]])
    small = torch.tensor([1.0, 0.0])  # norm 1, error norm 0.5 -> 0.5
    small_hat = torch.tensor([1.0, 0.5])
    report = delta_error_report({"big": (big, big_hat), "small": (small, small_hat)})
    assert report.per_layer == pytest.approx({"big": 0.2, "small": 0.5})
    assert report.mean == pytest.approx(0.35)
    assert report.max == pytest.approx(0.5) and report.max_layer == "small"
    assert report.weighted == pytest.approx((1 + 0.5) / (5 + 1))
    assert report.global_frobenius == pytest.approx(math.sqrt(1.25 / 26))
    assert report.summary() == {
        "quant_rel_err_mean": report.mean,
        "quant_rel_err_max": report.max,
        "quant_rel_err_weighted": report.weighted,
        "quant_rel_err_global": report.global_frobenius,
    }


def test_report_errors():
    with pytest.raises(ValueError, match="at least one"):
        delta_error_report({})
    with pytest.raises(ValueError, match="'bad'"):
        delta_error_report({"bad": (torch.zeros(2), torch.zeros(3))})
