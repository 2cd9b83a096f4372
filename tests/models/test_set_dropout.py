"""``train.dropout``: every backbone dropout set at once, so training is deterministic given the batches."""

from __future__ import annotations

import pytest
import torch

from kroncl.data.example import MCExample
from kroncl.models import ModelConfig, build_model


def _scores_twice(name: str, p: float | None):
    model = build_model(ModelConfig.from_mapping({"name": name, "seed": 0, "max_length": 32}))
    if p is not None:
        model.set_dropout(p)
    feats = [model.encode(MCExample(id=f"q{i}", question=f"which one is number {i}?",
                                    choices=("a red one", "a blue one"), label=i % 2)) for i in range(3)]
    batch = model.collate(feats)
    model.train()
    return model(batch), model(batch)


@pytest.mark.parametrize("name", ["tiny", "tiny-llama"])
def test_dropout_zero_makes_two_training_forwards_equal(name):
    first, second = _scores_twice(name, 0.0)
    assert torch.equal(first, second)


def test_the_models_own_dropout_draws_other_masks_each_forward():
    first, second = _scores_twice("tiny", None)  # BERT-like: hidden and attention dropout 0.1
    assert not torch.equal(first, second)


def test_set_dropout_reaches_llama_attention_dropout():
    model = build_model(ModelConfig.from_mapping({"name": "tiny-llama", "seed": 0, "max_length": 32}))
    model.set_dropout(0.25)
    rates = [m.attention_dropout for m in model.backbone.modules() if hasattr(m, "attention_dropout")]
    assert rates and all(r == 0.25 for r in rates)
