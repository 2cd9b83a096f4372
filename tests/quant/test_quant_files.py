"""Quantized adapter folders: the adapter folder format of kroncl.adapters.io plus a quantization entry."""

import json

import pytest
import torch
from torch import nn

from kroncl.adapters import AdapterConfig, adapter_state_dict, inject_adapters, load_adapter, save_adapter
from kroncl.adapters.io import CONFIG_NAME, WEIGHTS_NAME, file_sha256
from kroncl.errors import AdapterConfigError, AdapterLoadError, QuantFormatError
from kroncl.quant import (
    dequantize_tensors,
    load_adapter_dequantized,
    load_adapter_dequantized_into,
    quantize_tensors,
    save_quantized_adapter,
)

CFG = AdapterConfig(method="kron", a_out=2, a_in=2, r=2, alpha=4.0, targets=["query", "value"],
                    head_targets=["classifier"])


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.query, self.value, self.classifier = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.classifier(torch.relu(self.value(self.query(x))))


@pytest.fixture
def trained_sd():
    model = Tiny()
    inject_adapters(model, CFG)
    g = torch.Generator().manual_seed(3)
    sd = adapter_state_dict(model, "default")
    return {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in sd.items()}


@pytest.mark.parametrize("name", ["int8", "int4", "nf4"])
def test_save_and_load_round_trip_through_the_adapter_folder(tmp_path, trained_sd, name):
    packed, meta = quantize_tensors(trained_sd, name)
    out = save_quantized_adapter(tmp_path / "q", packed, meta, CFG, base_model="tiny", extra={"task": "t"})
    assert sorted(p.name for p in out.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    doc = json.loads((out / CONFIG_NAME).read_text())
    assert doc["quantization"] == meta and doc["task"] == "t" and doc["weights_sha256"] == file_sha256(out / WEIGHTS_NAME)
    loaded = load_adapter_dequantized(out)
    assert loaded.config == CFG and loaded.meta["quantization"] == meta
    expected = dequantize_tensors(packed, meta, torch.float32)
    assert set(loaded.tensors) == set(trained_sd)
    for k, v in loaded.tensors.items():
        assert v.dtype == torch.float32 and torch.equal(v, expected[k])
    assert load_adapter_dequantized(out, dtype=torch.float64).tensors["query.A"].dtype == torch.float64


def test_plain_folder_loads_as_with_load_adapter(tmp_path, trained_sd):
    save_adapter(tmp_path, trained_sd, CFG, base_model="tiny")
    plain, via_quant = load_adapter(tmp_path), load_adapter_dequantized(tmp_path)
    assert plain.meta == via_quant.meta and plain.config == via_quant.config
    assert all(torch.equal(plain.tensors[k], via_quant.tensors[k]) for k in plain.tensors)


def test_load_into_a_model_injects_and_attaches_the_dequantized_set(tmp_path, trained_sd):
    packed, meta = quantize_tensors(trained_sd, "int8")
    save_quantized_adapter(tmp_path, packed, meta, CFG, base_model="tiny")
    model = Tiny()
    loaded = load_adapter_dequantized_into(model, tmp_path, name="q")
    sd = adapter_state_dict(model, "q")
    assert all(torch.equal(sd[k], loaded.tensors[k]) for k in sd)


def test_integrity_checks_still_apply(tmp_path, trained_sd):
    packed, meta = quantize_tensors(trained_sd, "int4")
    out = save_quantized_adapter(tmp_path / "q", packed, meta, CFG, base_model="tiny")
    w = out / WEIGHTS_NAME
    w.write_bytes(w.read_bytes()[:-7])  # truncated: the recorded sha256 no longer matches
    with pytest.raises(AdapterLoadError, match="sha256"):
        load_adapter_dequantized(out)
    # Intact file whose tensors do not match the metadata: the error names the folder's config.
    wrong = {k: v for k, v in packed.items() if k != "query.A.scales"}
    bad = save_adapter(tmp_path / "bad", wrong, CFG, base_model="tiny", extra={"quantization": meta})
    with pytest.raises(QuantFormatError, match=r"bad.*adapter_config\.json.*'query\.A\.scales'"):
        load_adapter_dequantized(bad)


def test_non_finite_values_are_refused_after_dequantizing(tmp_path, trained_sd):
    packed, meta = quantize_tensors(trained_sd, "int8")
    packed = dict(packed)
    scales = packed["query.B1.scales"].clone()
    scales[0] = 3.0e38  # finite as stored, but the row's codes times it overflow float32
    assert bool(torch.isfinite(scales).all())
    packed["query.B1.scales"] = scales
    save_quantized_adapter(tmp_path, packed, meta, CFG, base_model="tiny")
    with pytest.raises(AdapterLoadError, match=r"non-finite.*query\.B1"):
        load_adapter_dequantized(tmp_path)


def test_shapes_are_checked_against_the_config(tmp_path, trained_sd):
    packed, meta = quantize_tensors(trained_sd, "int8")
    other = AdapterConfig(**{**CFG.to_dict(), "r": 1})  # the stored factors have r=2
    save_quantized_adapter(tmp_path, packed, meta, other, base_model="tiny")
    with pytest.raises(AdapterLoadError, match="does not match its adapter_config.json"):
        load_adapter_dequantized(tmp_path)


def test_save_refuses_bad_metadata_and_a_second_quantization_entry(tmp_path, trained_sd):
    packed, meta = quantize_tensors(trained_sd, "int8")
    with pytest.raises(QuantFormatError, match="format_version"):
        save_quantized_adapter(tmp_path, packed, {**meta, "format_version": 99}, CFG, base_model="tiny")
    with pytest.raises(AdapterConfigError, match="quantization"):
        save_quantized_adapter(tmp_path, packed, meta, CFG, base_model="tiny", extra={"quantization": meta})
    assert not (tmp_path / CONFIG_NAME).exists()
