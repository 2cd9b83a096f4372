"""The Avalanche benchmark: shape, task labels, dict mini-batches as avalanche builds its
loaders, and the tokenisation cache."""

from __future__ import annotations

import pytest
import torch
from avalanche.benchmarks.utils.data_loader import TaskBalancedDataLoader
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate

from kroncl.data import DataError, MCExample, StreamConfig, TaskSplits, build_stream, load_task, make_benchmark
from kroncl.models import PAD_SCORE
from kroncl.models.tiny import tiny_encoder


@pytest.fixture(scope="module")
def model():
    return tiny_encoder("bert", seed=0, max_length=48)


@pytest.fixture(scope="module")
def toy_tasks():
    return build_stream(StreamConfig(name="toy", tasks=["toy_larger", "toy_smaller"], max_train=24, max_validation=6, max_test=10))


@pytest.fixture
def bench(toy_tasks, model, tmp_path):
    return make_benchmark(toy_tasks, model, cache_dir=tmp_path)


def test_benchmark_shape_and_task_labels(bench, toy_tasks):
    assert set(bench.streams) == {"train", "test", "valid"}
    for stream, split in ((bench.train_stream, "train"), (bench.test_stream, "test"), (bench.valid_stream, "validation")):
        assert len(stream) == 2
        for i, exp in enumerate(stream):
            assert exp.current_experience == i
            assert exp.task_label == i and exp.task_labels == [i]
            examples = toy_tasks[i].split(split)
            assert len(exp.dataset) == len(examples)
            assert list(exp.dataset.targets) == [e.label for e in examples]
            assert set(exp.dataset.targets_task_labels.uniques) == {i}
            item = exp.dataset[0]
            assert item["labels"] == examples[0].label and item["task_labels"] == i
            assert len(item["input_ids"]) == len(examples[0].choices)


def _strategy(model):
    return SupervisedTemplate(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
        criterion=model.loss,
        train_mb_size=8,
        eval_mb_size=7,
        device="cpu",
        evaluator=EvaluationPlugin(loggers=[]),
    )


@pytest.mark.filterwarnings("ignore:No loggers specified")
def test_supervised_template_loaders_yield_dict_batches(bench, model):
    """Loaders built by avalanche's own SupervisedTemplate methods collate with model.collate."""
    strategy = _strategy(model)
    for i, exp in enumerate(bench.train_stream):
        strategy.experience = exp
        strategy.train_dataset_adaptation()
        strategy.make_train_dataloader()
        assert isinstance(strategy.dataloader, TaskBalancedDataLoader)  # experiences are task-aware
        batch = next(iter(strategy.dataloader))
        assert isinstance(batch, dict)
        assert batch["labels"].dtype == torch.long and batch["labels"].shape == (8,)
        assert torch.equal(batch["task_labels"], torch.full((8,), i))
        assert batch["input_ids"].shape[:2] == (8, 2) and batch["choice_mask"].all()
        assert model(batch).shape == (8, 2)
    for i, exp in enumerate(bench.test_stream):
        strategy.experience = exp
        strategy.eval_dataset_adaptation()
        strategy.make_eval_dataloader()
        batches = list(strategy.dataloader)
        assert sum(len(b["labels"]) for b in batches) == len(exp.dataset)
        assert all(isinstance(b, dict) and (b["task_labels"] == i).all() for b in batches)
        seen = torch.cat([b["labels"] for b in batches]).tolist()
        assert seen == list(exp.dataset.targets)


def test_concatenated_experiences_keep_collate_and_task_labels(bench):
    """What a replay buffer does: concat/subset across experiences, task-balanced loading."""
    a, b = (exp.dataset for exp in bench.train_stream)
    mixed = a.subset(range(6)).concat(b.subset(range(6)))
    assert mixed.collate_fn == a.collate_fn
    loader = TaskBalancedDataLoader(mixed, batch_size=12)
    batch = next(iter(loader))
    assert sorted(batch["task_labels"].tolist()) == [0] * 6 + [1] * 6


def test_mixed_choice_counts_in_one_batch(shared_data, model, tmp_path):
    rows = {e.id: e for e in load_task("arc_challenge", shared_data).test}
    picked = [rows["arc_challenge-test-00121"], rows["arc_challenge-test-00836"], rows["arc_challenge-test-00000"]]
    task = TaskSplits("arc_mix", train=picked, validation=[], test=picked)
    bench = make_benchmark([task], model, cache_dir=tmp_path)
    assert "valid" not in bench.streams
    ds = bench.test_stream[0].dataset
    batch = ds.collate_fn([ds[i] for i in range(3)])
    assert batch["choice_mask"].sum(dim=1).tolist() == [3, 5, 4]
    assert batch["labels"].tolist() == [0, 3, picked[2].label]
    scores = model(batch)
    assert scores.shape == (3, 5)
    assert scores[0, 3:].eq(PAD_SCORE).all() and scores[2, 4] == PAD_SCORE
    assert torch.isfinite(model.loss(scores, batch["labels"]))


def test_validation_requested_but_missing(model, tmp_path):
    ex = [MCExample("a", "q?", ["x", "y"], 0)]
    with pytest.raises(DataError, match="no validation rows"):
        make_benchmark([TaskSplits("t", ex, [], ex)], model, cache_dir=tmp_path, with_validation=True)
    with pytest.raises(DataError, match="no tasks"):
        make_benchmark([], model, cache_dir=tmp_path)


def _counting(model, calls):
    real_encode = model.encode

    def counting_encode(example):
        calls.append(example.id)
        return real_encode(example)

    model.encode = counting_encode
    return model


def test_second_build_reads_the_tokenisation_cache(toy_tasks, tmp_path):
    calls: list[str] = []
    m = _counting(tiny_encoder("bert", seed=0, max_length=48), calls)
    first = make_benchmark(toy_tasks, m, cache_dir=tmp_path)
    n_rows = sum(len(t.train) + len(t.validation) + len(t.test) for t in toy_tasks)
    assert len(calls) == n_rows
    assert len(list(tmp_path.glob("*.arrow"))) == 6

    calls.clear()
    second = make_benchmark(toy_tasks, m, cache_dir=tmp_path)
    assert calls == []  # every split came from the Arrow cache
    assert second.train_stream[1].dataset[3] == first.train_stream[1].dataset[3]

    # Another max_length changes the encoding: a new cache entry, tokenised again.
    short = _counting(tiny_encoder("bert", seed=0, max_length=16), calls)
    make_benchmark(toy_tasks[:1], short, cache_dir=tmp_path)
    assert len(calls) == len(toy_tasks[0].train) + len(toy_tasks[0].validation) + len(toy_tasks[0].test)
    assert len(list(tmp_path.glob("*.arrow"))) == 9
