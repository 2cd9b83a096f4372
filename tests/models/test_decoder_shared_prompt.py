"""Packed decoder scoring (``model.shared_prompt=true``): one sequence per question, the prompt read
once, gives the per-choice layout's scores and adapter gradients (≤ 1e-5, float32), also with
rows routed to different adapter sets."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from kroncl.adapters import AdapterConfig, add_adapter, inject_adapters, routed_forward
from kroncl.data import MCExample
from kroncl.models import PAD_SCORE, DecoderMultipleChoice
from kroncl.models.decoder import block_attention_mask
from kroncl.models.tiny import tiny_bpe_tokenizer, tiny_decoder

TOL = 1e-5
SETS = ["t0", "t1", "t2"]
# Prompts and choices of different lengths, 2-4 choices: token and choice padding both occur.
EXAMPLES = [
    MCExample("a", "Which is larger?", ["17", "42 is the larger one by far"], 1),
    MCExample("b", "Pick one: 17 or 42 and then some more words here", ["x", "y", "zzz"], 2),
    MCExample("c", "The cat sat on the", ["mat", "sun", "water", "star"], 0),
    MCExample("d", "How do you open a jar when the lid is stuck?", ["Twist the lid.", "Use a hammer."], 0),
]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_bpe_tokenizer()


def _randomize(module: nn.Module, seed: int) -> None:
    """Non-zero adapter factors (B1 is zero at init, which would hide a wrong mask or route)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _pair(tokenizer, arch: str = "llama", length_normalize: bool = False, sets=SETS[:1]):
    """(packed, per-choice) models over one backbone with Kron-LoRA sets ``sets``."""
    packed = tiny_decoder(arch, seed=0, max_length=40, tokenizer=tokenizer, length_normalize=length_normalize)
    cfg = AdapterConfig(method="kron", a_out=2, a_in=2, r=2, alpha=4.0, targets=packed.default_targets)
    inject_adapters(packed.backbone, cfg, adapter_name=sets[0])
    for name in sets[1:]:
        add_adapter(packed.backbone, name)
    _randomize(packed.backbone, 3)
    per_choice = DecoderMultipleChoice(packed.backbone, tokenizer, dataclasses.replace(packed.config, shared_prompt=False),
                                       default_targets=packed.default_targets)
    return packed, per_choice


def _batches(packed, per_choice, examples=EXAMPLES, tasks=None):
    def feats(m):
        return [{**m.encode(e), **({} if tasks is None else {"task_labels": tasks[i]})} for i, e in enumerate(examples)]
    return packed.collate(feats(packed)), per_choice.collate(feats(per_choice))


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    # Summed log-likelihoods are tens in size: one float32 ulp is a few 1e-6.
    assert ((a - b).abs() <= TOL * b.abs().clamp(min=1)).all(), (a - b).abs().max()


@pytest.mark.parametrize("arch", ["llama", "mistral"])
@pytest.mark.parametrize("length_normalize", [False, True])
def test_packed_scores_equal_per_choice_scores(tokenizer, arch, length_normalize):
    packed, per_choice = _pair(tokenizer, arch, length_normalize)
    pb, cb = _batches(packed, per_choice)
    assert pb["input_ids"].dim() == 2 and cb["input_ids"].dim() == 3
    assert pb["input_ids"].numel() < cb["input_ids"].numel()  # the prompt is there once
    with torch.no_grad():
        ps, cs = packed(pb), per_choice(cb)
    assert torch.equal(ps == PAD_SCORE, ~cb["choice_mask"]) and torch.equal(cs == PAD_SCORE, ~cb["choice_mask"])
    _close(ps, cs)


def test_packed_gradients_equal_per_choice_gradients(tokenizer):
    packed, per_choice = _pair(tokenizer)
    pb, cb = _batches(packed, per_choice)
    params = {n: p for n, p in packed.backbone.named_parameters() if p.requires_grad}
    assert params and all(".base_layer." not in n for n in params)
    grads = []
    for model, batch in ((packed, pb), (per_choice, cb)):
        model.zero_grad()
        model.loss(model(batch), batch["labels"]).backward()
        grads.append({n: p.grad.clone() for n, p in params.items()})
    for name in params:
        assert grads[0][name].abs().sum() > 0, name
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=TOL, atol=TOL, msg=name)


