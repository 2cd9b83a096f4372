"""``strategy=orthogonal`` with O-LoRA semantics: fresh sets, earlier sets frozen *and active*."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kroncl.adapters import adapter_names, add_adapter, set_stacked_adapters
from kroncl.adapters.layers import KronLoRALinear
from kroncl.errors import AdapterStateError
from kroncl.strategy.loop import run_stream


def test_a_stacked_set_adds_its_delta_to_the_active_ones():
    torch.manual_seed(0)
    layer = KronLoRALinear(nn.Linear(8, 6), a_out=2, a_in=2, r=2, alpha=4.0, adapter_name="t0")
    layer.add_adapter("t1")
    for name in ("t0", "t1"):
        for p in layer.adapters[name].parameters():
            nn.init.normal_(p)
    x = torch.randn(5, 8)
    base = layer.base_layer(x)
    expected = base + x @ (layer.delta_weight("t0") + layer.delta_weight("t1")).T
    layer.active_adapter = "t1"
    layer.stacked_adapters = ("t0",)
    assert torch.allclose(layer(x), expected, atol=1e-5)
    layer.stacked_adapters = ("t1",)  # the active set listed again counts once
    assert torch.allclose(layer(x), base + x @ layer.delta_weight("t1").T, atol=1e-5)
    layer.delete_adapter("t1")
    assert layer.stacked_adapters == ()


def test_orthogonal_trains_a_fresh_set_on_top_of_the_frozen_earlier_one(build, toy_tasks):
    strategy, benchmark, matrix = build(toy_tasks, mode="orthogonal", orthogonal_lambda=1.0, lr=1e-2)
    backbone = strategy.model.backbone
    seen = {}

    def snap(index, _experience, _matrix):
        seen[index] = {n: p.detach().clone() for n, p in backbone.named_parameters() if ".adapters." in n}

    class AtStart:
        def __getattr__(self, name):
            return lambda *a, **k: None

        def before_training_epoch(self, strategy, **kwargs):
            if strategy.experience_index == 1 and "start" not in seen:
                layer = next(m for m in backbone.modules() if hasattr(m, "stacked_adapters"))
                seen["start"] = {n: p.detach().clone() for n, p in backbone.named_parameters() if ".task1." in n}
                seen["stacked"] = layer.stacked_adapters

    strategy.plugins.append(AtStart())
    run_stream(strategy, benchmark, matrix, on_experience_end=snap, log=lambda _: None)
    assert adapter_names(backbone) == ["task0", "task1"] and seen["stacked"] == ("task0",)
    # Fresh, not a copy: Kron's B1 starts at zero, so the new set starts with ΔW = 0.
    b1 = [t for n, t in seen["start"].items() if n.endswith(".B1")]
    assert b1 and all(not t.any() for t in b1)
    copied = [n for n, t in seen["start"].items() if torch.equal(t, seen[0][n.replace(".task1.", ".task0.")])]
    assert not [n for n in copied if n.endswith(".B2")], "task1's B2 was copied from task0"
    # task0 stays frozen; the model answering task 0 after experience 1 is task0 + task1,
    # so (unlike per_task) its accuracy can move.
    assert all(torch.equal(seen[1][n], t) for n, t in seen[0].items() if ".task0." in n)
    assert strategy.adapter_sets.route(0) == strategy.adapter_sets.route(1) == "task1"


def test_set_stacked_adapters_checks_every_layer_first(build, toy_tasks):
    strategy, _, _ = build(toy_tasks, mode="orthogonal")
    backbone = strategy.model.backbone
    with pytest.raises(AdapterStateError, match="no adapter set 'nope'"):
        set_stacked_adapters(backbone, ["nope"])
    add_adapter(backbone, "extra")
    set_stacked_adapters(backbone, ["extra"])
    assert {m.stacked_adapters for m in backbone.modules() if hasattr(m, "stacked_adapters")} == {("extra",)}
