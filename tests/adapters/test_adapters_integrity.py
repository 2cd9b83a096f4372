"""Adapter integrity: what a corrupt, hostile or mismatched adapter folder is refused with.

Every bad input is refused with a message naming the file / key / value and what to do, and
leaves the model it was meant for exactly as it was (every parameter compared with torch.equal).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from kroncl.adapters import (
    AdapterConfig,
    adapter_layers,
    adapter_names,
    adapter_state_dict,
    add_adapter,
    inject_adapters,
    load_adapter,
    load_adapter_into,
    merge_adapter,
    save_adapter,
    set_active_adapter,
)
from kroncl.adapters import io as adapter_io
from kroncl.adapters.io import CONFIG_NAME, HASH_KEY, WEIGHTS_NAME, file_sha256
from kroncl.adapters.peft_interop import export_peft_lokr, import_peft_lokr
from kroncl.errors import AdapterConfigError, AdapterLoadError, AdapterStateError

CFG = AdapterConfig(method="kron", a_out=2, a_in=2, r=4, alpha=8.0, targets=["query", "value"],
                    head_targets=["classifier"])


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, cloned (a merge can add a bias, so names matter too)."""
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=False).items()}


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes, so torch.equal is bit exact and a NaN equals the same NaN."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def assert_unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert sorted(after) == sorted(before)
    changed = [
        k for k in before if before[k].dtype != after[k].dtype or not torch.equal(bits(before[k]), bits(after[k]))
    ]
    assert changed == []


@pytest.fixture
def trained(make_bert_mc, randomize):
    model = make_bert_mc()
    inject_adapters(model, CFG)
    randomize(model)
    return model


@pytest.fixture
def folder(trained, tmp_path):
    return save_adapter(tmp_path / "ad", adapter_state_dict(trained, "default"), CFG, base_model="tiny-bert")


@pytest.fixture
def target(make_bert_mc):
    """A model already carrying CFG's layers (set "default"), the usual target of a second load."""
    model = make_bert_mc(seed=5)
    inject_adapters(model, CFG)
    return model


# --- 1. weights sha256 ----------------------------------------------------------------------


def test_the_config_records_the_sha256_of_the_weights_file(folder):
    doc = json.loads((folder / CONFIG_NAME).read_text())
    assert doc[HASH_KEY] == file_sha256(folder / WEIGHTS_NAME)
    assert re.fullmatch(r"[0-9a-f]{64}", doc[HASH_KEY])


def test_a_flipped_byte_in_the_weights_is_refused_naming_file_and_both_hashes(folder, target):
    w_path = folder / WEIGHTS_NAME
    expected = json.loads((folder / CONFIG_NAME).read_text())[HASH_KEY]
    raw = bytearray(w_path.read_bytes())
    raw[-1] ^= 0x01  # last byte of the tensor data: still a readable safetensors file
    w_path.write_bytes(bytes(raw))
    actual = file_sha256(w_path)
    message = (
        f"{w_path}: sha256 is {actual} but adapter_config.json records weights_sha256={expected}; the weights "
        "file is corrupt or from another save (or a save was interrupted): re-export the adapter or restore "
        "the folder from the registry"
    )
    with pytest.raises(AdapterLoadError, match=f"^{re.escape(message)}$"):
        load_adapter(folder)
    before = snapshot(target)
    with pytest.raises(AdapterLoadError, match=re.escape(message)):
        load_adapter_into(target, folder, name="task1")
    assert_unchanged(target, before)
    assert adapter_names(target) == ["default"]


def test_a_folder_written_before_hashes_loads_and_warns_once(folder, trained, monkeypatch, caplog):
    doc = json.loads((folder / CONFIG_NAME).read_text())
    del doc[HASH_KEY]
    (folder / CONFIG_NAME).write_text(json.dumps(doc))
    monkeypatch.setattr(adapter_io, "_warned_unhashed", False)
    with caplog.at_level(logging.WARNING, logger="kroncl.adapters.io"):
        first = load_adapter(folder)
        load_adapter(folder)
    warnings = [r.getMessage() for r in caplog.records if HASH_KEY in r.getMessage()]
    assert warnings == [
        f"{folder / CONFIG_NAME} has no weights_sha256 (written before kroncl recorded weight hashes); "
        "loading it unverified. Re-save it with save_adapter to add the hash."
    ]
    sd = adapter_state_dict(trained, "default")
    assert all(torch.equal(first.tensors[k], sd[k]) for k in sd)


