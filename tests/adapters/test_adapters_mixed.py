"""Mixed-task batches in one forward: each row through its own resident set, equal to the split
path (one forward per task) for Kron-LoRA, LoRA and dense heads, encoder and decoder."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kroncl.adapters import (
    AdapterConfig,
    DenseDeltaLinear,
    KronLoRALinear,
    LoRALinear,
    add_adapter,
    inject_adapters,
    merge_adapter,
    routed_forward,
    row_adapters,
    set_stacked_adapters,
    unmerge_adapters,
)
from kroncl.adapters.mixed import RowSets
from kroncl.errors import AdapterStateError
from kroncl.models import ModelConfig, build_model
from kroncl.data.example import MCExample

ATOL = 1e-5
SETS = ["t0", "t1", "t2", "t3"]


def _randomize(module: nn.Module, seed: int) -> None:
    """Non-zero factors (B1 and B are zero at init, which would hide a wrong route)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _layer(kind: str) -> nn.Module:
    torch.manual_seed(0)
    base = nn.Linear(12, 8)
    if kind == "kron":
        layer = KronLoRALinear(base, a_out=2, a_in=3, r=2, alpha=4.0, adapter_name="t0")
    elif kind == "lora":
        layer = LoRALinear(base, r=3, alpha=6.0, adapter_name="t0")
    else:
        layer = DenseDeltaLinear(base, adapter_name="t0")
    for name in SETS[1:]:
        # t2 has its own rank and alpha: sets of different ranks are concatenated, not padded.
        layer.add_adapter(name, **({"r": 1, "alpha": 5.0} if name == "t2" and kind != "dense" else {}))
    _randomize(layer, 1)
    return layer


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("kind", ["kron", "lora", "dense"])
@pytest.mark.parametrize("lead", [(7,), (7, 5)])
def test_layer_rows_take_their_own_set(kind, lead, fused):
    layer = _layer(kind)
    x = torch.randn(*lead, 12, generator=torch.Generator().manual_seed(2))
    rows = torch.tensor([2, 0, -1, 2, 3, 1, 0])  # interleaved, one row with no set
    expected = torch.empty(*lead, 8)
    for n, k in enumerate(rows.tolist()):
        layer.active_adapter = None if k < 0 else SETS[k]
        expected[n] = layer(x[n: n + 1])[0]
    layer.active_adapter = "t1"  # ignored while rows are routed
    layer.row_sets = RowSets(tuple(SETS), rows, fused)
    got = layer(x)
    assert (got - expected).abs().max().item() <= ATOL
    assert rows.tolist().count(-1) and (got[2] - layer.base_layer(x[2])).abs().max().item() <= ATOL


def test_layer_rows_mismatch_is_a_clear_error():
    layer = _layer("kron")
    layer.row_sets = RowSets(tuple(SETS), torch.tensor([0, 1]), True)
    with pytest.raises(AdapterStateError, match="got 3 input rows but per-row routing for 2"):
        layer(torch.randn(3, 12))


@pytest.mark.parametrize("fused", [True, False])
def test_mixed_gradients_equal_the_split_path(fused):
    """Training on a batch that mixes tasks (replay) gives every set the gradient it gets from
    its own rows alone."""
    x = torch.randn(6, 12, generator=torch.Generator().manual_seed(3))
    rows = torch.tensor([0, 1, 1, 0, 2, 1])
    grads = []
    for mixed in (True, False):
        layer = _layer("kron")
        if mixed:
            layer.row_sets = RowSets(("t0", "t1", "t2"), rows, fused)
            loss = layer(x).square().sum()
        else:
            loss = 0
            for k, name in enumerate(("t0", "t1", "t2")):
                layer.active_adapter = name
                loss = loss + layer(x[rows == k]).square().sum()
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-4), name


