"""Pure parts of the strategy: schedules, the orthogonality penalty, checkpoints, config diffs."""

import math
import os

import pytest
import torch

from kroncl.config import PLUGINS_THAT_CANNOT_ACT, StrategyConfig, config_hash, diff_configs, validate_strategy
from kroncl.errors import ConfigError
from kroncl.strategy.checkpoint import check_same_config, load_checkpoint, save_checkpoint
from kroncl.strategy.plugins import input_factor, orthogonality_penalty
from kroncl.strategy.schedule import lr_multiplier


def test_linear_schedule_warms_up_then_decays_to_zero():
    values = [lr_multiplier(s, 10, 2, "linear") for s in range(11)]
    assert values[:2] == [0.5, 1.0]
    assert all(a >= b for a, b in zip(values[1:], values[2:]))
    assert values[-1] == 0.0


def test_cosine_and_constant_schedules():
    assert lr_multiplier(2, 10, 2, "cosine") == pytest.approx(1.0)
    assert lr_multiplier(10, 10, 2, "cosine") == pytest.approx(0.0)
    assert lr_multiplier(7, 10, 2, "constant") == 1.0
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        lr_multiplier(3, 10, 0, "step")


def test_orthogonality_penalty_is_zero_for_orthogonal_factors_and_positive_otherwise():
    eye = torch.eye(6)
    new = [eye[:3]]  # rows e0..e2
    assert orthogonality_penalty(new, [[eye[3:]]]).item() == 0.0
    overlap = orthogonality_penalty(new, [[eye[2:5]]]).item()
    assert overlap == pytest.approx(1.0)  # only e2 is shared
    # Hand-computed: |[1,2]·[3,4]| = 11 summed over one pair of rank-1 factors.
    value = orthogonality_penalty([torch.tensor([[3.0, 4.0]])], [[torch.tensor([[1.0, -2.0]]), torch.tensor([[1.0, 2.0]])]])
    assert value.item() == pytest.approx(5.0 + 11.0)


def test_orthogonality_penalty_has_gradients_only_for_the_new_factor():
    new = torch.randn(2, 5, requires_grad=True)
    old = torch.randn(2, 5)
    orthogonality_penalty([new], [[old]]).backward()
    assert new.grad is not None and new.grad.abs().sum() > 0


def test_input_factor_picks_b2_for_kron_and_a_for_lora():
    kron = {"A": torch.zeros(2, 2), "B1": torch.zeros(4, 3), "B2": torch.ones(3, 5)}
    lora = {"A": torch.ones(3, 10), "B": torch.zeros(8, 3)}
    assert input_factor(kron) is kron["B2"]
    assert input_factor(lora) is lora["A"]
    assert input_factor({"weight": torch.zeros(1, 4)}) is None


def test_config_diff_names_every_changed_leaf():
    old = {"train": {"lr": 0.1, "epochs": 3}, "seed": 0}
    new = {"train": {"lr": 0.2, "epochs": 3}, "seed": 1, "extra": True}
    assert diff_configs(old, new) == ["extra: '<missing>' -> True", "seed: 0 -> 1", "train.lr: 0.1 -> 0.2"]
    assert config_hash(old) == config_hash(dict(old)) != config_hash(new)


def test_checkpoint_round_trip_restores_tensors_state_and_rng_only_when_asked(tmp_path):
    adapters = {"task0": {"layer.A": torch.randn(2, 2)}, "task1": {"layer.A": torch.randn(2, 2)}}
    extra = {"EWC/importance/0/w": torch.rand(3)}
    cfg = {"seed": 0}
    torch.manual_seed(123)
    save_checkpoint(tmp_path, 1, adapters, {"config": cfg, "config_hash": config_hash(cfg), "R": [[0.5]]}, extra)
    expected_next = torch.rand(3)
    torch.manual_seed(999)
    after_999 = torch.rand(3)
    torch.manual_seed(999)
    ckpt = load_checkpoint(tmp_path)
    assert torch.equal(torch.rand(3), after_999), "loading a checkpoint must not touch the global RNG"
    assert ckpt is not None and ckpt.next_experience == 1
    assert torch.equal(ckpt.adapters["task1"]["layer.A"], adapters["task1"]["layer.A"])
    assert set(ckpt.adapters) == {"task0", "task1"}
    assert torch.equal(ckpt.tensors["EWC/importance/0/w"], extra["EWC/importance/0/w"])
    assert ckpt.state["R"] == [[0.5]]
    ckpt.restore_rng()
    assert torch.equal(torch.rand(3), expected_next)
    check_same_config(ckpt, cfg, config_hash(cfg))


