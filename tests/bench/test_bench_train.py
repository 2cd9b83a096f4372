"""``python -m pipelines.bench train`` on the tiny encoder: real training steps, equal budgets."""

from __future__ import annotations

import pytest
import torch

from pipelines.bench.train import VARIANTS, build_variants, main, make_batch, train_step


@pytest.fixture(scope="module")
def variants():
    torch.manual_seed(0)
    return build_variants("tiny", VARIANTS, seed=0, max_length=32)


def test_peft_variants_train_the_same_layers_at_the_same_budget(variants):
    by_name = {v.name: v for v in variants}
    assert [v.name for v in variants] == list(VARIANTS)
    assert by_name["peft-lora8"].trainable == by_name["lora8"].trainable
    assert by_name["peft-lokr"].trainable == by_name["kron2x2"].trainable  # LoKr with Kron 2x2's factor shapes
    assert by_name["kron4x4"].trainable < by_name["kron2x2"].trainable < by_name["lora8"].trainable


def test_a_step_trains_the_adapters_and_nothing_else(variants):
    for v in variants:
        batch = make_batch(v.model, rows=4, choices=3)
        frozen = {n: p.detach().clone() for n, p in v.model.named_parameters() if not p.requires_grad}
        before = [p.detach().clone() for p in v.params]
        v.model.eval()  # no dropout: the loss on one batch must fall step by step
        step = train_step(v, batch, lr=3e-2)
        losses = [step() for _ in range(20)]
        assert losses[-1] < losses[0], (v.name, losses)  # the same batch: it is being learned
        assert all(not torch.equal(b, p) for b, p in zip(before, v.params)), v.name
        assert all(torch.equal(frozen[n], p) for n, p in v.model.named_parameters() if n in frozen), v.name


def test_the_command_prints_every_variant_and_the_ratios(capsys):
    assert main(["--models", "tiny", "--rounds", "1", "--rows", "2", "--max-length", "32"]) == 0
    out = capsys.readouterr().out
    assert "tiny: 2 questions x 4 choices x" in out
    for name in VARIANTS:
        assert f"\n  {name} " in out
    for ratio in ("kron2x2/lora8", "kron2x2/peft-lora8", "peft-lokr/kron2x2"):
        assert ratio in out


def test_unknown_variant_is_named_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["--variants", "kron2x2,dora"])
    err = capsys.readouterr().err
    assert "--variants ['dora']" in err and "peft-lokr" in err


def test_the_loop_comparison_trains_one_epoch_of_the_stream_both_ways(capsys):
    assert main(["--models", "tiny", "--variants", "kron2x2", "--rounds", "1", "--rows", "8", "--max-length", "32",
                 "--loop", "--max-train", "16"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("loop ("))
    assert "toy_larger: 16 rows, batch 8, 1 rounds" in line and "strategy/bare" in line
