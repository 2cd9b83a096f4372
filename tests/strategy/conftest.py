"""Builders for strategy tests: the toy stream, a model with adapters, a ready strategy."""

from __future__ import annotations

import pytest

from kroncl.adapters import AdapterConfig
from kroncl.config import StrategyConfig, TrainConfig
from kroncl.data import StreamConfig, build_stream, make_benchmark
from kroncl.metrics import AccuracyMatrix
from kroncl.models import ModelConfig, build_model
from kroncl.strategy.adapter_sets import AdapterSets
from kroncl.strategy.plugins import AccuracyCollector, build_plugins
from kroncl.strategy.template import KronclStrategy, seed_everything


@pytest.fixture(scope="session")
def toy_tasks():
    return build_stream(StreamConfig(name="toy", tasks=["toy_larger", "toy_smaller"], max_train=96, max_test=48, seed=0))


def make_strategy(tasks, mode="sequential", plugins=(), model_name="tiny", method="kron", epochs=1,
                  lr=3e-3, orthogonal_lambda=0.0, seed=0, strategy_overrides=None, **train_overrides):
    """(strategy, benchmark, matrix) over ``tasks`` with a freshly built model.

    Seeded first, so two builds with the same arguments start from the same adapter weights.
    """
    seed_everything(seed)
    model = build_model(ModelConfig(name=model_name, seed=seed))
    sets = AdapterSets(mode)
    cfg = AdapterConfig(method=method, a_out=2, a_in=2, r=4, alpha=8.0,
                        targets=model.default_targets, head_targets=model.head_modules)
    sets.inject(model.backbone, cfg)
    strategy_cfg = StrategyConfig(mode=mode, plugins=list(plugins), replay_mem_size=32,
                                  orthogonal_lambda=orthogonal_lambda, **(strategy_overrides or {}))
    train = TrainConfig(epochs=epochs, batch_size=16, eval_batch_size=64, lr=lr, progress=False,
                        device="cpu", **train_overrides)
    strategy = KronclStrategy(model=model, adapter_sets=sets, train=train,
                              plugins=[*build_plugins(strategy_cfg, sets), AccuracyCollector()], seed=seed)
    benchmark = make_benchmark(tasks, model)
    return strategy, benchmark, AccuracyMatrix([t.name for t in tasks])


@pytest.fixture(scope="session")
def build():
    """``build(tasks, mode=..., ...)`` -> (strategy, benchmark, matrix); see make_strategy."""
    return make_strategy