def test_temporary_folders_of_dead_writers_are_swept_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    root = tmp_path / "checkpoints"
    (root / f".exp-0003.tmp-{dead.pid}").mkdir(parents=True)
    (root / f".exp-0003.tmp-{os.getpid()}").mkdir()
    save_checkpoint(tmp_path, 1, {"s": {"k": torch.zeros(1)}}, {"config": {}, "config_hash": "x"})
    assert sorted(p.name for p in root.iterdir()) == [f".exp-0003.tmp-{os.getpid()}", "LATEST", "exp-0000"]


def test_checkpoint_from_another_config_is_refused_naming_the_difference(tmp_path):
    cfg = {"train": {"lr": 0.001}}
    save_checkpoint(tmp_path, 1, {"s": {"k": torch.zeros(1)}}, {"config": cfg, "config_hash": config_hash(cfg)})
    ckpt = load_checkpoint(tmp_path)
    new = {"train": {"lr": 0.01}}
    with pytest.raises(ConfigError, match=r"train\.lr: 0\.001 -> 0\.01"):
        check_same_config(ckpt, new, config_hash(new))


def test_newer_checkpoint_replaces_older_and_latest_points_at_it(tmp_path):
    for i in range(1, 5):
        save_checkpoint(tmp_path, i, {"s": {"k": torch.full((1,), float(i))}}, {"config": {}, "config_hash": "x"})
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.next_experience == 4 and ckpt.adapters["s"]["k"].item() == 4.0
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("exp-*"))
    assert kept == ["exp-0002", "exp-0003"]
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))


def test_no_checkpoint_means_none(tmp_path):
    assert load_checkpoint(tmp_path) is None
    assert math.isfinite(lr_multiplier(0, 1, 0, "linear"))


def test_lwf_distils_only_the_choice_columns_a_batch_has():
    from kroncl.strategy.plugins import ChoiceLwF

    lwf = ChoiceLwF(alpha=1.0, temperature=2.0)
    out, prev = torch.randn(3, 4), torch.randn(3, 4)
    # Earlier task had 5-choice questions (label 4 seen); this batch has 4 columns.
    loss = lwf._distillation_loss(out, prev, {0, 1, 2, 3, 4})
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(lwf._distillation_loss(out, prev, {0, 1, 2, 3}).item())
    assert lwf._distillation_loss(out, out.clone(), {0, 1, 2, 3, 4}).item() == pytest.approx(0.0, abs=1e-6)


def test_resume_with_plugins_is_accepted_now_that_their_state_is_checkpointed():
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from kroncl.config import load_settings

    configs = Path(__file__).resolve().parents[2] / "kroncl" / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose("config", overrides=["resume=true", "strategy.plugins=[replay,ewc,lwf]"])
    settings = load_settings(OmegaConf.to_container(cfg, resolve=True))
    assert settings.resume is True and settings.strategy.plugins == ["replay", "ewc", "lwf"]


@pytest.mark.parametrize(("mode", "plugin"), [("per_task", "replay"), ("per_task", "ewc"), ("orthogonal", "ewc")])
def test_modes_with_frozen_task_sets_refuse_plugins_that_cannot_act(mode, plugin):
    errors: list[str] = []
    validate_strategy(StrategyConfig(mode=mode, plugins=[plugin], orthogonal_lambda=1.0), errors)
    assert len(errors) == 1 and f"strategy={mode} cannot use strategy.plugins=[{plugin}]" in errors[0]
    assert PLUGINS_THAT_CANNOT_ACT[mode, plugin] in errors[0] and "strategy=sequential" in errors[0]


@pytest.mark.parametrize(("mode", "plugins"), [("per_task", ["lwf"]), ("orthogonal", ["replay", "lwf"])])
def test_plugins_that_can_act_are_accepted(mode, plugins):
    errors: list[str] = []
    validate_strategy(StrategyConfig(mode=mode, plugins=plugins, orthogonal_lambda=1.0), errors)
    assert errors == []
