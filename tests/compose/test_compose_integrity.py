"""Composition on bad adapters: refused before the model changes, and a refused merge changes nothing."""

from __future__ import annotations

import math
import re

import pytest
import torch

from kroncl.adapters import AdapterConfig, LoadedAdapter, adapter_layers, adapter_state_dict, inject_adapters
from kroncl.composition import ComposeError, attach_adapters
from kroncl.data.example import MCExample
from kroncl.errors import AdapterStateError
from kroncl.models import ModelConfig, build_model

KRON = AdapterConfig(method="kron", a_out=2, a_in=2, r=4, alpha=8.0, targets=["query", "value"],
                     head_targets=["classifier"])


def _model():
    return build_model(ModelConfig.from_mapping({"name": "tiny", "seed": 0, "max_length": 64}))


def _adapter(cfg: AdapterConfig, seed: int) -> LoadedAdapter:
    """An in-memory adapter with non-zero factors (as if read by load_adapter)."""
    donor = _model()
    inject_adapters(donor.backbone, cfg)
    g = torch.Generator().manual_seed(seed)
    sd = adapter_state_dict(donor.backbone, "default")
    tensors = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in sd.items()}
    return LoadedAdapter(tensors=tensors, config=cfg, meta={"base_model": "tiny"})


def _batch(model) -> dict[str, torch.Tensor]:
    rows = [MCExample(f"q{i}", f"which is larger, {i} or {i + 3}?", (str(i), str(i + 3)), 1) for i in range(6)]
    return model.collate([model.encode(ex) for ex in rows])


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)  # bit exact, NaN == same NaN


def test_a_refused_merge_leaves_the_composed_model_exactly_as_it_was():
    bad = _adapter(KRON, seed=1)
    key = next(k for k in bad.tensors if k.endswith("value.B2") and ".layer.1." in k)
    bad.tensors[key][0, 0] = math.nan
    composed = attach_adapters(_model(), {"task": bad})
    before = {k: v.detach().clone() for k, v in composed.model.state_dict().items()}
    layer = key.removesuffix(".B2")
    with pytest.raises(AdapterStateError, match=re.escape(
        f"layer '{layer}': merging adapter 'task' gives non-finite weight; the adapter factors hold NaN/Inf or "
        "overflow the base dtype, refusing to merge"
    )):
        composed.merge()
    after = composed.model.state_dict()
    assert sorted(after) == sorted(before)
    assert [k for k in before if not torch.equal(_bits(before[k]), _bits(after[k]))] == []
    assert not composed.merged
    assert {m.merged_adapter for m in adapter_layers(composed.model.backbone).values()} == {None}


@pytest.mark.parametrize("change", [{"alpha": 16.0}, {"r": 2}])
def test_resident_adapters_with_another_r_or_alpha_each_answer_as_alone(change):
    other = AdapterConfig(**{**KRON.to_dict(), **change})
    a, b = _adapter(KRON, 1), _adapter(other, 2)
    both = attach_adapters(_model(), {"a": a, "b": b})
    alone = attach_adapters(_model(), {"b": b})
    batch = _batch(both.model)
    batch["task_labels"] = torch.full_like(batch["labels"], both.label("b"))
    assert torch.allclose(both(batch), alone({k: v for k, v in batch.items() if k != "task_labels"}), atol=1e-6)


def test_resident_adapters_with_another_a_shape_are_refused_before_injecting():
    model = _model()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    other = AdapterConfig(**{**KRON.to_dict(), "a_out": 4, "a_in": 4})
    with pytest.raises(ComposeError, match=re.escape("(a_out: 4 vs 2, a_in: 4 vs 2)")):
        attach_adapters(model, {"a": _adapter(KRON, 1), "b": _adapter(other, 2)})
    assert adapter_layers(model.backbone) == {}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
