"""Exact PEFT LoRA export: PeftModel.from_pretrained on the same base gives kroncl's logits."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from kroncl.adapters import AdapterConfig, add_adapter, inject_adapters, set_active_adapter
from kroncl.adapters.peft_lora import export_peft_lora
from kroncl.errors import AdapterConfigError, AdapterStateError

BERT_TARGETS = ["query", "value", "attention.output.dense"]
LLAMA_TARGETS = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
CASES = {  # id -> (method, a_out, a_in, r, alpha); the LoRA rank in the folder is min(a_out, a_in)·r
    "kron2x2": ("kron", 2, 2, 4, 8.0),
    "kron4x4": ("kron", 4, 4, 2, 3.0),
    "kron4x2": ("kron", 4, 2, 3, 5.0),
    "lora": ("lora", 1, 1, 4, 6.0),
}


def _cfg(case, targets, heads=()):
    method, a_out, a_in, r, alpha = CASES[case]
    return AdapterConfig(method=method, a_out=a_out, a_in=a_in, r=r, alpha=alpha, targets=targets,
                         head_targets=list(heads))


def _bert_logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _llama_batch():
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(1, 100, (2, 9), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("case", list(CASES))
def test_encoder_with_head_loads_in_peft_with_same_logits(case, make_bert_mc, randomize, batch, tmp_path):
    ours = make_bert_mc()
    inject_adapters(ours, _cfg(case, BERT_TARGETS, heads=["classifier"]))
    randomize(ours, "default", seed=7, std=0.2)
    expected = _bert_logits(ours, batch)
    assert _max_diff(expected, _bert_logits(make_bert_mc(), batch)) > 1e-3, "the adapter must matter"

    report = export_peft_lora(ours, "default", tmp_path / "out", base_model_name_or_path="tiny-bert")
    _, a_out, a_in, r, alpha = CASES[case]
    k = min(a_out, a_in) * r if case != "lora" else r
    doc = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert doc["peft_type"] == "LORA" and doc["r"] == k and doc["lora_alpha"] == pytest.approx(alpha / r * k)
    assert doc["use_rslora"] is False and doc["use_dora"] is False and doc["lora_dropout"] == 0.0
    assert doc["modules_to_save"] == ["classifier"]
    assert doc["rank_pattern"] == {} and doc["alpha_pattern"] == {}
    assert doc["base_model_name_or_path"] == "tiny-bert"
    assert set(report.ranks.values()) == {k} and report.max_error == 0.0 and report.heads == ["classifier"]

    keys = set(load_file(str(tmp_path / "out" / "adapter_model.safetensors")))
    q = "base_model.model.bert.encoder.layer.0.attention.self.query."
    assert {q + "lora_A.weight", q + "lora_B.weight"} <= keys
    assert keys >= {"base_model.model.classifier.weight", "base_model.model.classifier.bias"}
    assert len(keys) == 2 * 3 * 2 + 2

    peft_model = PeftModel.from_pretrained(make_bert_mc(), tmp_path / "out").eval()
    lora_q = peft_model.base_model.model.bert.encoder.layer[0].attention.self.query
    assert tuple(lora_q.lora_A["default"].weight.shape) == (k, 32)
    assert _max_diff(_bert_logits(peft_model, batch), expected) <= 1e-5


@pytest.mark.parametrize("case", ["kron2x2", "kron4x4", "lora"])
def test_decoder_loads_in_peft_with_same_logits(case, make_llama, randomize, tmp_path):
    ours = make_llama()
    inject_adapters(ours, _cfg(case, LLAMA_TARGETS))
    randomize(ours, "default", seed=9, std=0.2)
    batch = _llama_batch()
    expected = _bert_logits(ours, batch)
    assert _max_diff(expected, _bert_logits(make_llama(), batch)) > 1e-3, "the adapter must matter"

    export_peft_lora(ours, "default", tmp_path)
    doc = json.loads((tmp_path / "adapter_config.json").read_text())
    # Every q/v/o/up/down projection is adapted, so the short names PEFT and vLLM use suffice.
    assert sorted(doc["target_modules"]) == sorted(LLAMA_TARGETS) and doc["modules_to_save"] is None
    peft_model = PeftModel.from_pretrained(make_llama(), tmp_path).eval()
    assert _max_diff(_bert_logits(peft_model, batch), expected) <= 1e-5


def test_a_set_with_its_own_r_and_alpha_exports_with_its_own_scale(make_llama, randomize, tmp_path):
    ours = make_llama()
    inject_adapters(ours, _cfg("kron2x2", ["q_proj", "v_proj"]))
    add_adapter(ours, "task1", r=2, alpha=7.0)  # scale 3.5, not the layers' 2.0
    randomize(ours, "default", seed=1, std=0.2)
    randomize(ours, "task1", seed=2, std=0.2)
    set_active_adapter(ours, "task1")
    batch = _llama_batch()
    expected = _bert_logits(ours, batch)

    report = export_peft_lora(ours, "task1", tmp_path)
    doc = json.loads((tmp_path / "adapter_config.json").read_text())
    assert (doc["r"], doc["lora_alpha"]) == (4, 14.0) and report.max_rank == 4
    peft_model = PeftModel.from_pretrained(make_llama(), tmp_path).eval()
    assert _max_diff(_bert_logits(peft_model, batch), expected) <= 1e-5


def test_layers_of_different_rank_get_a_rank_pattern(make_bert_mc, randomize, batch, tmp_path):
    # Only some of the "dense" layers are adapted, and with other A shapes than the rest:
    # full paths in target_modules, rank_pattern / alpha_pattern for the odd layers.
    ours = make_bert_mc()
    inject_adapters(ours, _cfg("kron2x2", ["query", "value"]))
    other = make_bert_mc()
    inject_adapters(other, _cfg("kron4x2", ["attention.output.dense"]))  # k = 2·3, scale 5/3
    for i, layer in enumerate(ours.bert.encoder.layer):
        layer.attention.output.dense = other.bert.encoder.layer[i].attention.output.dense
    randomize(ours, "default", seed=4, std=0.2)
    expected = _bert_logits(ours, batch)

    report = export_peft_lora(ours, "default", tmp_path)
    doc = json.loads((tmp_path / "adapter_config.json").read_text())
    odd = [f"bert.encoder.layer.{i}.attention.output.dense" for i in range(2)]
    assert (doc["r"], doc["lora_alpha"]) == (8, 16.0)  # query/value: 2·4, scale 2
    assert doc["rank_pattern"] == {p: 6 for p in odd}
    assert doc["alpha_pattern"].keys() == set(odd)
    assert all(a == pytest.approx(10.0) for a in doc["alpha_pattern"].values())
    assert report.max_rank == 8 and report.ranks[odd[0]] == 6
    peft_model = PeftModel.from_pretrained(make_bert_mc(), tmp_path).eval()
    assert _max_diff(_bert_logits(peft_model, batch), expected) <= 1e-5


def test_unknown_set_names_the_sets_that_exist(make_bert_mc, tmp_path):
    model = make_bert_mc()
    inject_adapters(model, _cfg("kron2x2", ["query"]))
    add_adapter(model, "task1")
    with pytest.raises(AdapterStateError, match=r"no adapter set 'nope'.*\['default', 'task1'\]"):
        export_peft_lora(model, "nope", tmp_path)
    assert not any(tmp_path.iterdir()), "a refused export writes nothing"


def test_non_empty_target_folder_is_refused(make_bert_mc, tmp_path):
    model = make_bert_mc()
    inject_adapters(model, _cfg("kron2x2", ["query"]))
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(AdapterConfigError, match=r"is not empty \(has \['old.txt'\]\).*empty folder"):
        export_peft_lora(model, "default", tmp_path)
    with pytest.raises(AdapterConfigError, match="is a file"):
        export_peft_lora(model, "default", tmp_path / "old.txt")
    with pytest.raises(AdapterConfigError, match="max_rank=0 must be a positive"):
        export_peft_lora(model, "default", tmp_path / "new", max_rank=0)


def test_lowrank_truncate_is_exact_at_full_rank_and_optimal_below():
    from kroncl.adapters.math import lowrank_truncate

    g = torch.Generator().manual_seed(0)
    up, down = torch.randn(24, 8, generator=g), torch.randn(8, 40, generator=g)
    dense = up @ down
    u, d, err = lowrank_truncate(up, down, 8)
    assert err < 1e-6 and torch.allclose(u @ d, dense, atol=1e-4)
    u, d, err = lowrank_truncate(up, down, 3)
    s = torch.linalg.svdvals(dense.double())
    best = (s[3:].square().sum() / s.square().sum()).sqrt().item()  # Eckart–Young
    actual = (torch.linalg.norm(dense - u @ d) / torch.linalg.norm(dense)).item()
    assert u.shape == (24, 3) and d.shape == (3, 40)
    assert err == pytest.approx(best, rel=1e-6) and actual == pytest.approx(best, rel=1e-4)


def test_capped_rank_export_truncates_and_reports_the_error(make_bert_mc, randomize, batch, tmp_path):
    ours = make_bert_mc()
    inject_adapters(ours, _cfg("kron2x2", BERT_TARGETS, heads=["classifier"]))  # k = 8, scale 2
    randomize(ours, "default", seed=7, std=0.2)
    expected = _bert_logits(ours, batch)

    full = export_peft_lora(ours, "default", tmp_path / "full", max_rank=8)  # the cap is not hit
    assert full.max_error == 0.0 and full.mean_error == 0.0 and full.max_rank == 8
    peft_full = PeftModel.from_pretrained(make_bert_mc(), tmp_path / "full").eval()
    assert _max_diff(_bert_logits(peft_full, batch), expected) <= 1e-5

    capped = export_peft_lora(ours, "default", tmp_path / "capped", max_rank=3)
    doc = json.loads((tmp_path / "capped" / "adapter_config.json").read_text())
    assert (doc["r"], doc["lora_alpha"]) == (3, 3.0) and doc["rank_pattern"] == {}  # scale folded into lora_B
    assert set(capped.ranks.values()) == {3}
    tensors = load_file(str(tmp_path / "capped" / "adapter_model.safetensors"))
    assert all(t.shape[0] == 3 for k, t in tensors.items() if k.endswith("lora_A.weight"))
    assert 0.0 < capped.mean_error <= capped.max_error < 1.0
    # The reported error is the one PEFT's layers actually carry.
    peft_capped = PeftModel.from_pretrained(make_bert_mc(), tmp_path / "capped").eval()
    from kroncl.adapters import adapter_layers

    for path, m in adapter_layers(ours).items():
        if path not in capped.ranks:
            continue
        exact = m.delta_weight("default")
        got = peft_capped.base_model.model.get_submodule(path).get_delta_weight("default")
        rel = (torch.linalg.norm(exact - got) / torch.linalg.norm(exact)).item()
        assert rel == pytest.approx(capped.errors[path], rel=1e-3, abs=1e-6)
    assert _max_diff(_bert_logits(peft_capped, batch), expected) > 1e-5, "rank 3 < 8 must lose something"


@pytest.mark.parametrize(("config", "rank"), [("kron", 16), ("lora", 8)])
def test_shipped_adapter_configs_export_at_the_rank_a_server_must_allow(config, rank, make_llama, randomize, tmp_path):
    # kroncl/configs/adapter/kron.yaml (a = 2x2, r = 8) -> LoRA rank min(2, 2)·8 = 16; lora.yaml -> 8.
    from pathlib import Path

    import yaml

    node = yaml.safe_load((Path(__file__).resolve().parents[2] / "kroncl" / "configs" / "adapter" / f"{config}.yaml").read_text())
    node.update(targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], head_targets=[])
    model = make_llama()
    inject_adapters(model, AdapterConfig.from_dict(node))
    randomize(model, "default", seed=3, std=0.2)
    report = export_peft_lora(model, "default", tmp_path)
    doc = json.loads((tmp_path / "adapter_config.json").read_text())
    assert report.max_rank == doc["r"] == rank and doc["rank_pattern"] == {}
    assert doc["lora_alpha"] == pytest.approx(node["alpha"] / node["r"] * rank)
    batch = _llama_batch()
    peft_model = PeftModel.from_pretrained(make_llama(), tmp_path).eval()
    assert _max_diff(_bert_logits(peft_model, batch), _bert_logits(model, batch)) <= 1e-5
