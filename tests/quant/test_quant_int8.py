"""Per-row symmetric int8: error bound, adversarial inputs, scales stored and used."""

import pytest
import torch

from kroncl.errors import QuantizationError
from kroncl.quant import dequantize_int8_rows, quantize_int8_rows, relative_error
from kroncl.quant.int8 import as_rows

SHAPES = [(384, 8), (8, 1536), (7,), (3, 5, 4), (1, 1)]


def _check_bound(x, q, scales):
    """Every element within stored_scale / 2 of the input (plus float32 rounding)."""
    rows, cols = as_rows(x.shape)
    x2 = x.float().reshape(rows, cols)
    s = scales.float().unsqueeze(1)
    err = (dequantize_int8_rows(q, scales, x.shape).reshape(rows, cols) - x2).abs()
    slack = 1e-6 * x2.abs() + 1e-38
    assert bool((err <= s / 2 + slack).all()), f"max excess {(err - s / 2).max()}"
    assert int(q.abs().max()) <= 127


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scale_dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_round_trip_within_half_a_step(shape, dtype, scale_dtype):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    q, scales = quantize_int8_rows(x, scale_dtype)
    rows, cols = as_rows(shape)
    assert q.dtype == torch.int8 and tuple(q.shape) == (rows, cols)
    assert scales.shape == (rows,) and scales.dtype == scale_dtype
    _check_bound(x, q, scales)
    # The row maximum lands on the outermost level: the scale is really absmax / 127.
    assert bool((q.abs().amax(dim=1) == 127).all())


def test_all_zeros_give_exact_zeros():
    x = torch.zeros(4, 6)
    q, scales = quantize_int8_rows(x)
    out = dequantize_int8_rows(q, scales, x.shape)
    assert torch.equal(out, x)
    assert not torch.isnan(out).any()
    assert torch.equal(scales.float(), torch.zeros(4))


def test_zero_row_next_to_nonzero_rows():
    x = torch.randn(3, 10, generator=torch.Generator().manual_seed(1))
    x[1] = 0
    q, scales = quantize_int8_rows(x)
    out = dequantize_int8_rows(q, scales, x.shape)
    assert torch.equal(out[1], torch.zeros(10))
    _check_bound(x, q, scales)


def test_huge_outlier_only_coarsens_its_own_row():
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(2))
    x[2, 5] = 1e30
    q, scales = quantize_int8_rows(x)  # bfloat16 scales: 1e30 / 127 is in range
    assert bool(torch.isfinite(scales.float()).all())
    _check_bound(x, q, scales)
    out = dequantize_int8_rows(q, scales, x.shape)
    others = [0, 1, 3]
    assert float((out[others] - x[others]).abs().max()) < 0.02


def test_float16_scales_fall_back_to_float32_outside_their_range():
    big = torch.randn(3, 16, generator=torch.Generator().manual_seed(3))
    big[0, 0] = 1e8
    q, scales = quantize_int8_rows(big, torch.float16)
    assert scales.dtype == torch.float32
    _check_bound(big, q, scales)
    tiny = torch.randn(3, 16, generator=torch.Generator().manual_seed(4)) * 1e-6
    q, scales = quantize_int8_rows(tiny, torch.float16)
    assert scales.dtype == torch.float32
    _check_bound(tiny, q, scales)
    normal = torch.randn(3, 16, generator=torch.Generator().manual_seed(5))
    assert quantize_int8_rows(normal, torch.float16)[1].dtype == torch.float16


def test_tiny_values_keep_relative_precision_with_bfloat16_scales():
    x = torch.randn(8, 8, generator=torch.Generator().manual_seed(6)) * 1e-30
    q, scales = quantize_int8_rows(x)
    _check_bound(x, q, scales)
    out = dequantize_int8_rows(q, scales, x.shape)
    assert relative_error(x, out) < 0.01  # float64 norms: float32 would underflow


def test_scaling_the_input_scales_the_stored_scales():
    x = torch.randn(16, 24, generator=torch.Generator().manual_seed(7))
    # Power of two: exact in every scale dtype.
    q1, s1 = quantize_int8_rows(x)
    q8, s8 = quantize_int8_rows(x * 8)
    assert torch.equal(q1, q8)
    assert torch.equal(s8, s1 * 8)
    # Factor 10 with float32 scales: same codes, scales 10x.
    q1, s1 = quantize_int8_rows(x, torch.float32)
    q10, s10 = quantize_int8_rows(x * 10, torch.float32)
    assert torch.equal(q1, q10)
    torch.testing.assert_close(s10, s1 * 10, rtol=1e-6, atol=0)
    # And the stored scales are what dequantization uses.
    torch.testing.assert_close(dequantize_int8_rows(q1, s1 * 10), dequantize_int8_rows(q10, s10))


def test_sign_symmetry():
    x = torch.randn(5, 9, generator=torch.Generator().manual_seed(8))
    q, s = quantize_int8_rows(x)
    qn, sn = quantize_int8_rows(-x)
    assert torch.equal(qn, -q) and torch.equal(sn, s)


def test_rejects_non_finite_and_integer_inputs():
    with pytest.raises(QuantizationError, match="1 NaN/inf"):
        quantize_int8_rows(torch.tensor([1.0, float("nan")]))
    with pytest.raises(QuantizationError, match="int64"):
        quantize_int8_rows(torch.tensor([1, 2]))


def test_dequantize_checks_its_inputs():
    q, s = quantize_int8_rows(torch.randn(4, 3))
    with pytest.raises(ValueError, match="4 scales"):
        dequantize_int8_rows(q, s[:3])
    with pytest.raises(ValueError, match="do not fill shape"):
        dequantize_int8_rows(q, s, (5, 3))
    with pytest.raises(ValueError, match="int8"):
        dequantize_int8_rows(q.float(), s)
