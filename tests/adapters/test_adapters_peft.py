"""PEFT LoKr interop: export -> PeftModel.from_pretrained gives our logits, and back."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoKrConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

from kroncl.adapters import AdapterConfig, adapter_layers, inject_adapters, set_active_adapter
from kroncl.adapters.peft_interop import export_peft_lokr, import_peft_lokr, read_peft_lokr
from kroncl.errors import AdapterConfigError, AdapterLoadError

TARGETS = ["query", "value", "attention.output.dense"]


def _ours(make_bert_mc, randomize, r=4, a=2, heads=("classifier",)):
    model = make_bert_mc()
    cfg = AdapterConfig(a_out=a, a_in=a, r=r, alpha=8.0, targets=TARGETS, head_targets=list(heads))
    inject_adapters(model, cfg)
    randomize(model, "default", seed=7, std=0.2)
    return model


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def test_export_loads_in_peft_with_same_logits(make_bert_mc, randomize, batch, tmp_path):
    ours = _ours(make_bert_mc, randomize)
    expected = _logits(ours, batch)
    assert not torch.allclose(expected, _logits(make_bert_mc(), batch), atol=1e-3), "adapter must matter"
    export_peft_lokr(ours, "default", tmp_path, base_model_name_or_path="tiny-bert")

    doc = json.loads((tmp_path / "adapter_config.json").read_text())
    assert doc["peft_type"] == "LOKR" and doc["r"] == 4 and doc["alpha"] == 8.0
    assert doc["decompose_factor"] == 2 and doc["decompose_both"] is False
    assert doc["rank_dropout"] == 0.0 and doc["module_dropout"] == 0.0
    keys = set(load_file(str(tmp_path / "adapter_model.safetensors")))
    q = "base_model.model.bert.encoder.layer.0.attention.self.query."
    assert {q + "lokr_w1", q + "lokr_w2_a", q + "lokr_w2_b"} <= keys
    assert len(keys) == 2 * 3 * 3 + 2

    peft_model = PeftModel.from_pretrained(make_bert_mc(), tmp_path).eval()
    lokr_q = peft_model.base_model.model.bert.encoder.layer[0].attention.self.query
    assert tuple(lokr_q.lokr_w1["default"].shape) == (2, 2)
    assert tuple(lokr_q.lokr_w2_a["default"].shape) == (16, 4)
    got = _logits(peft_model, batch)
    assert (got - expected).abs().max().item() <= 1e-5


def test_import_back_gives_same_logits(make_bert_mc, randomize, batch, tmp_path):
    ours = _ours(make_bert_mc, randomize)
    expected = _logits(ours, batch)
    export_peft_lokr(ours, "default", tmp_path)
    fresh = make_bert_mc()
    cfg = import_peft_lokr(fresh, tmp_path, name="imported")
    assert (cfg.a_out, cfg.a_in, cfg.r, cfg.alpha) == (2, 2, 4, 8.0)
    assert cfg.head_targets == ["classifier"]
    set_active_adapter(fresh, "imported")
    assert (_logits(fresh, batch) - expected).abs().max().item() <= 1e-5


def test_import_genuine_peft_lokr_adapter(make_bert_mc, batch, tmp_path):
    peft_cfg = LoKrConfig(r=4, alpha=6, decompose_factor=2, target_modules=["query", "value"],
                          modules_to_save=["classifier"])
    peft_model = get_peft_model(make_bert_mc(), peft_cfg).eval()
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lokr_" in n or "modules_to_save" in n:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    expected = _logits(peft_model, batch)
    peft_model.save_pretrained(tmp_path)

    fresh = make_bert_mc()
    cfg = import_peft_lokr(fresh, tmp_path)
    assert (cfg.a_out, cfg.a_in, cfg.r, cfg.alpha) == (2, 2, 4, 6.0)
    assert len(adapter_layers(fresh)) == 2 * 2 + 1
    assert (_logits(fresh, batch) - expected).abs().max().item() <= 1e-5


def test_high_rank_exports_full_w2_and_refuses_import(make_bert_mc, randomize, batch, tmp_path):
    # b = 16, r = 8: PEFT keeps w2 whole when r >= max(b_out, b_in) / 2.
    ours = _ours(make_bert_mc, randomize, r=8, heads=())
    expected = _logits(ours, batch)
    export_peft_lokr(ours, "default", tmp_path)
    assert any(k.endswith("lokr_w2") for k in load_file(str(tmp_path / "adapter_model.safetensors")))
    peft_model = PeftModel.from_pretrained(make_bert_mc(), tmp_path).eval()
    assert (_logits(peft_model, batch) - expected).abs().max().item() <= 1e-5
    with pytest.raises(AdapterLoadError, match="'lokr_w2' has no Kron-LoRA"):
        read_peft_lokr(tmp_path)


def test_export_refuses_what_lokr_cannot_express(make_bert_mc, tmp_path):
    model = make_bert_mc()
    inject_adapters(model, AdapterConfig(a_out=4, a_in=2, r=2, targets=["query"]))
    with pytest.raises(AdapterConfigError, match=r"a_out \(4\) must equal a_in \(2\)"):
        export_peft_lokr(model, "default", tmp_path)
    lora = make_bert_mc()
    inject_adapters(lora, AdapterConfig(method="lora", r=2, targets=["query"]))
    with pytest.raises(AdapterConfigError, match="only Kron-LoRA layers"):
        export_peft_lokr(lora, "default", tmp_path)
