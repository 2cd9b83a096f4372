"""Quant benchmark, part 1: train the adapter sets it compares (``python -m pipelines.bench quant``).

One adapter set per (task, method), trained by :class:`KronclStrategy` in sequential mode on a
single-task stream with the same budget for every method (:class:`BenchSettings`). The trained
model keeps a prediction recorder so that the measurement (:mod:`pipelines.bench.quant_measure`)
can compare answers question by question.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch

METHODS: dict[str, dict[str, int | str]] = {
    "kron": {"method": "kron"},  # a_out × a_in from --kron-a
    "lora": {"method": "lora", "a_out": 1, "a_in": 1},
}


@dataclass
class BenchSettings:
    """Everything that changes the numbers; written into the JSON next to the results."""

    tasks: list[str]
    methods: list[str]
    model: str = "minilm"
    max_train: int = 256
    max_test: int = 200
    epochs: int = 2
    lr: float | None = None
    """One lr for every method; None: each method's ``kroncl.config.DEFAULT_LR`` (see :func:`method_lr`)."""
    batch_size: int = 16
    eval_batch_size: int = 16
    seeds: list[int] = field(default_factory=lambda: [0])
    """Each seed trains every (task, method) once: its data subsample, head init and data order."""
    r: int = 8
    alpha: float = 16.0
    kron_a: int = 2
    block_size: int = 64
    keep_below: int = 0
    """> 0: also measure every scheme with the tensors under this many values kept bf16 (``-k`` rows)."""
    max_length: int | None = 96
    data_dir: str | None = None
    device: str = "auto"
    threads: int = 1


def prediction_recorder():
    """An avalanche plugin recording the argmax answer of every evaluated question, in loader
    order (the eval loader does not shuffle); ``.predictions()`` returns the last evaluation's.

    Built on call because avalanche takes ~15 s to import and ``--help`` should not wait for it.
    """
    from avalanche.training.plugins import SupervisedPlugin

    class PredictionRecorder(SupervisedPlugin):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[torch.Tensor] = []

        def before_eval_exp(self, strategy, **kwargs) -> None:
            self.parts.clear()

        def after_eval_iteration(self, strategy, **kwargs) -> None:
            self.parts.append(strategy.mb_output.argmax(dim=-1).detach().cpu())

        def predictions(self) -> torch.Tensor:
            return torch.cat(self.parts) if self.parts else torch.empty(0, dtype=torch.long)

    return PredictionRecorder()


def method_lr(method: str, settings: BenchSettings) -> float:
    """``--lr`` when given, else the method's default lr of the main job (``train.lr``)."""
    from kroncl.config import default_lr

    return settings.lr if settings.lr is not None else default_lr(str(METHODS[method]["method"]))


def load_task_splits(task: str, settings: BenchSettings, seed: int):
    """The task as a one-task stream (validation not carved: nothing here uses it)."""
    from kroncl.data import StreamConfig, build_stream

    cfg = StreamConfig(name=f"bench-{task}", tasks=[task], max_train=settings.max_train,
                       max_test=settings.max_test, validation_fraction=0.0, seed=seed)
    return build_stream(cfg, settings.data_dir)


@dataclass
class Trained:
    """A model with one trained adapter set, and the strategy and benchmark that trained it."""

    task: str
    method: str
    strategy: Any  # KronclStrategy
    benchmark: Any  # avalanche CLScenario of the one task
    recorder: Any  # prediction_recorder()
    adapter_set: str
    train_s: float
    seed: int = 0

    @property
    def backbone(self) -> torch.nn.Module:
        return self.strategy.model.backbone


def train_adapter(tasks, method: str, settings: BenchSettings, seed: int = 0, log=print) -> Trained:
    """Build the model, inject ``method``'s adapters and train them on the one task of ``tasks``.

    The same budget for every method: epochs, batch size, lr, data, data order and head
    initialisation all come from ``settings`` and ``seed`` (fp32 throughout, so quantization is the only
    source of difference in what follows).
    """
    from kroncl.adapters import AdapterConfig
    from kroncl.config import TrainConfig
    from kroncl.data import make_benchmark
    from kroncl.models import ModelConfig, build_model
    from kroncl.strategy.adapter_sets import AdapterSets
    from kroncl.strategy.plugins import AccuracyCollector
    from kroncl.strategy.template import KronclStrategy, seed_everything

    task = tasks[0].name
    seed_everything(seed)
    model = build_model(ModelConfig(name=settings.model, seed=seed, max_length=settings.max_length))
    shape = {"a_out": settings.kron_a, "a_in": settings.kron_a, **METHODS[method]}
    adapter_cfg = AdapterConfig(r=settings.r, alpha=settings.alpha, targets=list(model.default_targets),
                                head_targets=list(model.head_modules), **shape).validate()
    sets = AdapterSets("sequential")
    sets.inject(model.backbone, adapter_cfg)
    trained = sets.current
    benchmark = make_benchmark(tasks, model)
    recorder = prediction_recorder()
    train_cfg = TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size,
                            eval_batch_size=settings.eval_batch_size, lr=method_lr(method, settings),
                            device=settings.device, precision="fp32", progress=sys.stderr.isatty())
    strategy = KronclStrategy(model=model, adapter_sets=sets, train=train_cfg,
                              plugins=[AccuracyCollector(), recorder], seed=seed)
    t0 = time.perf_counter()
    log(f"[{task}/{method}/seed {seed}] training {len(benchmark.train_stream[0].dataset)} examples x {settings.epochs} epochs")
    strategy.train(benchmark.train_stream[0], eval_streams=[])
    sets.end_experience(0)
    return Trained(task, method, strategy, benchmark, recorder, trained, time.perf_counter() - t0, seed)
