"""Adapter files: safetensors + JSON, strict loading, atomic writes, quantized files refused."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kroncl.adapters import (
    AdapterConfig,
    AdapterLinear,
    adapter_state_dict,
    inject_adapters,
    load_adapter,
    load_adapter_into,
    read_adapter,
    save_adapter,
    set_active_adapter,
)
from kroncl.adapters.io import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME
from kroncl.errors import AdapterConfigError, AdapterLoadError

CFG = AdapterConfig(method="kron", a_out=2, a_in=2, r=4, alpha=8.0, dropout=0.1,
                    targets=["query", "value"], head_targets=["classifier"])


@pytest.fixture
def trained(make_bert_mc, randomize):
    model = make_bert_mc()
    inject_adapters(model, CFG)
    randomize(model)
    return model


def test_save_writes_exactly_the_adapter_tensors_and_config(trained, tmp_path):
    sd = adapter_state_dict(trained, "default")
    out = save_adapter(tmp_path / "ad", sd, CFG, base_model="tiny-bert", extra={"task": "arc_easy"})
    assert sorted(p.name for p in out.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    doc = json.loads((out / CONFIG_NAME).read_text())
    assert doc == {
        "format_version": FORMAT_VERSION, "method": "kron", "a_out": 2, "a_in": 2, "r": 4, "alpha": 8.0,
        "dropout": 0.1, "targets": ["query", "value"], "head_targets": ["classifier"],
        "base_model": "tiny-bert", "quantization": None, "task": "arc_easy",
        "weights_sha256": hashlib.sha256((out / WEIGHTS_NAME).read_bytes()).hexdigest(),
    }
    # safetensors = 8-byte little-endian header length + JSON header: no pickle anywhere.
    raw = (out / WEIGHTS_NAME).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    assert set(header) - {"__metadata__"} == set(sd)
    loaded = load_adapter(out)
    assert set(loaded.tensors) == set(sd)
    assert all(torch.equal(loaded.tensors[k], sd[k]) for k in sd)
    assert loaded.config == CFG and loaded.meta["base_model"] == "tiny-bert"


def test_saved_adapter_reproduces_logits_in_a_fresh_model(trained, make_bert_mc, batch, tmp_path):
    save_adapter(tmp_path, adapter_state_dict(trained, "default"), CFG, base_model="tiny-bert")
    fresh = make_bert_mc()
    load_adapter_into(fresh, tmp_path, name="task0")
    set_active_adapter(fresh, "task0")
    with torch.no_grad():
        torch.testing.assert_close(fresh(**batch).logits, trained(**batch).logits, rtol=0, atol=0)


def test_overwrite_is_atomic_and_leaves_no_temp_files(trained, tmp_path):
    sd = adapter_state_dict(trained, "default")
    save_adapter(tmp_path, sd, CFG, base_model="a")
    sd2 = {k: v + 1 for k, v in sd.items()}
    save_adapter(tmp_path, sd2, CFG, base_model="b")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    loaded = load_adapter(tmp_path)
    assert loaded.meta["base_model"] == "b"
    assert all(torch.equal(loaded.tensors[k], sd2[k]) for k in sd)


def test_failed_write_keeps_previous_file(trained, tmp_path):
    sd = adapter_state_dict(trained, "default")
    save_adapter(tmp_path, sd, CFG, base_model="a")
    before = (tmp_path / WEIGHTS_NAME).read_bytes()
    with pytest.raises(Exception):
        save_adapter(tmp_path, {"bad": "not a tensor"}, CFG, base_model="a")  # type: ignore[dict-item]
    assert (tmp_path / WEIGHTS_NAME).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])


def test_reserved_extra_keys_are_refused(trained, tmp_path):
    with pytest.raises(AdapterConfigError, match=r"\['r'\]"):
        save_adapter(tmp_path, adapter_state_dict(trained, "default"), CFG, base_model="a", extra={"r": 2})


def test_load_errors_name_the_problem(trained, tmp_path):
    with pytest.raises(AdapterLoadError, match="lacks"):
        load_adapter(tmp_path)
    save_adapter(tmp_path, adapter_state_dict(trained, "default"), CFG, base_model="a")
    doc = json.loads((tmp_path / CONFIG_NAME).read_text())
    (tmp_path / CONFIG_NAME).write_text(json.dumps({**doc, "format_version": 99}))
    with pytest.raises(AdapterLoadError, match="format_version=99"):
        load_adapter(tmp_path)
    (tmp_path / CONFIG_NAME).write_text(json.dumps({**doc, "a_out": 0}))
    with pytest.raises(AdapterLoadError, match="adapter.a_out=0"):
        load_adapter(tmp_path)
    # Without the recorded hash (a pre-hash folder) the garbage reaches the safetensors reader.
    (tmp_path / CONFIG_NAME).write_text(json.dumps({k: v for k, v in doc.items() if k != "weights_sha256"}))
    (tmp_path / WEIGHTS_NAME).write_bytes(b"garbage")
    with pytest.raises(AdapterLoadError, match="not a readable safetensors"):
        load_adapter(tmp_path)


def test_loading_into_mismatched_model_is_strict(trained, make_bert_mc, tmp_path):
    sd = adapter_state_dict(trained, "default")
    del sd["classifier.bias"]
    save_adapter(tmp_path, sd, CFG, base_model="a")
    with pytest.raises(AdapterLoadError, match=r"1 missing keys: \['classifier.bias'\]"):
        load_adapter_into(make_bert_mc(), tmp_path)


def test_quantized_folder_is_refused_and_names_the_quant_loader(trained, make_bert_mc, tmp_path):
    from kroncl.quant import quantize_tensors, save_quantized_adapter

    sd = adapter_state_dict(trained, "default")
    packed, meta = quantize_tensors(sd, "int8")
    save_quantized_adapter(tmp_path, packed, meta, CFG, base_model="a")
    assert json.loads((tmp_path / CONFIG_NAME).read_text())["quantization"]["shapes"]
    with pytest.raises(AdapterLoadError, match=r"quantized \(scheme 'int8'\).*kroncl\.quant\.load_adapter_dequantized"):
        load_adapter(tmp_path)
    fresh = make_bert_mc()
    with pytest.raises(AdapterLoadError, match="kroncl.quant.load_adapter_dequantized"):
        load_adapter_into(fresh, tmp_path)
    assert not any(isinstance(m, AdapterLinear) for m in fresh.modules())  # refused before injecting
    stored = read_adapter(tmp_path)  # the raw packed tensors, for whoever understands them
    assert set(stored.tensors) == set(packed) and stored.meta["quantization"] == meta


def test_kroncl_adapters_never_imports_kroncl_quant(trained, tmp_path):
    save_adapter(tmp_path, adapter_state_dict(trained, "default"), CFG, base_model="a")
    code = (
        "import sys, kroncl.adapters as a; a.load_adapter(sys.argv[1]);"
        "bad = sorted(m for m in sys.modules if m.startswith('kroncl.quant'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stdout + r.stderr