def _model(name: str, method: str):
    model = build_model(ModelConfig(name=name, seed=0, max_length=48))
    targets = model.default_targets
    cfg = AdapterConfig(method=method, a_out=2, a_in=2, r=2, alpha=4.0, targets=targets,
                        head_targets=list(model.head_modules))
    inject_adapters(model.backbone, cfg, adapter_name="t0")
    for name in SETS[1:]:
        add_adapter(model.backbone, name)
    _randomize(model.backbone, 4)
    model.eval()
    return model


def _batch(model, labels: list[int]) -> dict[str, torch.Tensor]:
    # Questions with 2-4 choices, so padded choices are part of the flattening.
    feats = []
    for i, t in enumerate(labels):
        choices = [f"answer {c} of row {i}" for c in range(2 + i % 3)]
        ex = MCExample(id=f"q{i}", question=f"question {i} for task {t}?", choices=choices, label=0)
        feats.append({**model.encode(ex), "task_labels": t})
    return model.collate(feats)


@pytest.mark.parametrize("name,method", [("tiny", "kron"), ("tiny", "lora"), ("tiny-llama", "kron")])
@pytest.mark.parametrize("labels", [
    [0, 3, 1, 3, 0, 2, 1, 2],  # tasks interleaved
    [3, 1, 1, 3],  # tasks 0 and 2 missing from the batch
    [2, 0, 3, 1],  # one row per task
])
def test_model_mixed_batch_equals_the_split_path(name, method, labels):
    model = _model(name, method)
    batch = _batch(model, labels)
    route = SETS.__getitem__
    with torch.no_grad():
        split = routed_forward(model, model.backbone, batch, batch["task_labels"], route, mixed=False)
        other = routed_forward(model, model.backbone, batch, (batch["task_labels"] + 1) % 4, route)
        for fused in (True, False):
            mixed = routed_forward(model, model.backbone, batch, batch["task_labels"], route, fused=fused)
            # ≤ 1e-5 relative to the score: decoder scores are summed log-likelihoods (|s| ≈ 65
            # here, where one float32 ulp is 7.6e-6); padded choices (-1e9) are equal exactly.
            assert ((mixed - split).abs() <= ATOL * split.abs().clamp(min=1)).all(), fused
    assert (split - other).abs().max().item() > 1e-3  # the sets differ: a wrong route shows
    assert all(m.row_sets is None for m in model.backbone.modules() if hasattr(m, "row_sets"))


def test_grouped_routing_finds_the_runs_once_for_every_layer():
    """The runs of equal set ids are the same in every layer: row_adapters finds them once (a
    host sync on a GPU) and every layer gets that one tuple; the fused form needs none."""
    model = _model("tiny", "kron")
    rows = torch.tensor([0, 0, 1, 1, 1, -1])
    layers = [m for m in model.backbone.modules() if hasattr(m, "row_sets")]
    with row_adapters(model.backbone, ["t0", "t1"], rows, fused=False):
        assert {id(m.row_sets.runs) for m in layers} == {id(layers[0].row_sets.runs)}
        assert layers[0].row_sets.runs == ((0, 2), (1, 3), (-1, 1))
    with row_adapters(model.backbone, ["t0", "t1"], rows, fused=True):
        assert all(m.row_sets.runs is None for m in layers)


def test_routing_refuses_merged_and_stacked_sets():
    model = _model("tiny", "kron")
    rows = torch.zeros(3, dtype=torch.long)
    merge_adapter(model.backbone, "t0")
    with pytest.raises(AdapterStateError, match="has adapter 't0' merged, which would answer for every row"):
        with row_adapters(model.backbone, ["t0", "t1"], rows):
            pass
    unmerge_adapters(model.backbone)
    set_stacked_adapters(model.backbone, ["t1"])
    with pytest.raises(AdapterStateError, match=r"stacks \['t1'\] for every row"):
        with row_adapters(model.backbone, ["t0", "t1"], rows):
            pass
    with pytest.raises(AdapterStateError, match="has no adapter set 'nope'"):
        with row_adapters(model.backbone, ["nope"], rows):
            pass