def test_extra_may_not_override_the_recorded_hash(trained, tmp_path):
    with pytest.raises(AdapterConfigError, match=r"extra keys \['weights_sha256'\] would override reserved"):
        save_adapter(tmp_path, adapter_state_dict(trained, "default"), CFG, base_model="a", extra={HASH_KEY: "0" * 64})
    assert not any(tmp_path.iterdir())


_CRASH = """
import json, sys
from safetensors.torch import load_file
from kroncl.adapters import AdapterConfig, save_adapter
cfg = AdapterConfig(**json.loads(sys.argv[2]))
tensors = {k: v * 2 for k, v in load_file(sys.argv[3]).items()}  # another adapter, same layout
save_adapter(sys.argv[1], tensors, cfg, base_model="tiny-bert")
"""


def test_a_crash_between_weights_and_config_is_reported_never_mixed(folder, tmp_path):
    """Killed after the new weights replaced the old ones, before the new config did."""
    old_config = (folder / CONFIG_NAME).read_text()
    source = tmp_path / "source.safetensors"
    source.write_bytes((folder / WEIGHTS_NAME).read_bytes())
    env = {**os.environ, "KRONCL_FAULT": f"during_atomic_write:file={CONFIG_NAME}"}
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH, str(folder), json.dumps(CFG.to_dict()), str(source)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == -9, proc.stderr  # SIGKILL at the fault point
    assert (folder / CONFIG_NAME).read_text() == old_config
    assert file_sha256(folder / WEIGHTS_NAME) != file_sha256(source)  # the new weights are in place
    reported = rf"^{re.escape(str(folder / WEIGHTS_NAME))}: sha256 is [0-9a-f]{{64}} but adapter_config.json records "
    with pytest.raises(AdapterLoadError, match=reported):
        load_adapter(folder)


# --- 2. non-finite tensors ------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_tensors_are_refused_naming_key_and_file(trained, target, tmp_path, bad):
    sd = adapter_state_dict(trained, "default")
    key = "bert.encoder.layer.1.attention.self.value.B1"
    sd[key][0, 0] = bad
    folder = save_adapter(tmp_path, sd, CFG, base_model="tiny-bert")
    message = (
        f"{folder / WEIGHTS_NAME}: non-finite (NaN/Inf) values in tensor(s) {key} (1 of {sd[key].numel()} values); "
        "the adapter diverged in training or the file is corrupt: re-train it or restore it from the registry"
    )
    with pytest.raises(AdapterLoadError, match=f"^{re.escape(message)}$"):
        load_adapter(folder)
    before = snapshot(target)
    with pytest.raises(AdapterLoadError, match=re.escape(message)):
        load_adapter_into(target, folder, name="task1")
    assert_unchanged(target, before)
    assert adapter_names(target) == ["default"]


# --- 3. symlinks ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [WEIGHTS_NAME, CONFIG_NAME])
def test_a_symlinked_adapter_file_is_refused_naming_it(folder, tmp_path, name):
    outside = tmp_path / "elsewhere" / name
    outside.parent.mkdir()
    os.replace(folder / name, outside)
    (folder / name).symlink_to(outside)
    message = (
        f"{folder / name} is a symbolic link (to {outside}); adapter files must be regular files inside "
        f"{folder}: copy the real file there"
    )
    with pytest.raises(AdapterLoadError, match=f"^{re.escape(message)}$"):
        load_adapter(folder)


def test_a_symlinked_peft_file_is_refused(trained, tmp_path):
    out = export_peft_lokr(trained, "default", tmp_path / "peft")
    outside = tmp_path / "adapter_model.safetensors"
    os.replace(out / "adapter_model.safetensors", outside)
    (out / "adapter_model.safetensors").symlink_to(outside)
    with pytest.raises(AdapterLoadError, match=re.escape(f"{out / 'adapter_model.safetensors'} is a symbolic link")):
        import_peft_lokr(torch.nn.Module(), out)


# --- 4. implausible config values -----------------------------------------------------------


