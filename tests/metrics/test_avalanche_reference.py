"""The avalanche_* functions reproduce avalanche-lib 0.6.0's own stream metrics.

A real Naive strategy is trained on a tiny 3-experience benchmark with Avalanche's forgetting,
BWT and forward-transfer plugin metrics; the accuracy matrix is read from Avalanche's
``Top1_Acc_Exp`` values and our functions of it must equal what Avalanche reported.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from kroncl.metrics import (
    avalanche_bwt,
    avalanche_forgetting,
    avalanche_forgetting_per_task,
    avalanche_forward_transfer,
    backward_transfer,
    forgetting,
    metrics_over_time,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from avalanche.benchmarks.scenarios.deprecated.generic_benchmark_creation import (
        create_generic_benchmark_from_tensor_lists,
    )
    from avalanche.evaluation.metrics import (
        accuracy_metrics,
        bwt_metrics,
        forgetting_metrics,
        forward_transfer_metrics,
    )
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

T = 3
ACC = "Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{:03d}"
STREAM = "{}/eval_phase/test_stream"


def tiny_benchmark(seed: int = 0):
    g = torch.Generator().manual_seed(seed)

    def task(w: torch.Tensor, n: int) -> list[torch.Tensor]:
        x = torch.randn(n, 4, generator=g)
        return [x, (x @ w).argmax(1)]

    # Task 1 is a near copy of task 0 (so task 0 keeps improving during experience 1) and
    # task 2 conflicts with both (so both are forgotten): Chaudhry's and Avalanche's
    # forgetting then differ, and the comparison below tells them apart.
    w0 = torch.randn(4, 3, generator=g)
    maps = [w0, w0 + 0.1 * torch.randn(4, 3, generator=g), -w0]
    return create_generic_benchmark_from_tensor_lists(
        [task(w, 64) for w in maps], [task(w, 40) for w in maps], task_labels=[0] * T
    )


@pytest.mark.filterwarnings("ignore:No loggers specified")
def test_avalanche_variants_match_avalanche_plugin_metrics():
    torch.manual_seed(0)
    evaluator = EvaluationPlugin(
        accuracy_metrics(experience=True),
        forgetting_metrics(experience=True, stream=True),
        bwt_metrics(stream=True),
        forward_transfer_metrics(stream=True),
        loggers=[],
    )
    model = nn.Linear(4, 3)
    strategy = Naive(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), criterion=nn.CrossEntropyLoss(),
        train_mb_size=16, train_epochs=1, eval_mb_size=64, evaluator=evaluator, device="cpu",
        eval_every=0,  # Avalanche's forward transfer insists on periodic eval being enabled
    )
    bm = tiny_benchmark()

    strategy.eval(bm.test_stream)  # before training: Avalanche's "initial" accuracies
    first = evaluator.get_last_metrics()
    b = [first[ACC.format(j)] for j in range(T)]

    R: list[list[float]] = []
    reported: list[dict[str, float]] = []
    for experience in bm.train_stream:
        strategy.train(experience, eval_streams=[bm.test_stream])
        last = evaluator.get_last_metrics()
        R.append([last[ACC.format(j)] for j in range(T)])
        reported.append(last)

    # The stream must actually forget, and in a way where the definitions disagree.
    assert backward_transfer(R) < 0
    assert forgetting(R) > avalanche_forgetting(R)

    for i, last in enumerate(reported):
        seen = R[: i + 1]
        assert avalanche_forgetting(seen) == pytest.approx(last[STREAM.format("StreamForgetting")]), i
        assert avalanche_bwt(seen) == pytest.approx(last[STREAM.format("StreamBWT")]), i
        assert avalanche_forward_transfer(seen, b) == pytest.approx(last[STREAM.format("StreamForwardTransfer")]), i
        for j, value in enumerate(avalanche_forgetting_per_task(seen)):
            key = f"ExperienceForgetting/eval_phase/test_stream/Task000/Exp{j:03d}"
            assert value == pytest.approx(last[key]), (i, j)

    over_time = metrics_over_time(R, b)
    assert [r["avalanche_fwt"] for r in over_time] == pytest.approx(
        [last[STREAM.format("StreamForwardTransfer")] for last in reported]
    )
