"""Answering without task labels (``eval.task_labels=unknown``): a router or the most confident set."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from kroncl.adapters import adapter_parameters, add_adapter, set_active_adapter
from kroncl.adapters.routing import TokenCentroidRouter, confident_forward
from kroncl.strategy.loop import run_stream
from kroncl.strategy.plugins import AccuracyCollector
from kroncl.strategy.task_router import RouterFitter


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
    """The entropy router (no task router given): every trained set scores every row."""
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


def test_token_centroid_router_picks_the_task_with_the_nearest_token_centroid():
    router = TokenCentroidRouter(buckets=64)

    def batch(rows):  # rows of token ids, 0 = padding
        ids = torch.tensor(rows)
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}

    with pytest.raises(ValueError, match="before any task was fitted"):
        router.predict(batch([[1, 2]]))
    router.fit(3, [batch([[1, 2, 3, 0], [1, 2, 4, 0]])])
    router.fit(5, [batch([[10, 11, 12, 0]]), batch([[10, 11, 13, 0]])])
    assert router.labels == [3, 5]
    assert router.predict(batch([[2, 3, 0, 0], [11, 13, 0, 0], [1, 10, 0, 0]])).tolist() == [3, 5, 3]


def test_centroid_routing_in_the_strategy_and_its_refit_on_resume(build, toy_tasks):
    strategy, benchmark, matrix = build(toy_tasks, mode="per_task", lr=3e-2, epochs=2)
    router = TokenCentroidRouter()
    fitter = RouterFitter(router)
    strategy.plugins.insert(0, fitter)
    strategy.task_labels, strategy.task_router = "unknown", router
    run_stream(strategy, benchmark, matrix, log=lambda _: None)
    collector = next(p for p in strategy.plugins if isinstance(p, AccuracyCollector))
    # The last evaluation's routing is exactly the router's guesses on the test rows.
    for j, exp in enumerate(benchmark.test_stream):
        ds = exp.dataset
        guessed = torch.cat([router.predict(b) for b in DataLoader(ds, batch_size=64, collate_fn=ds.collate_fn)])
        assert collector.routing[j] == (int((guessed == j).sum()), len(ds))
    # The toy tasks ask the same numbers and differ in one word ("larger"/"smaller"): the
    # router finds the task for most rows but not all (see the README's routing table).
    hits, rows = map(sum, zip(*collector.routing.values()))
    assert 0.5 < hits / rows < 1.0, collector.routing
    state, tensors = fitter.checkpoint_state()
    again = RouterFitter(TokenCentroidRouter())
    again.restore_checkpoint_state(state, tensors, strategy=strategy, train_stream=benchmark.train_stream)
    assert again.router.labels == router.labels == [0, 1]
    assert all(torch.equal(again.router._sums[t], router._sums[t]) for t in router.labels)
