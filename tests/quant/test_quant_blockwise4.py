"""Block-wise 4-bit ("int4" and "nf4"): error bounds, padding, NF4 code book, scales."""

import math

import pytest
import torch

from kroncl.errors import QuantizationError
from kroncl.quant import (
    NF4_CODEBOOK,
    codebook_values,
    dequantize_blockwise_4bit,
    quantize_blockwise_4bit,
    relative_error,
)

NF4_HALF_GAP = max(b - a for a, b in zip(NF4_CODEBOOK, NF4_CODEBOOK[1:])) / 2


def _round_trip(x, block_size, codebook, scale_dtype=torch.bfloat16):
    packed, scales = quantize_blockwise_4bit(x, block_size, codebook, scale_dtype)
    out = dequantize_blockwise_4bit(packed, scales, x.shape, block_size, codebook)
    return packed, scales, out


def _check_bound(x, scales, out, block_size, codebook):
    """|x - x_hat| <= scale/2 (int4) or scale * max_gap/2 (nf4) per element, per block."""
    n = x.numel()
    per_elem_scale = scales.float().repeat_interleave(block_size)[:n]
    half_step = per_elem_scale / 2 if codebook == "int4" else per_elem_scale * NF4_HALF_GAP
    xf = x.float().reshape(-1)
    err = (out.reshape(-1) - xf).abs()
    slack = 1e-6 * xf.abs() + 1e-38
    assert bool((err <= half_step + slack).all()), f"max excess {(err - half_step).max()}"


