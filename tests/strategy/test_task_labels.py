"""Answering without task labels (``eval.task_labels=unknown``): the most confident set answers."""

from __future__ import annotations

import torch

from kroncl.adapters import adapter_parameters, add_adapter, set_active_adapter
from kroncl.adapters.routing import confident_forward
from kroncl.strategy.loop import run_stream
from kroncl.strategy.plugins import AccuracyCollector


def test_confident_forward_takes_each_rows_lowest_entropy_set(build, toy_tasks):
    strategy, benchmark, _ = build(toy_tasks, mode="per_task")
    backbone = strategy.model.backbone
    add_adapter(backbone, "task1", init_from="task0")
    torch.manual_seed(1)
    with torch.no_grad():  # two different, non-zero updates
        for name in ("task0", "task1"):
            for p in adapter_parameters(backbone, name).values():
                p.add_(torch.randn_like(p) * 0.5)
    dataset = benchmark.test_stream[0].dataset
    batch = dataset.collate_fn([dataset[i][0] if isinstance(dataset[i], tuple) else dataset[i] for i in range(16)])
    strategy.model.eval()
    with torch.no_grad():
        per_set = []
        for name in ("task0", "task1"):
            set_active_adapter(backbone, name)
            per_set.append(strategy.model(batch))
        scores, chosen = confident_forward(strategy.model, backbone, batch, ["task0", "task1"])
    entropy = torch.stack([torch.special.entr(s.softmax(-1)).sum(-1) for s in per_set])
    assert torch.equal(chosen, entropy.argmin(0))
    assert 0 < int(chosen.sum()) < 16, "each set should win some rows"
    for row, k in enumerate(chosen.tolist()):
        assert torch.equal(scores[row], per_set[k][row])


def routed_run(build, tasks, mode, task_labels):
    strategy, benchmark, matrix = build(tasks, mode=mode, lr=3e-2, epochs=2)
    strategy.task_labels = task_labels
    run_stream(strategy, benchmark, matrix, log=lambda _: None)
    collector = next(p for p in strategy.plugins if isinstance(p, AccuracyCollector))
    return matrix.rows, collector.routing


def test_sequential_has_one_set_so_unknown_labels_change_nothing(build, toy_tasks):
    known, _ = routed_run(build, toy_tasks, "sequential", "known")
    unknown, routing = routed_run(build, toy_tasks, "sequential", "unknown")
    assert unknown == known and routing == {}


def test_per_task_without_labels_reports_routing_and_its_accuracy_follows_it(build, toy_tasks):
    known, none = routed_run(build, toy_tasks, "per_task", "known")
    unknown, routing = routed_run(build, toy_tasks, "per_task", "unknown")
    assert none == {}
    assert set(routing) == {0, 1} and all(rows == 48 for _, rows in routing.values())
    # Row 0: only task0 exists, every row goes to it, so nothing differs from known labels.
    assert unknown[0] == known[0]
    # Row 1: a row routed to its own set scores as with labels; a mis-routed one may not, so
    # BWT is no longer 0 by construction unless routing is perfect.
    if all(hits == rows for hits, rows in routing.values()):
        assert unknown[1] == known[1]
    else:
        assert unknown[1] != known[1]