@pytest.mark.parametrize("fused", [True, False])
def test_rows_routed_to_their_sets_score_as_the_per_choice_split_path(tokenizer, fused):
    packed, per_choice = _pair(tokenizer, sets=SETS)
    _randomize(packed.backbone, 5)  # every set its own non-zero factors
    tasks = [2, 0, 1, 2]
    pb, cb = _batches(packed, per_choice, tasks=tasks)
    route = SETS.__getitem__
    with torch.no_grad():
        mixed = routed_forward(packed, packed.backbone, pb, pb["task_labels"], route, fused=fused)
        split = routed_forward(per_choice, per_choice.backbone, cb, cb["task_labels"], route, mixed=False)
        wrong = routed_forward(packed, packed.backbone, pb, (pb["task_labels"] + 1) % 3, route, fused=fused)
    _close(mixed, split)
    assert (mixed - wrong).abs().max() > 1e-3  # the sets differ: a wrong route shows


def test_packed_layout(tokenizer):
    packed = tiny_decoder("llama", max_length=40, tokenizer=tokenizer)
    feats = [packed.encode(e) for e in EXAMPLES[:2]]
    assert tokenizer.decode(feats[0]["prompt_ids"]) == "Question: Which is larger?\nAnswer:"
    assert [tokenizer.decode(c) for c in feats[0]["choice_ids"]] == [" 17", " 42 is the larger one by far"]
    batch = packed.collate(feats)
    p, lens = len(feats[1]["prompt_ids"]), [len(c) for c in feats[1]["choice_ids"]]
    n = p + sum(lens)
    L = batch["input_ids"].shape[1]
    assert L == max(len(f["prompt_ids"]) + sum(len(c) for c in f["choice_ids"]) for f in feats)
    assert batch["segment_ids"][1, : L - n].eq(-1).all() and batch["attention_mask"][1, : L - n].eq(0).all()
    assert batch["segment_ids"][1, L - n:].tolist() == [0] * p + [c + 1 for c, k in enumerate(lens) for _ in range(k)]
    assert batch["position_ids"][1, L - n:].tolist() == list(range(p)) + [p + t for k in lens for t in range(k)]
    assert batch["choice_lengths"].tolist() == [[len(c) for c in feats[0]["choice_ids"]] + [0], lens]
    assert batch["choice_mask"].tolist() == [[True, True, False], [True, True, True]]


def test_block_mask_lets_a_choice_see_the_prompt_and_itself_only():
    seg = torch.tensor([[-1, 0, 0, 1, 1, 2]])
    allowed = block_attention_mask(seg, torch.float32)[0, 0] == 0
    assert allowed.int().tolist() == [
        [1, 0, 0, 0, 0, 0],  # padding: itself (finite outputs)
        [0, 1, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 0],
        [0, 1, 1, 1, 0, 0],  # choice 1: the prompt and itself
        [0, 1, 1, 1, 1, 0],
        [0, 1, 1, 0, 0, 1],  # choice 2: the prompt, not choice 1
    ]


def test_packed_prompt_is_cut_once_for_the_longest_choice(tokenizer):
    packed = tiny_decoder("llama", max_length=12, tokenizer=tokenizer)
    feats = packed.encode(MCExample("l", "word " * 40, ["the cat sat on the mat", "x"], 0))
    longest = max(len(c) for c in feats["choice_ids"])
    assert len(feats["prompt_ids"]) == 12 - longest
    assert tokenizer.decode(feats["prompt_ids"]).endswith("Answer:")
    assert tokenizer.decode(feats["choice_ids"][0]) == " the cat sat on the mat"


def test_collate_refuses_features_of_the_other_layout(tokenizer):
    packed, per_choice = _pair(tokenizer)
    with pytest.raises(ValueError, match=r"model.shared_prompt=true collates features with 'prompt_ids'"):
        packed.collate([per_choice.encode(EXAMPLES[0])])
    with pytest.raises(ValueError, match=r"model.shared_prompt=false collates features with 'input_ids'"):
        per_choice.collate([packed.encode(EXAMPLES[0])])
    assert packed.encoding_fingerprint() != per_choice.encoding_fingerprint()