def test_a_huge_r_is_refused_before_anything_is_allocated(folder, make_bert_mc):
    doc = json.loads((folder / CONFIG_NAME).read_text())
    (folder / CONFIG_NAME).write_text(json.dumps({**doc, "r": 1000000000000}))
    message = (
        f"{folder / CONFIG_NAME}: invalid adapter config: adapter.r=1000000000000 exceeds the limit 1048576 "
        "(wider than any linear layer); the config is mistyped or corrupt"
    )
    with pytest.raises(AdapterLoadError, match=f"^{re.escape(message)}$"):
        load_adapter(folder)
    fresh = make_bert_mc()
    before = snapshot(fresh)
    with pytest.raises(AdapterLoadError, match=re.escape(message)):
        load_adapter_into(fresh, folder)
    assert_unchanged(fresh, before)
    assert adapter_layers(fresh) == {}


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("a_out", 1 << 21, "adapter.a_out=2097152 exceeds the limit 1048576 (wider than any linear layer)"),
        ("a_in", 1 << 40, "adapter.a_in=1099511627776 exceeds the limit 1048576 (wider than any linear layer)"),
        ("alpha", 1e12, "adapter.alpha=1000000000000.0 exceeds the limit 1e+06; the config is mistyped or corrupt"),
        ("alpha", math.inf, "adapter.alpha=inf exceeds the limit 1e+06"),
        ("alpha", math.nan, "adapter.alpha=nan must be a positive number"),
    ],
)
def test_config_bounds_name_field_value_and_limit(field, value, expected):
    cfg = AdapterConfig(**{**CFG.to_dict(), field: value})
    with pytest.raises(AdapterConfigError, match=re.escape(expected)):
        cfg.validate()


def test_r_above_a_layer_dims_is_refused_before_injecting(make_bert_mc):
    model = make_bert_mc()
    before = snapshot(model)
    # query is 32 x 32: with 2 x 2 factors B1 B2 is 16 x 16, so r may be at most 16.
    cfg = AdapterConfig(**{**CFG.to_dict(), "r": 17, "targets": ["query"]})
    message = (
        "layer 'bert.encoder.layer.0.attention.self.query': adapter.r=17 exceeds the limit 16 = max of the "
        "16 x 16 matrix B1 B2 it factors; lower adapter.r"
    )
    with pytest.raises(AdapterConfigError, match=re.escape(message)):
        inject_adapters(model, cfg)
    lora = AdapterConfig(method="lora", r=33, alpha=8.0, targets=["query"])
    with pytest.raises(AdapterConfigError, match=re.escape(
        "adapter.r=33 exceeds the limit 32 = max of the 32 x 32 matrix B A it factors; lower adapter.r"
    )):
        inject_adapters(model, lora)
    assert adapter_layers(model) == {}
    assert_unchanged(model, before)


def test_tensor_shapes_must_follow_from_the_config_before_layers_are_built(folder, make_bert_mc):
    doc = json.loads((folder / CONFIG_NAME).read_text())
    (folder / CONFIG_NAME).write_text(json.dumps({**doc, "a_out": 4}))  # divides 32: injection alone would pass
    fresh = make_bert_mc()
    before = snapshot(fresh)
    line = (
        "bert.encoder.layer.0.attention.self.query.A: shape (2, 2) but the config (method='kron', a_out=4, "
        "a_in=2, r=4) implies (4, 2)"
    )
    with pytest.raises(AdapterLoadError, match=rf"^{re.escape(str(folder / WEIGHTS_NAME))} does not match its "
                       rf"adapter_config.json:\n  {re.escape(line)}\n"):
        load_adapter_into(fresh, folder)
    assert adapter_layers(fresh) == {}
    assert_unchanged(fresh, before)


# --- 5. alpha / r against the model's layers --------------------------------------------------


def _save_with(trained, tmp_path, **change):
    cfg = AdapterConfig(**{**CFG.to_dict(), **change})
    model = trained
    if "r" in change:  # another rank needs its own layers to produce the tensors
        from transformers import BertForMultipleChoice

        model = BertForMultipleChoice(trained.config).eval()
        inject_adapters(model, cfg)
    return save_adapter(tmp_path / "other", adapter_state_dict(model, "default"), cfg, base_model="tiny-bert")


@pytest.mark.parametrize("change", [{"alpha": 16.0}, {"r": 2}, {"r": 2, "alpha": 3.0}])
def test_another_r_or_alpha_loads_as_a_set_with_its_own_scale(trained, target, make_bert_mc, batch, tmp_path, change):
    """Each set carries its own r/alpha: the loaded set answers exactly as the file alone would
    in a fresh model, and the set already there is untouched."""
    folder = _save_with(trained, tmp_path, **change)
    default_before = {k: v.clone() for k, v in adapter_state_dict(target, "default").items()}
    with torch.no_grad():
        set_active_adapter(target, "default")
        default_logits = target(**batch).logits
    load_adapter_into(target, folder, name="task1")
    fresh = make_bert_mc(seed=5)
    load_adapter_into(fresh, folder)
    with torch.no_grad():
        set_active_adapter(target, "task1")
        assert torch.allclose(target(**batch).logits, fresh(**batch).logits, atol=1e-6)
        set_active_adapter(target, "default")
        assert torch.equal(target(**batch).logits, default_logits)
    assert all(torch.equal(v, default_before[k]) for k, v in adapter_state_dict(target, "default").items())
    merge_adapter(target, "task1")  # the merged weight uses the set's own scale too
    with torch.no_grad():
        assert torch.allclose(target(**batch).logits, fresh(**batch).logits, atol=1e-5)
    layer = adapter_layers(target)["bert.encoder.layer.0.attention.self.query"]
    want = {"r": change.get("r", CFG.r), "alpha": change.get("alpha", CFG.alpha)}
    assert layer.set_hyper("task1") == want and layer.set_hyper("default") == {"r": CFG.r, "alpha": CFG.alpha}


