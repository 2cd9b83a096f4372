"""Encoder scoring on tiny random BERT / DistilBERT with the real MiniLM tokenizer."""

from __future__ import annotations

import pytest
import torch

from kroncl.data import MCExample
from kroncl.models import PAD_SCORE, EncoderMultipleChoice
from kroncl.models.tiny import minilm_tokenizer, tiny_encoder

EXAMPLES = [
    MCExample("a", "Which is a liquid at room temperature?", ["iron", "water", "salt"], 1),
    MCExample("b", "Pick one: 17 or 42", ["17", "42"], 1),
    MCExample("c", "Which gas do plants take in?", ["oxygen", "nitrogen", "helium", "argon", "carbon dioxide"], 4),
    MCExample("d", "The sun is a", ["planet", "star", "moon", "comet"], 1),
]


@pytest.fixture(scope="module", params=["bert", "distilbert"])
def model(request) -> EncoderMultipleChoice:
    return tiny_encoder(request.param, seed=0, max_length=32)


def test_encode_pairs_question_with_each_choice(model):
    feats = model.encode(EXAMPLES[0])
    tok = minilm_tokenizer()
    assert feats["labels"] == 1
    assert len(feats["input_ids"]) == 3 and len(feats["attention_mask"]) == 3
    # segment ids only where the architecture has segment embeddings
    assert ("token_type_ids" in feats) == (model.backbone.config.model_type == "bert")
    text = tok.decode(feats["input_ids"][1])
    assert text == "[CLS] which is a liquid at room temperature? [SEP] water [SEP]"
    long = MCExample("l", "word " * 100, ["x " * 50, "y"], 0)
    assert all(len(ids) <= 32 for ids in model.encode(long)["input_ids"])


def test_collate_pads_tokens_and_choices(model):
    feats = [model.encode(e) for e in EXAMPLES]
    for f, t in zip(feats, (0, 0, 1, 1), strict=True):
        f["task_labels"] = t
    batch = model.collate(feats)
    B, C = 4, 5
    assert batch["input_ids"].shape[:2] == (B, C)
    assert batch["choice_mask"].sum(dim=1).tolist() == [3, 2, 5, 4]
    assert batch["labels"].tolist() == [1, 1, 4, 1] and batch["task_labels"].tolist() == [0, 0, 1, 1]
    # padded choices carry no attended tokens; real ones end where their tokens end
    assert batch["attention_mask"][1, 2:].sum() == 0
    assert int(batch["attention_mask"][1, 0].sum()) == len(feats[1]["input_ids"][0])


def test_collate_reads_avalanche_task_label_name(model):
    f = model.encode(EXAMPLES[1])
    f["targets_task_labels"] = 3
    assert model.collate([f])["task_labels"].tolist() == [3]
    assert "task_labels" not in model.collate([model.encode(EXAMPLES[1])])


def test_collate_rejects_label_outside_choices(model):
    f = model.encode(EXAMPLES[1])
    f["labels"] = 2
    with pytest.raises(ValueError, match=r"labels \[2\] of batch rows \[0\] do not index their \[2\] choices"):
        model.collate([f])


def test_scores_shape_padding_and_finite_loss(model):
    batch = model.collate([model.encode(e) for e in EXAMPLES])
    scores = model(batch)
    assert scores.shape == (4, 5) and scores.dtype == torch.float32
    assert torch.equal(scores == PAD_SCORE, ~batch["choice_mask"])
    loss = model.loss(scores, batch["labels"])
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.zero_grad(set_to_none=True)


def test_scores_do_not_depend_on_batch_padding(model):
    alone = [model(model.collate([model.encode(e)]))[0, : len(e.choices)] for e in EXAMPLES]
    together = model(model.collate([model.encode(e) for e in EXAMPLES]))
    for i, e in enumerate(EXAMPLES):
        torch.testing.assert_close(together[i, : len(e.choices)], alone[i], rtol=1e-4, atol=1e-5)


def test_loss_decreases_with_training(model):
    trained = tiny_encoder(model.backbone.config.model_type, seed=1, max_length=32)
    trained.train()
    torch.manual_seed(0)  # dropout masks
    batch = trained.collate([trained.encode(e) for e in EXAMPLES])
    # Tiny random BERTs start with near-constant [CLS] vectors; a high rate gets them moving.
    opt = torch.optim.AdamW(trained.parameters(), lr=1e-2)
    losses = []
    for _ in range(16):
        loss = trained.loss(trained(batch), batch["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_head_modules_and_targets_exist_in_backbone(model):
    names = dict(model.backbone.named_modules())
    assert model.head_modules and all(isinstance(names[h], torch.nn.Linear) for h in model.head_modules)
    linear_leaves = {p.rsplit(".", 1)[-1] for p, m in names.items() if isinstance(m, torch.nn.Linear)}
    assert set(model.default_targets) <= linear_leaves


def test_encoding_fingerprint_tracks_settings():
    a = tiny_encoder("bert", max_length=32).encoding_fingerprint()
    assert a == tiny_encoder("bert", max_length=32).encoding_fingerprint()
    assert a != tiny_encoder("bert", max_length=16).encoding_fingerprint()
