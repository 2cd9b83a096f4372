"""MLflowLogger driven by a real avalanche-lib EvaluationPlugin and Naive strategy."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image
from torch import nn

from kroncl.tracking import MLflowLogger, Tracker

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from avalanche.benchmarks.scenarios.deprecated.generic_benchmark_creation import (
        create_generic_benchmark_from_tensor_lists,
    )
    from avalanche.evaluation.metric_results import AlternativeValues, MetricValue
    from avalanche.evaluation.metrics import accuracy_metrics, confusion_matrix_metrics, loss_metrics
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin


def tiny_benchmark(n_tasks: int = 2, seed: int = 0):
    """Each task: 4-d Gaussian inputs labelled by a task-specific random linear map (3 classes)."""
    g = torch.Generator().manual_seed(seed)

    def task(w: torch.Tensor, n: int) -> list[torch.Tensor]:
        x = torch.randn(n, 4, generator=g)
        return [x, (x @ w).argmax(1)]

    maps = [torch.randn(4, 3, generator=g) for _ in range(n_tasks)]
    return create_generic_benchmark_from_tensor_lists(
        [task(w, 48) for w in maps], [task(w, 32) for w in maps], task_labels=[0] * n_tasks
    )


def test_avalanche_metrics_arrive_in_mlflow(runs_root: Path):
    torch.manual_seed(0)
    tracker = Tracker(None, "avalanche", True, runs_root / "r")
    run_id = tracker.start("naive")
    evaluator = EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        loss_metrics(epoch=True),
        confusion_matrix_metrics(num_classes=3, save_image=False, stream=True),  # a tensor: skipped
        loggers=[MLflowLogger(tracker)],
        collect_all=True,
    )
    model = nn.Linear(4, 3)
    strategy = Naive(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.3), criterion=nn.CrossEntropyLoss(),
        train_mb_size=16, train_epochs=2, eval_mb_size=64, evaluator=evaluator, device="cpu",
    )
    bm = tiny_benchmark()
    for experience in bm.train_stream:
        strategy.train(experience)
        strategy.eval(bm.test_stream)
    tracker.end()
    assert tracker.failures == []

    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    logged = set(client.get_run(run_id).data.metrics)
    reference = evaluator.get_all_metrics()  # name -> (x_plots, values), as Avalanche saw them
    scalar_names = {n for n, (_, values) in reference.items() if isinstance(values[0], (int, float))}
    assert "Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp001" in scalar_names
    assert "Loss_Epoch/train_phase/train_stream/Task000" in scalar_names
    assert logged == scalar_names
    assert not any(n.startswith("ConfusionMatrix") for n in logged)

    for name in scalar_names:
        steps, values = reference[name]
        history = sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, name))
        assert [s for s, _, _ in history] == sorted(steps), name
        assert [v for _, _, v in history] == pytest.approx([v for _, v in sorted(zip(steps, values))]), name


def test_log_metrics_batches_dicts_alternatives_and_skips_non_scalars(runs_root: Path):
    tracker = Tracker(None, "unit", True, runs_root / "r", max_consecutive_failures=1)
    run_id = tracker.start("unit")
    logger = MLflowLogger(tracker, prefix="av/")
    image = Image.new("RGB", (2, 2))
    logger.log_metrics([
        MetricValue(None, "per_class", {0: 0.5, 1: torch.tensor(0.25)}, 5),
        MetricValue(None, "Alt", AlternativeValues(image, 0.75), 5),
        MetricValue(None, "Img", AlternativeValues(image, torch.zeros(3, 3)), 5),
        MetricValue(None, "Hist", torch.zeros(4), 6),
        MetricValue(None, "Text", "hello", 6),
        MetricValue(None, "Acc:Exp", 0.9, 7),
    ])
    logger.log_metrics([])  # EvaluationPlugin calls this after every callback
    logger.log_single_metric("single", torch.tensor([1.5]), 8)
    tracker.end()
    assert tracker.failures == []

    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    metrics = client.get_run(run_id).data.metrics
    assert metrics == {"av/per_class/0": 0.5, "av/per_class/1": 0.25, "av/Alt": 0.75,
                       "av/Acc_Exp": 0.9, "av/single": 1.5}
    assert [m.step for m in client.get_metric_history(run_id, "av/Acc_Exp")] == [7]
    assert [m.step for m in client.get_metric_history(run_id, "av/single")] == [8]
    # One JSONL record (one MLflow batch) per distinct x_plot.
    import json

    steps = [json.loads(line).get("step") for line in tracker.jsonl_path.read_text().splitlines()]
    assert steps == [None, 5, 7, 8, None]