@pytest.mark.parametrize("codebook", ["int4", "nf4"])
@pytest.mark.parametrize(
    ("shape", "block_size"),
    [((384, 8), 64), ((8, 1536), 64), ((1,), 64), ((63,), 64), ((65,), 64), ((129,), 64),
     ((7, 9), 64), ((5, 13), 7), ((10,), 1), ((3, 4, 5), 16)],
)
def test_round_trip_within_bound(codebook, shape, block_size):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    packed, scales, out = _round_trip(x, block_size, codebook)
    n = x.numel()
    assert packed.dtype == torch.uint8 and packed.shape == ((n + 1) // 2,)
    assert scales.shape == (math.ceil(n / block_size),)
    assert out.shape == x.shape and out.dtype == torch.float32
    _check_bound(x, scales, out, block_size, codebook)


@pytest.mark.parametrize("codebook", ["int4", "nf4"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("scale_dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_low_precision_inputs_and_scale_dtypes(codebook, dtype, scale_dtype):
    x = torch.randn(33, 7, generator=torch.Generator().manual_seed(1)).to(dtype)
    packed, scales, out = _round_trip(x, 64, codebook, scale_dtype)
    assert scales.dtype == scale_dtype
    _check_bound(x, scales, out, 64, codebook)
    out_native = dequantize_blockwise_4bit(packed, scales, x.shape, 64, codebook, dtype=dtype)
    assert out_native.dtype == dtype


def test_int4_scale_is_absmax_over_seven():
    x = torch.randn(256, generator=torch.Generator().manual_seed(2))
    _, scales = quantize_blockwise_4bit(x, 64, "int4", torch.float32)
    absmax = x.view(4, 64).abs().amax(dim=1)
    torch.testing.assert_close(scales, absmax / 7)


@pytest.mark.parametrize("codebook", ["int4", "nf4"])
def test_all_zeros_give_exact_zeros(codebook):
    x = torch.zeros(3, 41)
    _, scales, out = _round_trip(x, 64, codebook)
    assert torch.equal(out, x)
    assert not torch.isnan(out).any()
    assert torch.equal(scales.float(), torch.zeros_like(scales.float()))


@pytest.mark.parametrize("codebook", ["int4", "nf4"])
def test_huge_outlier_only_coarsens_its_own_block(codebook):
    x = torch.randn(4 * 64, generator=torch.Generator().manual_seed(3))
    x[70] = 1e20  # block 1
    _, scales, out = _round_trip(x, 64, codebook)
    assert bool(torch.isfinite(scales.float()).all())
    _check_bound(x, scales, out, 64, codebook)
    assert float(out[70]) == pytest.approx(1e20, rel=1e-2)
    others = torch.cat([torch.arange(0, 64), torch.arange(128, 256)])
    assert relative_error(x[others], out[others]) < 0.2


def test_exactly_representable_values_are_exact():
    # int4: multiples of 0.5 up to 3.5 with absmax 3.5 -> scale exactly 0.5.
    levels = torch.arange(-7, 8, dtype=torch.float32) * 0.5
    x = torch.cat([levels, levels.flip(0)])  # 30 values: one partial block
    _, _, out = _round_trip(x, 64, "int4")
    assert torch.equal(out, x)
    # nf4: the code book itself (absmax 1) comes back exactly.
    nf4 = torch.tensor(NF4_CODEBOOK) * 2.0
    _, _, out = _round_trip(nf4, 16, "nf4", torch.float32)
    assert torch.equal(out, nf4)


@pytest.mark.parametrize("codebook", ["int4", "nf4"])
def test_scaling_the_input_scales_the_stored_scales(codebook):
    x = torch.randn(200, generator=torch.Generator().manual_seed(4))
    p1, s1 = quantize_blockwise_4bit(x, 64, codebook)
    p8, s8 = quantize_blockwise_4bit(x * 8, 64, codebook)  # power of two: exact
    assert torch.equal(p1, p8) and torch.equal(s8, s1 * 8)
    p1, s1 = quantize_blockwise_4bit(x, 64, codebook, torch.float32)
    p10, s10 = quantize_blockwise_4bit(x * 10, 64, codebook, torch.float32)
    assert torch.equal(p1, p10)
    torch.testing.assert_close(s10, s1 * 10, rtol=1e-6, atol=0)
    out_a = dequantize_blockwise_4bit(p1, s1 * 10, x.shape, 64, codebook)
    out_b = dequantize_blockwise_4bit(p10, s10, x.shape, 64, codebook)
    torch.testing.assert_close(out_a, out_b)
    torch.testing.assert_close(out_a, 10 * dequantize_blockwise_4bit(p1, s1, x.shape, 64, codebook))


def test_nf4_codebook_matches_qlora_construction():
    # QLoRA / bitsandbytes create_normal_map(offset=0.9677083, use_extra_value=True).
    from scipy.stats import norm

    offset = 0.9677083
    positive = norm.ppf(torch.linspace(offset, 0.5, 9)[:-1].double().numpy()).tolist()
    negative = (-norm.ppf(torch.linspace(offset, 0.5, 8)[:-1].double().numpy())).tolist()
    values = torch.tensor(sorted(positive + [0.0] + negative), dtype=torch.float64)
    values = values / values.abs().max()
    torch.testing.assert_close(codebook_values("nf4").double(), values, atol=1e-6, rtol=0)


def test_nf4_beats_int4_on_gaussian_weights():
    x = torch.randn(64 * 64, generator=torch.Generator().manual_seed(5))
    err_int4 = relative_error(x, _round_trip(x, 64, "int4")[2])
    err_nf4 = relative_error(x, _round_trip(x, 64, "nf4")[2])
    assert err_nf4 < err_int4 < 0.15


def test_corrupt_int4_code_and_bad_counts_raise():
    x = torch.randn(10, generator=torch.Generator().manual_seed(6))
    packed, scales = quantize_blockwise_4bit(x, 4, "int4")
    corrupt = packed.clone()
    corrupt[0] = 0
    with pytest.raises(ValueError, match="code 0"):
        dequantize_blockwise_4bit(corrupt, scales, x.shape, 4, "int4")
    with pytest.raises(ValueError, match="need 3 scales"):
        dequantize_blockwise_4bit(packed, scales[:2], x.shape, 4, "int4")
    with pytest.raises(ValueError, match="need 5 bytes"):
        dequantize_blockwise_4bit(packed[:4], scales, x.shape, 4, "int4")
    with pytest.raises(ValueError, match="'fp4'"):
        quantize_blockwise_4bit(x, 4, "fp4")
    with pytest.raises(ValueError, match="block_size"):
        quantize_blockwise_4bit(x, 0, "int4")
    with pytest.raises(QuantizationError, match="NaN/inf"):
        quantize_blockwise_4bit(torch.tensor([1.0, float("inf")]), 4, "int4")