def test_tensors_for_an_existing_set_with_another_alpha_are_refused(trained, target, tmp_path):
    folder = _save_with(trained, tmp_path, alpha=16.0)
    before = snapshot(target)
    message = (f"cannot load adapter 'default' from {folder}: alpha 16.0 in the file vs 8.0 in the model's set "
               "'default'; load it under another set name, or delete_adapter(model, 'default') first")
    with pytest.raises(AdapterLoadError, match=f"^{re.escape(message)}$"):
        load_adapter_into(target, folder, name="default")
    assert_unchanged(target, before)


def test_another_kron_a_shape_is_still_refused(trained, target, make_bert_mc, tmp_path):
    cfg = AdapterConfig(**{**CFG.to_dict(), "a_out": 4, "a_in": 4})
    source = make_bert_mc()
    inject_adapters(source, cfg)
    folder = save_adapter(tmp_path / "a4", adapter_state_dict(source, "default"), cfg, base_model="tiny-bert")
    before = snapshot(target)
    with pytest.raises(AdapterLoadError, match="a_out 4 in the file vs 2 in the model's layers; a_in 4 in the file"):
        load_adapter_into(target, folder, name="task1")
    assert_unchanged(target, before)
    assert adapter_names(target) == ["default"]


def test_peft_import_of_another_alpha_into_existing_layers_adds_a_set(make_bert_mc, randomize, target, batch, tmp_path):
    source = make_bert_mc(seed=5)
    inject_adapters(source, AdapterConfig(**{**CFG.to_dict(), "alpha": 16.0}))
    randomize(source)
    out = export_peft_lokr(source, "default", tmp_path / "peft")
    import_peft_lokr(target, out, name="task1")
    with torch.no_grad():
        set_active_adapter(target, "task1")
        assert torch.allclose(target(**batch).logits, source(**batch).logits, atol=1e-6)


def test_same_settings_still_load_into_existing_layers(folder, target):
    load_adapter_into(target, folder, name="task1")
    assert adapter_names(target) == ["default", "task1"]


# --- 6. a refused merge changes nothing -------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "param"), [("bert.encoder.layer.1.attention.self.value", "B2"), ("classifier", "weight")]
)
def test_a_refused_merge_keeps_the_previously_merged_set(trained, randomize, layer, param):
    """The poisoned layers come late in model order: every layer before them must keep "default"."""
    add_adapter(trained, "b")
    randomize(trained, "b", seed=11)
    merge_adapter(trained, "default")
    merged_before = {p: m.merged_adapter for p, m in adapter_layers(trained).items()}
    active_before = {p: m.active_adapter for p, m in adapter_layers(trained).items()}
    assert set(merged_before.values()) == {"default"}
    with torch.no_grad():
        dict(trained.named_parameters())[f"{layer}.adapters.b.{param}"][0, 0] = math.nan
    before = snapshot(trained)
    with pytest.raises(AdapterStateError, match=re.escape(
        f"layer '{layer}': merging adapter 'b' gives non-finite weight; the adapter factors hold NaN/Inf or "
        "overflow the base dtype, refusing to merge"
    )):
        merge_adapter(trained, "b")
    assert_unchanged(trained, before)
    assert {p: m.merged_adapter for p, m in adapter_layers(trained).items()} == merged_before
    assert {p: m.active_adapter for p, m in adapter_layers(trained).items()} == active_before


def test_a_refused_layer_merge_keeps_its_merged_set(trained):
    add_adapter(trained, "b")
    layer = adapter_layers(trained)["bert.encoder.layer.0.attention.self.query"]
    base = layer.base_layer.weight.detach().clone()
    layer.merge("default")
    with torch.no_grad():
        layer.adapters["b"].A.fill_(math.inf)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    with pytest.raises(AdapterStateError, match="merging adapter 'b' gives non-finite weight"):
        layer.merge("b")
    assert layer.merged_adapter == "default"
    assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())
    layer.unmerge()  # the original base weight is still the one kept for the exact restore
    assert torch.equal(layer.base_layer.weight, base)
