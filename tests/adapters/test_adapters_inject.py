"""Injection into tiny Hugging Face models and the model-level adapter operations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kroncl.adapters import (
    AdapterConfig,
    DenseDeltaLinear,
    KronLoRALinear,
    LoRALinear,
    adapter_layers,
    adapter_names,
    adapter_parameters,
    adapter_state_dict,
    add_adapter,
    count_adapter_parameters,
    inject_adapters,
    kron_factors,
    kron_param_count,
    load_adapter_state_dict,
    lora_param_count,
    merge_adapter,
    set_active_adapter,
    set_requires_grad,
    unmerge_adapters,
)
from kroncl.errors import AdapterConfigError, AdapterLoadError, AdapterStateError

BERT_TARGETS = ["query", "key", "value", "attention.output.dense"]


def _kron_cfg(**kw) -> AdapterConfig:
    base = dict(method="kron", a_out=2, a_in=2, r=4, alpha=8.0, targets=BERT_TARGETS, head_targets=["classifier"])
    base.update(kw)
    return AdapterConfig(**base)


def _base_params(model: nn.Module) -> dict[str, torch.Tensor]:
    adapter_ids = {id(p) for m in adapter_layers(model).values() for p in m.adapters.parameters()}
    return {n: p.detach().clone() for n, p in model.named_parameters() if id(p) not in adapter_ids}


def test_bert_mc_injection_paths_freezing_and_zero_init(make_bert_mc, batch):
    model = make_bert_mc()
    with torch.no_grad():
        before = model(**batch).logits
    paths = inject_adapters(model, _kron_cfg())
    expected = [
        f"bert.encoder.layer.{i}.attention.{s}" for i in range(2)
        for s in ("self.query", "self.key", "self.value", "output.dense")
    ]
    assert sorted(paths) == sorted(expected + ["classifier"])
    layers = adapter_layers(model)
    assert set(layers) == set(paths)
    assert isinstance(layers["classifier"], DenseDeltaLinear)
    assert all(isinstance(layers[p], KronLoRALinear) for p in expected)
    # `output.dense` of the FFN and `pooler.dense` are not targeted: "attention.output.dense" is a suffix.
    assert isinstance(model.bert.encoder.layer[0].output.dense, nn.Linear)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected_trainable = {
        f"{path}.adapters.default.{local}"
        for path, m in layers.items() for local in m.adapter_parameters("default")
    }
    assert trainable == expected_trainable
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, before)


def test_optimizer_step_moves_adapters_only(make_bert_mc, batch):
    model = make_bert_mc()
    inject_adapters(model, _kron_cfg())
    base_before = _base_params(model)
    ad_before = adapter_state_dict(model, "default")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    model.train()
    for _ in range(2):
        loss = nn.functional.cross_entropy(model(**batch).logits, torch.tensor([0, 1, 2]))
        loss.backward()
        opt.step()
        opt.zero_grad()
    base_after = _base_params(model)
    assert base_before.keys() == base_after.keys()
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    ad_after = adapter_state_dict(model, "default")
    changed = [k for k in ad_before if not torch.equal(ad_before[k], ad_after[k])]
    assert len(changed) == len(ad_before)


def test_state_dict_keys_are_exactly_the_adapter_parameters_and_counts(make_bert_mc):
    model = make_bert_mc()
    cfg = _kron_cfg()
    paths = inject_adapters(model, cfg)
    sd = adapter_state_dict(model, "default")
    expected = {f"{p}.{k}" for p in paths if p != "classifier" for k in ("A", "B1", "B2")}
    expected |= {"classifier.weight", "classifier.bias"}
    assert set(sd) == expected
    params = adapter_parameters(model, "default")
    assert all(not sd[k].requires_grad and sd[k].data_ptr() != params[k].data_ptr() for k in sd)
    per_layer = kron_param_count(kron_factors(32, 32, 2, 2), 4)
    assert count_adapter_parameters(model, "default") == 8 * per_layer + (32 + 1)


def test_lora_method_counts(make_bert_mc, batch):
    model = make_bert_mc()
    inject_adapters(model, _kron_cfg(method="lora", head_targets=[]))
    assert all(isinstance(m, LoRALinear) for m in adapter_layers(model).values())
    assert count_adapter_parameters(model, "default") == 8 * lora_param_count(32, 32, 4)
    model(**batch)


def test_distilbert_mc_regex_targets(make_distilbert_mc, batch):
    model = make_distilbert_mc()
    with torch.no_grad():
        before = model(**batch).logits
    cfg = AdapterConfig(a_out=4, a_in=4, r=2, dropout=0.2,
                        targets=[r"re:.*\.attention\.(q|v)_lin", "ffn.lin1"], head_targets=["classifier"])
    paths = inject_adapters(model, cfg)
    assert not any(m.training for m in adapter_layers(model).values()), "eval() model: adapter dropout must be off"
    assert len(paths) == 2 * 3 + 1
    assert "distilbert.transformer.layer.1.attention.v_lin" in paths
    assert "distilbert.transformer.layer.0.ffn.lin1" in paths
    assert adapter_layers(model)["distilbert.transformer.layer.0.ffn.lin1"].shape == (4, 4, 16, 8)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, before)


def test_llama_causal_lm_injection(make_llama, randomize):
    model = make_llama()
    ids = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    cfg = AdapterConfig(a_out=2, a_in=2, r=4, targets=["q_proj", "k_proj", "v_proj", "o_proj", "mlp.down_proj"])
    paths = inject_adapters(model, cfg)
    assert len(paths) == 2 * 5
    k = adapter_layers(model)["model.layers.0.self_attn.k_proj"]
    assert (k.out_features, k.in_features) == (16, 32) and k.shape == (2, 2, 8, 16)  # GQA: 2 kv heads × 8
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)
    randomize(model)
    model.train()
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    assert all(p.grad is not None for p in adapter_parameters(model, "default").values())
    assert model.lm_head.weight.grad is None


def test_target_matching_nothing_lists_linear_names(make_bert_mc):
    model = make_bert_mc()
    with pytest.raises(AdapterConfigError) as e:
        inject_adapters(model, _kron_cfg(targets=["query", "q_proj"]))
    msg = str(e.value)
    assert "'q_proj' matches no module" in msg and "'query'" in msg and "'dense'" in msg
    assert not adapter_layers(model), "a failed injection must leave the model untouched"


def test_non_linear_target_names_its_type(make_bert_mc):
    model = make_bert_mc()
    with pytest.raises(AdapterConfigError, match="'bert.encoder.layer.0.attention', a BertAttention, not an nn.Linear"):
        inject_adapters(model, _kron_cfg(targets=["attention"]))


def test_non_dividing_factor_names_layer_and_sizes(make_bert_mc):
    model = make_bert_mc()
    with pytest.raises(AdapterConfigError) as e:
        inject_adapters(model, _kron_cfg(a_out=3))
    msg = str(e.value)
    assert "bert.encoder.layer.0.attention.self.query" in msg and "a_out=3 does not divide d_out=32" in msg
    assert not adapter_layers(model)


def test_bad_config_and_double_injection(make_bert_mc):
    with pytest.raises(AdapterConfigError, match=r"adapter\.method='dora'.*adapter\.r=0.*adapter\.dropout=1\.5"):
        AdapterConfig(method="dora", r=0, dropout=1.5, targets=["query"]).validate()
    with pytest.raises(AdapterConfigError, match="adapter.targets is empty"):
        AdapterConfig().validate()
    with pytest.raises(AdapterConfigError, match="unknown adapter config keys \\['rank'\\]"):
        AdapterConfig.from_dict({"rank": 4, "targets": ["query"]})
    model = make_bert_mc()
    inject_adapters(model, _kron_cfg())
    with pytest.raises(AdapterConfigError, match="already carries adapters"):
        inject_adapters(model, _kron_cfg())
    with pytest.raises(AdapterConfigError, match="both adapter.targets and adapter.head_targets"):
        inject_adapters(make_bert_mc(), _kron_cfg(head_targets=["query"]))


def test_several_resident_adapters_route_per_batch(make_bert_mc, batch, randomize):
    model = make_bert_mc()
    inject_adapters(model, _kron_cfg())
    randomize(model, "default", seed=1)
    add_adapter(model, "task1", init_from="default")
    add_adapter(model, "task2")
    randomize(model, "task2", seed=2)
    assert adapter_names(model) == ["default", "task1", "task2"]
    outs = {}
    with torch.no_grad():
        for name in ("default", "task1", "task2", None):
            set_active_adapter(model, name)
            outs[name] = model(**batch).logits
        set_active_adapter(model, "default")
        again = model(**batch).logits
    assert torch.equal(outs["default"], outs["task1"])  # warm start = same values
    assert not torch.allclose(outs["default"], outs["task2"])
    assert not torch.allclose(outs["default"], outs[None])
    assert torch.equal(again, outs["default"])
    with pytest.raises(AdapterStateError, match="no adapter set 'task9'"):
        set_active_adapter(model, "task9")


def test_requires_grad_per_set(make_bert_mc):
    model = make_bert_mc()
    inject_adapters(model, _kron_cfg())
    add_adapter(model, "t1")
    set_requires_grad(model, "default", False)
    assert not any(p.requires_grad for p in adapter_parameters(model, "default").values())
    assert all(p.requires_grad for p in adapter_parameters(model, "t1").values())


def test_model_merge_unmerge(make_bert_mc, batch, randomize):
    model = make_bert_mc()
    inject_adapters(model, _kron_cfg())
    randomize(model)
    base = _base_params(model)
    with torch.no_grad():
        y = model(**batch).logits
        merge_adapter(model, "default")
        merge_adapter(model, "default")
        torch.testing.assert_close(model(**batch).logits, y, rtol=1e-5, atol=1e-5)
        unmerge_adapters(model)
        after = _base_params(model)
        assert all(torch.equal(base[k], after[k]) for k in base)
        torch.testing.assert_close(model(**batch).logits, y)


def test_model_merge_is_all_or_nothing(make_bert_mc):
    model = make_bert_mc()
    inject_adapters(model, _kron_cfg())
    base = _base_params(model)
    last = list(adapter_layers(model).values())[-2]
    with torch.no_grad():
        last.adapters["default"].B1.fill_(float("inf"))
    with pytest.raises(AdapterStateError, match=f"layer '{last.layer_name}'"):
        merge_adapter(model, "default")
    assert all(m.merged_adapter is None for m in adapter_layers(model).values())
    after = _base_params(model)
    assert all(torch.equal(base[k], after[k]) for k in base)


def test_strict_load_reports_every_missing_unexpected_and_mismatched_key(make_bert_mc):
    model = make_bert_mc()
    inject_adapters(model, _kron_cfg())
    sd = adapter_state_dict(model, "default")
    dropped = ["bert.encoder.layer.0.attention.self.query.A", "classifier.bias"]
    for k in dropped:
        del sd[k]
    sd["bert.encoder.layer.0.attention.self.query.C"] = torch.zeros(1)
    sd["pooler.dense.A"] = torch.zeros(1)
    sd["bert.encoder.layer.1.attention.self.key.B1"] = torch.zeros(3, 3)
    with pytest.raises(AdapterLoadError) as e:
        load_adapter_state_dict(model, sd, "task1")
    msg = str(e.value)
    for k in dropped + ["bert.encoder.layer.0.attention.self.query.C", "pooler.dense.A"]:
        assert k in msg
    assert "2 missing keys" in msg and "2 unexpected keys" in msg
    assert "bert.encoder.layer.1.attention.self.key.B1: file (3, 3) vs model (16, 4)" in msg
    assert adapter_names(model) == ["default"], "a failed load must not leave a half-made set behind"


def test_load_state_dict_roundtrip_and_non_strict(make_bert_mc, batch, randomize):
    src = make_bert_mc()
    inject_adapters(src, _kron_cfg())
    randomize(src)
    sd = adapter_state_dict(src, "default")
    dst = make_bert_mc()
    inject_adapters(dst, _kron_cfg())
    res = load_adapter_state_dict(dst, sd, "task1")
    assert res.missing == [] and res.unexpected == []
    set_active_adapter(src, "default")
    set_active_adapter(dst, "task1")
    with torch.no_grad():
        torch.testing.assert_close(dst(**batch).logits, src(**batch).logits, rtol=0, atol=0)
    partial = {k: v for k, v in sd.items() if not k.startswith("classifier")}
    partial["extra.A"] = torch.zeros(1)
    res = load_adapter_state_dict(dst, partial, "task2", strict=False)
    assert res.missing == ["classifier.bias", "classifier.weight"] and res.unexpected == ["extra.A"]
