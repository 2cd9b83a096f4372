"""Decoder scoring on tiny random Llama / Mistral with a real (tiny, in-memory) BPE tokenizer."""

from __future__ import annotations

import math

import pytest
import torch

from kroncl.data import MCExample
from kroncl.models import PAD_SCORE, DecoderMultipleChoice, continuation_log_likelihood
from kroncl.models.tiny import tiny_bpe_tokenizer, tiny_decoder

EXAMPLES = [
    MCExample("a", "Which is larger?", ["17", "42 is the larger one by far"], 1),
    MCExample("b", "Pick one: 17 or 42 and then some more words here", ["x", "y", "zzz"], 2),
    MCExample("c", "The cat sat on the", ["mat", "sun", "water", "star"], 0),
]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_bpe_tokenizer()


@pytest.fixture(scope="module", params=["llama", "mistral"])
def model(request, tokenizer) -> DecoderMultipleChoice:
    """The per-choice layout (model.shared_prompt=false); the packed one: test_decoder_shared_prompt.py."""
    return tiny_decoder(request.param, seed=0, max_length=40, tokenizer=tokenizer, shared_prompt=False)


def _manual_scores(model: DecoderMultipleChoice, example: MCExample) -> list[float]:
    """Reference: run each unpadded (prompt + choice) sequence alone, sum its choice tokens."""
    tok = model.tokenizer
    prompt = tok(model.config.prompt_template.format(question=example.question))["input_ids"]
    out = []
    for choice in example.choices:
        cont = tok(" " + choice, add_special_tokens=False)["input_ids"]
        ids = (prompt + cont)[-model.max_length:]
        with torch.no_grad():
            logp = model.backbone(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)  # (L, V)
        start = len(ids) - len(cont)
        out.append(sum(float(logp[j - 1, ids[j]]) for j in range(start, len(ids))))
    return out


def test_encode_marks_the_choice_tokens(model):
    feats = model.encode(EXAMPLES[0])
    tok = model.tokenizer
    assert feats["labels"] == 1 and len(feats["input_ids"]) == 2
    for ids, n, choice in zip(feats["input_ids"], feats["choice_lengths"], EXAMPLES[0].choices, strict=True):
        assert tok.decode(ids[-n:]) == " " + choice
        assert tok.decode(ids[:-n]) == "Question: Which is larger?\nAnswer:"


def test_encode_truncates_the_prompt_from_the_left(tokenizer):
    m = tiny_decoder("llama", max_length=12, tokenizer=tokenizer, shared_prompt=False)
    feats = m.encode(MCExample("l", "word " * 40, ["the cat sat on the mat", "x"], 0))
    assert all(len(ids) == 12 for ids in feats["input_ids"])
    assert m.tokenizer.decode(feats["input_ids"][0][-feats["choice_lengths"][0]:]) == " the cat sat on the mat"
    assert m.tokenizer.decode(feats["input_ids"][1]).endswith("Answer: x")


def test_collate_left_pads_and_masks_choices(model):
    feats = [model.encode(e) for e in EXAMPLES]
    batch = model.collate(feats)
    assert batch["input_ids"].shape[:2] == (3, 4)
    assert batch["choice_mask"].sum(dim=1).tolist() == [2, 3, 4]
    assert batch["choice_lengths"][0, 2:].eq(0).all()
    L = batch["input_ids"].shape[-1]
    n = len(feats[1]["input_ids"][0])
    assert batch["attention_mask"][1, 0, : L - n].eq(0).all() and batch["attention_mask"][1, 0, L - n:].eq(1).all()
    assert batch["input_ids"][1, 0, L - n:].tolist() == feats[1]["input_ids"][0]


def test_scores_equal_reference_log_likelihood(model):
    batch = model.collate([model.encode(e) for e in EXAMPLES])
    with torch.no_grad():
        scores = model(batch)
    assert scores.shape == (3, 4)
    assert torch.equal(scores == PAD_SCORE, ~batch["choice_mask"])
    for i, e in enumerate(EXAMPLES):
        ref = torch.tensor(_manual_scores(model, e))
        torch.testing.assert_close(scores[i, : len(e.choices)], ref, rtol=1e-4, atol=1e-4)


def test_length_normalize_divides_by_choice_tokens(tokenizer):
    summed = tiny_decoder("llama", seed=0, max_length=40, tokenizer=tokenizer)
    mean = tiny_decoder("llama", seed=0, max_length=40, tokenizer=tokenizer, length_normalize=True)
    batch = summed.collate([summed.encode(e) for e in EXAMPLES])
    with torch.no_grad():
        s, m = summed(batch), mean(batch)
    real = batch["choice_mask"]
    torch.testing.assert_close(m[real], s[real] / batch["choice_lengths"][real].float())


def test_eager_and_sdpa_attention_agree(tokenizer):
    sdpa = tiny_decoder("llama", seed=0, tokenizer=tokenizer, attn_implementation="sdpa")
    eager = tiny_decoder("llama", seed=0, tokenizer=tokenizer, attn_implementation="eager")
    batch = sdpa.collate([sdpa.encode(e) for e in EXAMPLES])
    with torch.no_grad():
        torch.testing.assert_close(sdpa(batch), eager(batch), rtol=1e-4, atol=1e-4)


def test_continuation_log_likelihood_pure():
    logits = torch.zeros(2, 3, 4)  # uniform over 4 tokens
    targets = torch.zeros(2, 3, dtype=torch.long)
    ll = continuation_log_likelihood(logits, targets, torch.tensor([1, 3]))
    torch.testing.assert_close(ll, torch.tensor([math.log(0.25), 3 * math.log(0.25)]))
    mean = continuation_log_likelihood(logits, targets, torch.tensor([1, 3]), length_normalize=True)
    torch.testing.assert_close(mean, torch.full((2,), math.log(0.25)))
    peaked = torch.full((1, 2, 4), -50.0)
    peaked[0, :, 2] = 50.0  # the model is sure of token 2 at both positions
    assert float(continuation_log_likelihood(peaked, torch.tensor([[2, 2]]), torch.tensor([2]))) > -1e-6


def test_loss_decreases_with_training(tokenizer):
    m = tiny_decoder("llama", seed=1, max_length=40, tokenizer=tokenizer)
    m.train()
    torch.manual_seed(0)
    batch = m.collate([m.encode(e) for e in EXAMPLES])
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = m.loss(m(batch), batch["labels"])
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_decoder_has_no_head_and_llama_targets(model):
    assert model.kind == "decoder" and model.head_modules == []
    assert model.default_targets == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    names = {p.rsplit(".", 1)[-1] for p, m in model.backbone.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(model.default_targets) <= names


def test_continuation_log_likelihood_is_accurate_over_a_large_vocabulary():
    """float32 but within 3e-6 per token of float64 at SmolLM2's vocabulary size (cross_entropy
    over a transposed (N, V, K) view, the earlier form, was off by 5e-5 here, ~2.5e-4 per token
    on SmolLM2's logits, on CPU)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 49152, generator=g, dtype=torch.float64) * 8
    targets = torch.randint(0, 49152, (3, 6), generator=g)
    exact = logits.log_softmax(-1).gather(2, targets[..., None])[..., 0]  # (3, 6)
    for n in (1, 6):
        ll = continuation_log_likelihood(logits.float(), targets, torch.full((3,), n))
        assert (ll.double() - exact[:, -n:].sum(dim=1)).abs().max() <= 3e-6 * n
