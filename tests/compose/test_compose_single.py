"""One task's adapter from the registry equals the model it was trained in, merged or not."""

from __future__ import annotations

import pytest
import torch

from kroncl.adapters import AdapterLinear, adapter_layers
from kroncl.composition import BaseModelCache, ComposeError
from kroncl.models import ModelConfig, build_model
from pipelines.compose import compose, newest_for_task, save_composition, select_versions
from registry import NotFound

ATOL = 1e-5


def test_unmerged_and_merged_logits_equal_the_trained_model(trained, live_scores, make_batch):
    batch = make_batch(trained.model, trained.splits["toy_larger"].test, 0)
    live = live_scores(trained.sets["toy_larger"], batch)
    versions = select_versions(trained.store, [trained.refs["toy_larger"]])

    unmerged = compose(trained.store, versions)
    assert unmerged.verified and unmerged.revision
    assert (unmerged.composed(batch) - live).abs().max().item() <= ATOL

    merged = compose(trained.store, versions, merge=True)
    layers = adapter_layers(merged.composed.model.backbone)
    assert layers and all(m.merged_adapter == "toy_larger" for m in layers.values())
    assert (merged.composed(batch) - live).abs().max().item() <= ATOL
    # The adapter really changes the scores (otherwise equality above would prove nothing).
    base = build_model(ModelConfig.from_mapping({"name": "tiny", "seed": 0, "max_length": 64}))
    with torch.no_grad():
        assert (base(batch) - live).abs().max().item() > 1e-3


def test_saved_merged_model_is_a_plain_model_with_the_same_logits(trained, live_scores, make_batch, tmp_path):
    batch = make_batch(trained.model, trained.splits["toy_larger"].test, 0)
    live = live_scores(trained.sets["toy_larger"], batch)
    composition = compose(trained.store, select_versions(trained.store, [trained.refs["toy_larger"]]), merge=True)
    out = save_composition(composition, tmp_path / "merged")

    import json

    manifest = json.loads((out / "compose.json").read_text())
    reloaded = build_model(ModelConfig.from_mapping(manifest["model_config"]))
    assert not any(isinstance(m, AdapterLinear) for m in reloaded.modules())
    with torch.no_grad():
        assert (reloaded(batch) - live).abs().max().item() <= ATOL
    assert manifest["sources"] == [trained.refs["toy_larger"]]


def test_task_and_bits_pick_the_newest_matching_version(trained):
    store = trained.store
    assert newest_for_task(store, "toy_larger").ref == trained.refs["toy_larger@int8"]
    assert newest_for_task(store, "toy_larger", bits=32).ref == trained.refs["toy_larger"]
    # toy_smaller's newest version is the LoRA adapter registered last.
    assert newest_for_task(store, "toy_smaller").ref == trained.refs["lora"]
    adapter = trained.refs["toy_larger"].split(":")[0]
    assert select_versions(store, [adapter], bits=32)[0].ref == trained.refs["toy_larger"]
    assert select_versions(store, [adapter])[0].ref == trained.refs["toy_larger@int8"]
    with pytest.raises(ComposeError, match=r"no 4-bit version.*\[8, 32\]"):
        newest_for_task(store, "toy_larger", bits=4)
    with pytest.raises(ComposeError, match="8-bit version, but --bits 32"):
        select_versions(store, [trained.refs["toy_larger@int8"]], bits=32)


def test_int8_version_composes_close_to_the_fp32_model(trained, live_scores, make_batch):
    batch = make_batch(trained.model, trained.splits["toy_larger"].test, 0)
    live = live_scores(trained.sets["toy_larger"], batch)
    composition = compose(trained.store, select_versions(trained.store, [trained.refs["toy_larger@int8"]]))
    diff = (composition.composed(batch) - live).abs().max().item()
    assert 0 < diff < 5e-2  # dequantized factors: close, not bit-equal


def test_unknown_refs_and_tasks_fail_with_what_exists(trained):
    adapter = trained.refs["toy_larger"].split(":")[0]
    with pytest.raises(NotFound, match=r"has versions: 1, 2"):
        select_versions(trained.store, [f"{adapter}:9"])
    with pytest.raises(NotFound, match="adapter 'nope' not found"):
        select_versions(trained.store, ["nope"])
    with pytest.raises(NotFound, match="aliases: latest"):
        select_versions(trained.store, [f"{adapter}@production"])
    with pytest.raises(NotFound, match="task 'toy_middle' not found"):
        select_versions(trained.store, tasks=["toy_middle"])
    with pytest.raises(ComposeError, match="more than once"):
        select_versions(trained.store, [trained.refs["toy_larger"], trained.refs["toy_larger"]])


def test_base_model_with_another_head_seed_is_refused(trained):
    versions = select_versions(trained.store, [trained.refs["toy_larger"]])
    expected = r"not the registered base model 'tiny-bert' \(revision [0-9a-f]{16}\).*seed"
    with pytest.raises(ComposeError, match=expected):
        compose(trained.store, versions, model_opts={"seed": 1})


def test_cached_base_model_is_restored_between_compositions(trained, live_scores, make_batch):
    cache = BaseModelCache()
    batch = make_batch(trained.model, trained.splits["toy_larger"].test, 0)
    v_large = select_versions(trained.store, [trained.refs["toy_larger"]])
    v_small = select_versions(trained.store, [trained.refs["toy_smaller"]])
    first = compose(trained.store, v_large, merge=True, cache=cache)
    assert not first.base_cached
    from kroncl.composition import bake_merged

    bake_merged(first.composed)  # changes the cached model's weights in place
    second = compose(trained.store, v_small, merge=True, cache=cache)
    assert second.base_cached and second.composed.model is first.composed.model
    assert (second.composed(batch) - live_scores(trained.sets["toy_smaller"], batch)).abs().max().item() <= ATOL
