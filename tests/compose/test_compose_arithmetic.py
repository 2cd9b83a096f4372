"""Task arithmetic: Σ w_i ΔW_i stored exactly as a LoRA of concatenated factors, with lineage."""

from __future__ import annotations

import copy

import pytest
import torch

from kroncl.adapters import AdapterLinear, adapter_layers, load_adapter
from kroncl.adapters.math import kron_delta
from kroncl.composition import ComposeError, kron_as_lora, lowrank_terms, weighted_sum
from pipelines.compose import combine, compose, select_versions
from registry import Conflict

ATOL = 1e-5


@pytest.mark.parametrize("a_shape", [(2, 2), (4, 2), (2, 4), (1, 3)])
def test_kron_as_lora_is_exact(a_shape):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(*a_shape, generator=g, dtype=torch.float64)
    B1 = torch.randn(5, 3, generator=g, dtype=torch.float64)
    B2 = torch.randn(3, 7, generator=g, dtype=torch.float64)
    up, down = kron_as_lora(A, B1, B2)
    assert up.shape[1] == down.shape[0] == min(a_shape) * 3
    assert torch.allclose(up @ down, kron_delta(A, B1, B2, 1.0), atol=1e-12)


def _loaded(trained, key):
    return load_adapter(trained.store.fetch_artifact(trained.refs[key]))


def _reference(trained, weights: dict[str, float]):
    """The live model with Σ w·ΔW (and Σ w·Δbias) added to every base layer by hand."""
    model = copy.deepcopy(trained.model)
    with torch.no_grad():
        for layer in adapter_layers(model.backbone).values():
            dw = sum(w * layer.delta_weight(s) for s, w in weights.items())
            layer.base_layer.weight += dw
            dbs = [layer.delta_bias(s) for s in weights]
            if dbs[0] is not None:
                layer.base_layer.bias += sum(w * db for db, w in zip(dbs, weights.values()))
            layer.active_adapter = None
    return model


def test_weighted_sum_matches_the_sum_of_deltas_per_layer(trained):
    a, b = _loaded(trained, "toy_larger"), _loaded(trained, "toy_smaller")
    tensors, cfg = weighted_sum([a, b], [0.3, -1.25])
    assert cfg.method == "lora" and cfg.alpha == cfg.r == 2 * 2 * 4  # Σ min(a_out, a_in)·r
    live = adapter_layers(trained.model.backbone)
    for path, layer in live.items():
        expected = 0.3 * layer.delta_weight("task0") + -1.25 * layer.delta_weight("task1")
        if f"{path}.weight" in tensors:  # dense head
            got = tensors[f"{path}.weight"]
            assert torch.allclose(tensors[f"{path}.bias"],
                                  0.3 * layer.delta_bias("task0") - 1.25 * layer.delta_bias("task1"), atol=ATOL)
        else:
            got = tensors[f"{path}.B"] @ tensors[f"{path}.A"]
        assert (got - expected).abs().max().item() <= ATOL, path


def test_weights_one_zero_reproduce_the_first_adapter(trained, live_scores, make_batch):
    versions = select_versions(trained.store, [trained.refs["toy_larger"], trained.refs["toy_smaller"]])
    new = combine(trained.store, versions, [1.0, 0.0], "tiny-toy-first")
    composition = compose(trained.store, [new])
    batch = make_batch(trained.model, trained.splits["toy_smaller"].test, 0)
    live = live_scores(trained.sets["toy_larger"], batch)
    assert (composition.composed(batch) - live).abs().max().item() <= ATOL
    merged = compose(trained.store, [new], merge=True)
    assert (merged.composed(batch) - live).abs().max().item() <= ATOL


def test_half_half_equals_hand_merged_model_and_records_lineage(trained, make_batch):
    store = trained.store
    sources = [trained.refs["toy_larger"], trained.refs["toy_smaller"]]
    versions = select_versions(store, sources)
    new = combine(store, versions, [0.5, 0.5], "tiny-toy-avg", aliases=["candidate"])

    # Lineage: one merged_from edge per source; weights and sources in config and tags.
    parents = {(e.version, e.relation) for e in store.ancestors(new.ref, max_depth=1)}
    assert parents == {(r, "merged_from") for r in sources}
    assert new.tags["weights"] == "0.5,0.5" and new.tags["sources"] == ",".join(sources)
    comp = new.config["composition"]
    assert [s["ref"] for s in comp["sources"]] == sources and [s["weight"] for s in comp["sources"]] == [0.5, 0.5]
    assert new.method == "lora" and new.bits == 32 and new.task == "toy_larger-toy_smaller"
    assert store.get_version("tiny-toy-avg@candidate").ref == new.ref

    # Round trip: compose it back from the registry (base model rebuilt from its stored config).
    composition = compose(store, select_versions(store, ["tiny-toy-avg"]), merge=True)
    assert composition.verified
    reference = _reference(trained, {"task0": 0.5, "task1": 0.5})
    batch = make_batch(trained.model, trained.splits["toy_larger"].test, 0)
    with torch.no_grad():
        expected = reference(batch)
    assert (composition.composed(batch) - expected).abs().max().item() <= ATOL


def test_kron_and_lora_sources_combine_exactly(trained, make_batch):
    a, lora = _loaded(trained, "toy_larger"), _loaded(trained, "lora")
    tensors, cfg = weighted_sum([a, lora], [1.0, 2.0])
    terms = lowrank_terms(lora)
    for path, layer in trained.lora_model.backbone.named_modules():
        if isinstance(layer, AdapterLinear) and f"{path}.B" in tensors:
            k = terms[path][0].shape[1]
            got_lora_part = tensors[f"{path}.B"][:, -k:] @ tensors[f"{path}.A"][-k:]
            assert (got_lora_part - 2.0 * layer.delta_weight("lora")).abs().max().item() <= ATOL


def test_bad_weights_and_names_fail_clearly(trained):
    store = trained.store
    versions = select_versions(store, [trained.refs["toy_larger"], trained.refs["toy_smaller"]])
    with pytest.raises(ComposeError, match="got 1 weights .* for 2 adapters"):
        combine(store, versions, [1.0], "tiny-toy-bad")
    with pytest.raises(ComposeError, match="must all be finite"):
        combine(store, versions, [1.0, float("nan")], "tiny-toy-bad")
    # An existing adapter name of another task is a registry conflict, named by the registry.
    with pytest.raises(Conflict, match="exists for task 'toy_larger'"):
        combine(store, versions, [0.5, 0.5], trained.refs["toy_larger"].split(":")[0])
