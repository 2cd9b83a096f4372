"""Each continual-learning plugin changes what it is meant to change (MiniLM, toy stream).

The toy stream's two tasks have opposite rules (pick the larger / the smaller number), so plain
sequential fine-tuning forgets the first one almost completely; every plugin is measured against
that baseline at the same budget (same seed, lr, epochs and data). Each run takes a few seconds.
"""

from __future__ import annotations

import pytest

from kroncl.strategy.loop import run_stream

pytestmark = pytest.mark.integration

LR, EPOCHS = 1e-2, 2


class LossProbe:
    """Records ``strategy.loss`` at ``before_backward`` per experience; placed before and after
    the plugin under test, the difference of two probes is exactly the term that plugin added."""

    def __init__(self) -> None:
        self.losses: dict[int, list[float]] = {}

    def __getattr__(self, name):
        return lambda *a, **k: None

    def before_backward(self, strategy, **kwargs) -> None:
        self.losses.setdefault(strategy.experience_index, []).append(float(strategy.loss.detach()))


def run(build, tasks, plugins=(), probe=False, mode="sequential", **strategy_overrides):
    """(strategy, R, added_term_per_experience, parameters after each experience)."""
    strategy, benchmark, matrix = build(tasks, mode=mode, plugins=plugins, model_name="minilm", lr=LR,
                                        epochs=EPOCHS, strategy_overrides=strategy_overrides)
    before, after = LossProbe(), LossProbe()
    if probe:
        strategy.plugins.insert(0, before)
        strategy.plugins.append(after)
    snapshots = {}

    def snap(index, _experience, _matrix):
        snapshots[index] = {n: p.detach().clone() for n, p in strategy.model.named_parameters()
                            if p.requires_grad}

    run_stream(strategy, benchmark, matrix, on_experience_end=snap, log=lambda _: None)
    added = {exp: [a - b for a, b in zip(after.losses[exp], before.losses[exp], strict=True)]
             for exp in after.losses}
    return strategy, matrix.rows, added, snapshots


@pytest.fixture(scope="module")
def sequential(build, toy_tasks):
    return run(build, toy_tasks)


def test_sequential_baseline_forgets_the_first_task(sequential):
    _, R, _, _ = sequential
    assert R[0][0] >= 0.8 and R[1][0] <= 0.3, R


def test_replay_trains_on_old_task_rows_and_keeps_old_task_accuracy(build, toy_tasks, sequential):
    strategy, benchmark, matrix = build(toy_tasks, plugins=["replay"], model_name="minilm", lr=LR,
                                        epochs=EPOCHS)
    seen: dict[int, set[int]] = {}

    class TaskProbe(LossProbe):
        def before_backward(self, strategy, **kwargs) -> None:
            seen.setdefault(strategy.experience_index, set()).update(strategy.mb_task_id.tolist())

    strategy.plugins.append(TaskProbe())
    run_stream(strategy, benchmark, matrix, log=lambda _: None)
    assert seen == {0: {0}, 1: {0, 1}}, "experience 1's batches must mix in task-0 rows"
    R, R_seq = matrix.rows, sequential[1]
    assert R[1][0] >= R_seq[1][0] + 0.3, (R, R_seq)


def test_lwf_adds_a_positive_distillation_term_and_reduces_forgetting(build, toy_tasks, sequential):
    _, R, added, _ = run(build, toy_tasks, plugins=["lwf"], probe=True, lwf_alpha=10.0)
    assert all(term == 0.0 for term in added[0]), "no teacher yet in experience 0"
    assert min(added[1]) > 0, added[1][:5]
    R_seq = sequential[1]
    assert R[1][0] >= R_seq[1][0] + 0.3, (R, R_seq)


def test_ewc_adds_a_positive_penalty_and_reduces_drift_of_the_protected_parameters(build, toy_tasks, sequential):
    # Adapter gradients are small once experience 0 is fitted, so the Fisher importances are too:
    # lambda must be large for the penalty to matter (see the README's plugins paragraph).
    strategy, _, added, snaps = run(build, toy_tasks, plugins=["ewc"], probe=True, ewc_lambda=1e5)
    ewc = next(p for p in strategy.plugins if type(p).__name__ == "DictEWCPlugin")
    protected = set(ewc.importances[0])
    assert protected and protected <= set(snaps[0]), "EWC must protect the trained adapter"
    assert all(term == 0.0 for term in added[0])
    assert min(added[1][1:]) > 0, added[1][:5]  # the first step starts exactly at the anchor

    def drift(snapshots):
        return sum(float((snapshots[1][n] - snapshots[0][n]).pow(2).sum()) for n in protected)

    assert drift(snaps) < 0.5 * drift(sequential[3]), (drift(snaps), drift(sequential[3]))


def test_lwf_acts_in_per_task_mode_through_the_new_sets_gradient(build, toy_tasks):
    """per_task refuses replay and EWC but keeps LwF: its term pulls the new set's answers on the
    new task towards the frozen previous set's, so it is > 0 and reaches the trained set."""
    strategy, R, added, snaps = run(build, toy_tasks, plugins=["lwf"], probe=True, mode="per_task")
    assert min(added[1]) > 0 and set(snaps[1]) and all(".task1." in n for n in snaps[1])
    assert R[1][0] == R[0][0]  # the frozen set still answers task 0
