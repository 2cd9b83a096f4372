"""Pure adapter math against dense references."""

from __future__ import annotations

import pytest
import torch

from kroncl.adapters.math import (
    KronShape,
    kron_apply,
    kron_delta,
    kron_factors,
    kron_param_count,
    lora_apply,
    lora_delta,
    lora_param_count,
)
from kroncl.errors import AdapterConfigError

SHAPES = [  # (a_out, a_in, b_out, b_in, r)
    (2, 2, 3, 5, 2),
    (4, 2, 6, 16, 3),
    (1, 3, 7, 4, 1),
    (3, 1, 2, 9, 4),
]


def _factors(a_out, a_in, b_out, b_in, r, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(a_out, a_in, generator=g, dtype=dtype)
    B1 = torch.randn(b_out, r, generator=g, dtype=dtype)
    B2 = torch.randn(r, b_in, generator=g, dtype=dtype)
    return A, B1, B2


@pytest.mark.parametrize("a_out,a_in,b_out,b_in,r", SHAPES)
def test_kron_delta_matches_torch_kron_and_index_formula(a_out, a_in, b_out, b_in, r):
    A, B1, B2 = _factors(a_out, a_in, b_out, b_in, r)
    delta = kron_delta(A, B1, B2, 0.75)
    assert delta.shape == (a_out * b_out, a_in * b_in)
    torch.testing.assert_close(delta, 0.75 * torch.kron(A, B1 @ B2), rtol=0, atol=1e-12)
    C = B1 @ B2
    for i, j, k, l in [(0, 0, 0, 0), (a_out - 1, a_in - 1, b_out - 1, b_in - 1), (a_out // 2, 0, b_out // 2, b_in - 1)]:
        assert delta[i * b_out + k, j * b_in + l].item() == pytest.approx(0.75 * A[i, j].item() * C[k, l].item())


@pytest.mark.parametrize("a_out,a_in,b_out,b_in,r", SHAPES)
@pytest.mark.parametrize("lead", [(5,), (2, 3), ()])
def test_kron_apply_equals_dense_forward(a_out, a_in, b_out, b_in, r, lead):
    A, B1, B2 = _factors(a_out, a_in, b_out, b_in, r)
    x = torch.randn(*lead, a_in * b_in, dtype=torch.float64)
    dense = x @ kron_delta(A, B1, B2, 1.5).T
    torch.testing.assert_close(kron_apply(x, A, B1, B2, 1.5), dense)
    base = torch.randn(*lead, a_out * b_out, dtype=torch.float64)
    base_copy = base.clone()
    torch.testing.assert_close(kron_apply(x, A, B1, B2, 1.5, out=base), base + dense)
    assert torch.equal(base, base_copy), "out must not be modified in place"


def test_kron_apply_non_contiguous_input():
    A, B1, B2 = _factors(2, 2, 4, 6, 3)
    x = torch.randn(12, 5, dtype=torch.float64).T  # (5, 12), non-contiguous
    torch.testing.assert_close(kron_apply(x, A, B1, B2, 1.0), x @ kron_delta(A, B1, B2, 1.0).T)


@pytest.mark.parametrize("a_out,a_in,b_out,b_in,r", SHAPES)
def test_kron_apply_gradients_equal_dense_gradients(a_out, a_in, b_out, b_in, r):
    A, B1, B2 = _factors(a_out, a_in, b_out, b_in, r)
    W = torch.randn(a_out * b_out, a_in * b_in, dtype=torch.float64)
    x = torch.randn(4, 3, a_in * b_in, dtype=torch.float64)
    g = torch.randn(4, 3, a_out * b_out, dtype=torch.float64)

    def grads(fast: bool):
        leaves = [t.clone().requires_grad_(True) for t in (A, B1, B2, x)]
        a, b1, b2, xx = leaves
        if fast:
            y = kron_apply(xx, a, b1, b2, 0.5, out=xx @ W.T)
        else:
            y = xx @ (W + kron_delta(a, b1, b2, 0.5)).T
        y.backward(g)
        return y.detach(), [t.grad for t in leaves]

    y_fast, g_fast = grads(True)
    y_dense, g_dense = grads(False)
    torch.testing.assert_close(y_fast, y_dense)
    for name, gf, gd in zip(["A", "B1", "B2", "x"], g_fast, g_dense):
        torch.testing.assert_close(gf, gd, msg=lambda m, n=name: f"grad {n}: {m}")


def test_lora_apply_and_gradients_equal_dense():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(3, 10, generator=g, dtype=torch.float64, requires_grad=True)
    B = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 4, 10, generator=g, dtype=torch.float64, requires_grad=True)
    y = lora_apply(x, A, B, 2.0)
    ref = x @ lora_delta(A, B, 2.0).T
    torch.testing.assert_close(y, ref)
    fast = torch.autograd.grad(y.sum(), [A, B, x])
    dense = torch.autograd.grad(ref.sum(), [A, B, x])
    for a, b in zip(fast, dense):
        torch.testing.assert_close(a, b)


def test_kron_factors_shapes():
    assert kron_factors(384, 1536, 4, 4) == KronShape(4, 4, 96, 384)
    s = kron_factors(12, 10, 3, 5)
    assert (s.d_out, s.d_in, s.b_out, s.b_in) == (12, 10, 4, 2)


def test_kron_factors_error_names_layer_and_sizes():
    with pytest.raises(AdapterConfigError) as e:
        kron_factors(10, 8, 4, 3, layer="encoder.layer.0.attention.self.query")
    msg = str(e.value)
    for part in ("encoder.layer.0.attention.self.query", "a_out=4", "d_out=10", "a_in=3", "d_in=8"):
        assert part in msg
    with pytest.raises(AdapterConfigError, match="a_in=0 must be a positive integer"):
        kron_factors(8, 8, 2, 0)


@pytest.mark.parametrize("d", [384, 768, 4096])
def test_param_count_formulas(d):
    s = kron_factors(d, d, 4, 4)
    assert kron_param_count(s, 8) == 16 + 4 * d
    assert lora_param_count(d, d, 8) == 16 * d
    A, B1, B2 = _factors(*s, 8)
    assert A.numel() + B1.numel() + B2.numel() == kron_param_count(s, 8)
