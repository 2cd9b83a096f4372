"""The continual loop: evaluate before training, then train and evaluate experience by experience.

Fills the accuracy matrix R (R[i][j] = accuracy on task j's test set after experience i, plus
the zero-shot row before any training) and hands every finished experience to a callback (the
pipeline checkpoints, quantizes, registers and logs there).
"""

from __future__ import annotations

from collections.abc import Callable

from kroncl.metrics import AccuracyMatrix
from kroncl.strategy.plugins import AccuracyCollector
from kroncl.strategy.template import KronclStrategy


def evaluate_stream(strategy: KronclStrategy, test_stream) -> list[float]:
    """Accuracy on every experience of ``test_stream`` with the strategy's current routing."""
    collector = next(p for p in strategy.plugins if isinstance(p, AccuracyCollector))
    collector.results.clear()
    strategy.eval(test_stream)
    return [collector.results[int(exp.current_experience)] for exp in test_stream]


def run_stream(
    strategy: KronclStrategy,
    benchmark,
    matrix: AccuracyMatrix,
    start: int = 0,
    on_experience_end: Callable[[int, object, AccuracyMatrix], None] | None = None,
    log: Callable[[str], None] = print,
) -> AccuracyMatrix:
    """Train ``benchmark.train_stream`` from experience ``start`` on.

    Args:
        strategy: the strategy, with an :class:`AccuracyCollector` among its plugins.
        benchmark: avalanche benchmark with aligned ``train_stream`` and ``test_stream``.
        matrix: R so far (empty for a new run, restored from a checkpoint on resume).
        start: first experience to train (0 for a new run).
        on_experience_end: called after each experience is trained and evaluated, with its
            index, the experience and the updated matrix.
    """
    test_stream = benchmark.test_stream
    if not matrix.has_baseline:
        log("evaluating every task before training (zero-shot row of the accuracy matrix)")
        for j, acc in enumerate(evaluate_stream(strategy, test_stream)):
            matrix.set_baseline(j, acc)
    for index, experience in enumerate(benchmark.train_stream):
        if index < start:
            continue
        name = matrix.task_names[index]
        log(f"experience {index}: training on {name} ({len(experience.dataset)} examples)")
        strategy.train(experience, eval_streams=[])
        strategy.adapter_sets.end_experience(int(experience.task_label))
        row = evaluate_stream(strategy, test_stream)
        matrix.set_row(index, row)
        log(
            f"experience {index}: accuracy "
            + ", ".join(f"{t}={a:.3f}" for t, a in zip(matrix.task_names, row))
        )
        if on_experience_end is not None:
            on_experience_end(index, experience, matrix)
    return matrix
