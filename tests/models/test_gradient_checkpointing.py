"""``train.gradient_checkpointing``: the same loss and gradients (dropout included), fewer
activations kept for backward, and a clear error for a backbone that cannot do it."""

from __future__ import annotations

import pytest
import torch

from kroncl.adapters import AdapterConfig, inject_adapters
from kroncl.data.example import MCExample
from kroncl.errors import ConfigError
from kroncl.models import ModelConfig, build_model


def _model_and_batch(name: str):
    model = build_model(ModelConfig.from_mapping({"name": name, "seed": 0, "max_length": 32}))
    inject_adapters(model.backbone, AdapterConfig(method="kron", a_out=2, a_in=2, r=4, alpha=8.0,
                                                  targets=list(model.default_targets)))
    with torch.no_grad():  # non-zero B1 so every adapter factor gets a gradient
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(n)))
    feats = [model.encode(MCExample(id=f"q{i}", question=f"which one is number {i}?",
                                    choices=("a red one", "a blue one", "neither"), label=i % 3))
             for i in range(4)]
    return model.train(), model.collate(feats)


def _loss_grads_and_saved(model, batch):
    saved = 0

    def pack(t):
        nonlocal saved
        saved += t.numel()
        return t

    for p in model.parameters():
        p.grad = None
    torch.manual_seed(123)  # the same dropout masks for both forms
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model.loss(model(batch), batch["labels"])
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return float(loss.detach()), grads, saved


@pytest.mark.parametrize("name", ["tiny", "tiny-llama"])
def test_checkpointing_gives_the_same_numbers_and_keeps_fewer_activations(name):
    model, batch = _model_and_batch(name)
    assert any(m.p > 0 for m in model.modules() if isinstance(m, torch.nn.Dropout)) or name == "tiny-llama"
    loss, grads, saved = _loss_grads_and_saved(model, batch)
    model.enable_gradient_checkpointing()
    assert getattr(model.backbone, "is_activation_checkpointing", None) or model.backbone.is_gradient_checkpointing
    loss_ckpt, grads_ckpt, saved_ckpt = _loss_grads_and_saved(model, batch)
    assert abs(loss - loss_ckpt) <= 1e-6
    assert grads.keys() == grads_ckpt.keys() and all(g.abs().sum() > 0 for g in grads.values())
    for n, g in grads.items():
        assert torch.allclose(g, grads_ckpt[n], atol=1e-6, rtol=1e-5), n
    assert saved_ckpt < 0.7 * saved, (saved_ckpt, saved)  # what the recomputation saves


def test_a_backbone_without_support_is_a_config_error():
    model, _ = _model_and_batch("tiny")
    model.backbone.supports_gradient_checkpointing = False
    with pytest.raises(ConfigError, match=r"does not support gradient checkpointing; set train.gradient_checkpointing=false"):
        model.enable_gradient_checkpointing()
