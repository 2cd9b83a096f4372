"""The AdapterLinear contract on KronLoRALinear, LoRALinear and DenseDeltaLinear."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kroncl.adapters.layers import AdapterLinear, DenseDeltaLinear, KronLoRALinear, LoRALinear
from kroncl.adapters.math import kron_delta, kron_param_count
from kroncl.errors import AdapterConfigError, AdapterStateError


def _base(d_in=12, d_out=8, bias=True, seed=0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d_in, d_out, bias=bias)


def _make(kind: str, base: nn.Linear) -> AdapterLinear:
    if kind == "kron":
        return KronLoRALinear(base, a_out=2, a_in=4, r=2, alpha=4.0, layer_name="blk.fc")
    if kind == "lora":
        return LoRALinear(base, r=3, alpha=6.0, layer_name="blk.fc")
    return DenseDeltaLinear(base, layer_name="blk.fc")


def _randomize(layer: AdapterLinear, name: str = "default", seed: int = 5) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.adapter_parameters(name).values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


KINDS = ["kron", "lora", "dense"]


@pytest.mark.parametrize("kind", KINDS)
def test_zero_init_leaves_output_unchanged(kind):
    base = _base()
    ref = nn.Linear(12, 8)
    ref.load_state_dict(base.state_dict())
    layer = _make(kind, base)
    x = torch.randn(3, 5, 12)
    assert torch.equal(layer(x), ref(x))
    assert torch.count_nonzero(layer.delta_weight("default")) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_forward_equals_dense_reference(kind):
    layer = _make(kind, _base())
    _randomize(layer)
    x = torch.randn(4, 12)
    w = layer.base_layer.weight + layer.delta_weight("default")
    b = layer.base_layer.bias + (layer.delta_bias("default") if layer.delta_bias("default") is not None else 0)
    torch.testing.assert_close(layer(x), x @ w.T + b, rtol=1e-5, atol=1e-5)


def test_kron_layer_delta_is_scaled_kron_and_param_count():
    layer = _make("kron", _base())
    _randomize(layer)
    f = layer.adapters["default"]
    assert (f.A.shape, f.B1.shape, f.B2.shape) == ((2, 4), (4, 2), (2, 3))
    torch.testing.assert_close(layer.delta_weight("default"), 2.0 * torch.kron(f.A, f.B1 @ f.B2))
    torch.testing.assert_close(layer.delta_weight("default"), kron_delta(f.A, f.B1, f.B2, 4.0 / 2))
    counted = sum(p.numel() for p in layer.adapter_parameters("default").values())
    assert counted == kron_param_count(layer.shape, 2) == 2 * 4 + 2 * (4 + 3)


def test_only_b1_is_zero_at_init_so_training_can_start():
    layer = _make("kron", _base())
    f = layer.adapters["default"]
    assert torch.count_nonzero(f.B1) == 0
    assert torch.count_nonzero(f.A) > 0 and torch.count_nonzero(f.B2) > 0
    layer(torch.randn(6, 12)).pow(2).sum().backward()
    assert torch.count_nonzero(f.B1.grad) > 0


@pytest.mark.parametrize("kind", KINDS)
def test_merge_same_outputs_unmerge_bit_exact_and_idempotent(kind):
    layer = _make(kind, _base())
    _randomize(layer)
    w0 = layer.base_layer.weight.detach().clone()
    b0 = layer.base_layer.bias.detach().clone()
    x = torch.randn(5, 12)
    y = layer(x)
    layer.merge("default")
    assert layer.merged_adapter == "default"
    torch.testing.assert_close(layer(x), y, rtol=1e-5, atol=1e-6)
    w_merged = layer.base_layer.weight.detach().clone()
    layer.merge("default")  # second merge must not add ΔW again
    assert torch.equal(layer.base_layer.weight, w_merged)
    torch.testing.assert_close(layer(x), y, rtol=1e-5, atol=1e-6)
    layer.unmerge()
    assert layer.merged_adapter is None
    assert torch.equal(layer.base_layer.weight, w0)
    assert torch.equal(layer.base_layer.bias, b0)
    torch.testing.assert_close(layer(x), y)
    layer.unmerge()  # no-op
    assert torch.equal(layer.base_layer.weight, w0)


def test_dense_head_merge_without_base_bias_restores_none():
    layer = DenseDeltaLinear(_base(bias=False))
    _randomize(layer)
    x = torch.randn(2, 12)
    y = layer(x)
    layer.merge("default")
    torch.testing.assert_close(layer(x), y, rtol=1e-5, atol=1e-6)
    layer.unmerge()
    assert layer.base_layer.bias is None


def test_merging_another_set_replaces_the_merged_one():
    layer = _make("kron", _base())
    _randomize(layer, "default", seed=1)
    layer.add_adapter("t1")
    _randomize(layer, "t1", seed=2)
    w0 = layer.base_layer.weight.detach().clone()
    layer.merge("default")
    layer.merge("t1")
    torch.testing.assert_close(layer.base_layer.weight, w0 + layer.delta_weight("t1"))
    layer.unmerge()
    assert torch.equal(layer.base_layer.weight, w0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_merge_refuses_non_finite_and_changes_nothing(bad):
    layer = _make("kron", _base())
    _randomize(layer)
    w0 = layer.base_layer.weight.detach().clone()
    with torch.no_grad():
        layer.adapters["default"].A[0, 0] = bad
    with pytest.raises(AdapterStateError, match=r"layer 'blk\.fc'.*non-finite weight"):
        layer.merge("default")
    assert layer.merged_adapter is None
    assert torch.equal(layer.base_layer.weight, w0)


def test_activating_other_set_while_merged_is_refused():
    layer = _make("lora", _base())
    layer.add_adapter("t1")
    layer.merge("default")
    with pytest.raises(AdapterStateError, match="unmerge"):
        layer.active_adapter = "t1"
    with pytest.raises(AdapterStateError, match="merged"):
        layer.delete_adapter("default")


def test_named_sets_routing_warm_start_and_delete():
    layer = _make("kron", _base())
    _randomize(layer, "default")
    layer.add_adapter("warm", init_from="default")
    layer.add_adapter("fresh")
    x = torch.randn(3, 12)
    base_y = layer.base_layer(x)
    for name in ("default", "warm"):
        layer.active_adapter = name
        torch.testing.assert_close(layer(x), base_y + x @ layer.delta_weight(name).T, rtol=1e-5, atol=1e-6)
    # Warm start copies values, not storage.
    a_def, a_warm = layer.adapters["default"].A, layer.adapters["warm"].A
    assert torch.equal(a_def, a_warm) and a_def.data_ptr() != a_warm.data_ptr()
    with torch.no_grad():
        a_warm.add_(1.0)
    assert not torch.equal(a_def, a_warm)
    layer.active_adapter = "fresh"
    assert torch.equal(layer(x), base_y)
    layer.active_adapter = None
    assert torch.equal(layer(x), base_y)
    with pytest.raises(AdapterStateError, match="no adapter set 'nope'"):
        layer.active_adapter = "nope"
    with pytest.raises(AdapterStateError, match="already has"):
        layer.add_adapter("warm")
    layer.active_adapter = "warm"
    layer.delete_adapter("warm")
    assert layer.active_adapter is None and "warm" not in layer.adapters


def test_dropout_only_in_training():
    layer = KronLoRALinear(_base(), 2, 2, r=2, alpha=2.0, dropout=0.5)
    _randomize(layer)
    x = torch.randn(50, 12)
    layer.eval()
    torch.testing.assert_close(layer(x), layer.base_layer(x) + x @ layer.delta_weight("default").T,
                               rtol=1e-5, atol=1e-6)
    layer.train()
    torch.manual_seed(0)
    y1 = layer(x)
    torch.manual_seed(1)
    assert not torch.allclose(y1, layer(x))


def test_base_is_frozen_and_non_linear_refused():
    layer = _make("kron", _base())
    assert not any(p.requires_grad for p in layer.base_layer.parameters())
    assert all(p.requires_grad for p in layer.adapter_parameters("default").values())
    with pytest.raises(AdapterConfigError, match="Conv1d, not an nn.Linear"):
        KronLoRALinear(nn.Conv1d(4, 4, 1), 2, 2, 2, 2.0, layer_name="conv")


def test_bfloat16_base_keeps_dtype():
    base = _base().to(torch.bfloat16)
    layer = KronLoRALinear(base, 2, 2, r=2, alpha=2.0)
    y = layer(torch.randn(3, 12, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and layer.adapters["default"].A.dtype == torch.bfloat16
