"""Plugin state through a checkpoint: killed after experience 0 + resumed == uninterrupted."""

from __future__ import annotations

import json

import pytest
import torch
from avalanche.training.plugins import ReplayPlugin
from safetensors.torch import load_file, save_file

from kroncl.adapters import adapter_names, adapter_state_dict, add_adapter, load_adapter_state_dict
from kroncl.strategy.adapter_sets import AdapterSets
from kroncl.strategy.checkpoint import CheckpointError
from kroncl.strategy.plugin_state import SeededReplayBuffer, plugins_checkpoint_state, restore_plugins_state
from kroncl.strategy.plugins import ChoiceLwFPlugin, DictEWCPlugin


def train_experience(strategy, benchmark, index: int) -> None:
    """What run_stream does for one experience, minus evaluation."""
    experience = benchmark.train_stream[index]
    strategy.train(experience, eval_streams=[])
    strategy.adapter_sets.end_experience(int(experience.task_label))


def adapters_of(strategy) -> dict[str, dict[str, torch.Tensor]]:
    backbone = strategy.model.backbone
    return {n: adapter_state_dict(backbone, n) for n in adapter_names(backbone)}


def assert_same_adapters(a, b) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys()
        differing = [k for k in a[name] if not torch.equal(a[name][k], b[name][k])]
        assert not differing, f"set {name}: {len(differing)} tensors differ, e.g. {differing[:3]}"


def differs(a, b) -> bool:
    return any(not torch.equal(a[n][k], b[n][k]) for n in a for k in a[n])


def save_round_trip(tmp_path, strategy):
    """The checkpoint after an experience, through JSON text and safetensors files."""
    state, tensors = plugins_checkpoint_state(strategy.plugins)
    save_file(tensors, str(tmp_path / "plugins.safetensors"))
    adapters = {f"{n}::{k}": t.contiguous()
                for n, sd in adapters_of(strategy).items() for k, t in sd.items()}
    save_file(adapters, str(tmp_path / "adapters.safetensors"))
    text = json.dumps({"plugins": state, "adapter_sets": strategy.adapter_sets.state_dict()})
    return json.loads(text), load_file(str(tmp_path / "plugins.safetensors")), load_file(
        str(tmp_path / "adapters.safetensors"))


def resumed(build, toy_tasks, plugin: str | list[str], saved, restore: bool, mode="sequential"):
    """A fresh strategy resumed at experience 1 the way pipelines/continual.py resumes."""
    meta, plugin_tensors, adapter_tensors = saved
    plugins = [plugin] if isinstance(plugin, str) else plugin
    strategy, benchmark, _ = build(toy_tasks, mode=mode, plugins=plugins)
    backbone = strategy.model.backbone
    by_set: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in adapter_tensors.items():
        name, sub = key.split("::", 1)
        by_set.setdefault(name, {})[sub] = t
    for name, tensors in by_set.items():
        if name not in adapter_names(backbone):
            add_adapter(backbone, name)
        load_adapter_state_dict(backbone, tensors, name)
    strategy.adapter_sets = AdapterSets.from_state_dict(meta["adapter_sets"])
    strategy.clock.train_exp_counter = 1
    if restore:
        restore_plugins_state(strategy.plugins, meta["plugins"], plugin_tensors,
                              strategy=strategy, train_stream=benchmark.train_stream)
    return strategy, benchmark


def added_terms(plugin) -> list[tuple[int, float]]:
    """Record (experience, loss added by ``plugin.before_backward``) for every iteration."""
    terms: list[tuple[int, float]] = []
    original = plugin.before_backward

    def wrapped(strategy, **kwargs):
        # The term alone (an EWC penalty can be far below the loss's float resolution).
        before, strategy.loss = strategy.loss, torch.zeros_like(strategy.loss)
        original(strategy, **kwargs)
        terms.append((strategy.experience_index, float(strategy.loss.detach())))
        strategy.loss = before + strategy.loss

    plugin.before_backward = wrapped
    return terms


class TaskLabelSpy:
    """Records the task labels of every training mini-batch, per experience."""

    def __init__(self):
        self.labels: dict[int, set[int]] = {}

    def __getattr__(self, name):
        return lambda *a, **k: None

    def before_forward(self, strategy, **kwargs):
        seen = self.labels.setdefault(strategy.experience_index, set())
        seen.update(int(t) for t in strategy.mb_task_id.unique())


def find(strategy, cls):
    return next(p for p in strategy.plugins if isinstance(p, cls))


@pytest.mark.parametrize("plugin", ["replay", "ewc", "lwf"])
def test_resumed_plugin_state_trains_bit_exactly_like_an_uninterrupted_run(
        build, toy_tasks, tmp_path, plugin):
    a, bench_a, _ = build(toy_tasks, plugins=[plugin])
    spy = TaskLabelSpy()
    a.plugins.append(spy)
    terms = {"ewc": lambda: added_terms(find(a, DictEWCPlugin)),
             "lwf": lambda: added_terms(find(a, ChoiceLwFPlugin))}.get(plugin, list)()
    train_experience(a, bench_a, 0)
    saved = save_round_trip(tmp_path, a)  # the checkpoint a killed run would have left
    train_experience(a, bench_a, 1)
    uninterrupted = adapters_of(a)

    b, bench_b = resumed(build, toy_tasks, plugin, saved, restore=True)
    train_experience(b, bench_b, 1)
    assert_same_adapters(uninterrupted, adapters_of(b))

    c, bench_c = resumed(build, toy_tasks, plugin, saved, restore=False)
    train_experience(c, bench_c, 1)
    assert differs(uninterrupted, adapters_of(c)), "resuming without the plugin state changed nothing"

    if plugin == "replay":
        assert spy.labels[0] == {0} and spy.labels[1] == {0, 1}, spy.labels
    else:
        assert max(term for exp, term in terms if exp == 1) > 0, f"{plugin} added nothing in exp 1"
        assert all(term == 0 for exp, term in terms if exp == 0)


def test_all_plugins_together_resume_bit_exactly_in_per_task_mode(build, toy_tasks, tmp_path):
    plugins = ["replay", "lwf", "ewc"]
    a, bench_a, _ = build(toy_tasks, mode="per_task", plugins=plugins)
    train_experience(a, bench_a, 0)
    saved = save_round_trip(tmp_path, a)
    train_experience(a, bench_a, 1)
    b, bench_b = resumed(build, toy_tasks, plugins, saved, restore=True, mode="per_task")
    train_experience(b, bench_b, 1)
    assert adapter_names(a.model.backbone) == ["task0", "task1"]
    assert_same_adapters(adapters_of(a), adapters_of(b))


def test_restored_ewc_and_lwf_state_equals_the_saved_one(build, toy_tasks, tmp_path):
    a, bench_a, _ = build(toy_tasks, plugins=["ewc", "lwf"])
    train_experience(a, bench_a, 0)
    saved = save_round_trip(tmp_path, a)
    b, _ = resumed(build, toy_tasks, "ewc", saved, restore=False)
    b_lwf = ChoiceLwFPlugin()
    b.plugins.insert(0, b_lwf)
    restore_plugins_state(b.plugins, saved[0]["plugins"], saved[1], strategy=b,
                          train_stream=bench_a.train_stream)
    ewc_a, ewc_b = find(a, DictEWCPlugin), find(b, DictEWCPlugin)
    for kind in ("importances", "saved_params"):
        got, want = getattr(ewc_b, kind), getattr(ewc_a, kind)
        assert list(got) == list(want) == [0]
        assert list(got[0]) == list(want[0])
        assert all(torch.equal(got[0][k].data, want[0][k].data) for k in want[0])
    teacher_a, teacher_b = find(a, ChoiceLwFPlugin).lwf.prev_model, b_lwf.lwf.prev_model
    assert teacher_b is not b.model
    params_a, params_b = dict(teacher_a.named_parameters()), dict(teacher_b.named_parameters())
    assert params_a.keys() == params_b.keys()
    assert all(torch.equal(params_a[k], params_b[k]) for k in params_a)
    assert all(params_a[k].requires_grad == params_b[k].requires_grad for k in params_a)
    assert teacher_a.training == teacher_b.training
    assert b_lwf.lwf.expcount == 1
    assert b_lwf.lwf.prev_classes_by_task == find(a, ChoiceLwFPlugin).lwf.prev_classes_by_task


class FakeExperience:
    def __init__(self, index, dataset):
        self.current_experience = index
        self.dataset = dataset


def fill(buffer, benchmark, n_experiences):
    for e in range(n_experiences):
        buffer.post_adapt(None, FakeExperience(e, benchmark.train_stream[e].dataset))


def test_replay_buffer_is_experience_balanced_and_keeps_its_highest_weights(build, toy_tasks):
    _, benchmark, _ = build(toy_tasks)
    buffer = SeededReplayBuffer(33, seed=3)
    fill(buffer, benchmark, 1)
    first = buffer.kept[0].tolist()
    assert len(first) == 33 and len(buffer.buffer) == 33
    fill(buffer, benchmark, 2)  # re-adding experience 0 is idempotent; 1 is new
    assert {e: len(i) for e, i in buffer.kept.items()} == {0: 16, 1: 16}
    assert buffer.kept[0].tolist() == first[:16], "shrinking must keep the highest-weight rows"
    assert len(buffer.buffer) == 32
    labels = [int(buffer.buffer[i]["task_labels"]) for i in range(len(buffer.buffer))]
    assert labels == [0] * 16 + [1] * 16
    batch = buffer.buffer.collate_fn([buffer.buffer[i] for i in (0, 31)])
    assert batch["task_labels"].tolist() == [0, 1]


def test_replay_buffer_is_deterministic_per_seed_and_leaves_the_global_rng_alone(build, toy_tasks):
    _, benchmark, _ = build(toy_tasks)
    rng = torch.get_rng_state()
    one, two, other = (SeededReplayBuffer(32, seed=s) for s in (5, 5, 6))
    for buffer in (one, two, other):
        fill(buffer, benchmark, 2)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(one.kept[e], two.kept[e]) for e in (0, 1))
    assert any(not torch.equal(one.kept[e], other.kept[e]) for e in (0, 1))


def test_replay_buffer_state_rebuilds_the_same_buffer(build, toy_tasks):
    _, benchmark, _ = build(toy_tasks)
    buffer = SeededReplayBuffer(32, seed=1)
    fill(buffer, benchmark, 2)
    state, tensors = buffer.checkpoint_state()
    restored = SeededReplayBuffer(32, seed=1)
    restored.restore_checkpoint_state(json.loads(json.dumps(state)), tensors, strategy=None,
                                      train_stream=benchmark.train_stream)
    assert [restored.buffer[i] for i in range(32)] == [buffer.buffer[i] for i in range(32)]
    assert all(torch.equal(restored.weights[e], buffer.weights[e]) for e in (0, 1))


@pytest.mark.parametrize("plugin, name", [("replay", "ReplayPlugin"), ("ewc", "DictEWCPlugin"),
                                          ("lwf", "ChoiceLwFPlugin")])
def test_missing_plugin_state_is_a_clear_checkpoint_error(build, toy_tasks, plugin, name):
    strategy, benchmark, _ = build(toy_tasks, plugins=[plugin])
    with pytest.raises(CheckpointError, match=name):
        restore_plugins_state(strategy.plugins, {}, {}, strategy=strategy,
                              train_stream=benchmark.train_stream)


def test_namespaced_keys_and_unsupported_stateful_plugins(build, toy_tasks):
    strategy, benchmark, _ = build(toy_tasks, plugins=["replay", "ewc"])
    train_experience(strategy, benchmark, 0)
    state, tensors = plugins_checkpoint_state(strategy.plugins)
    assert set(state) == {"ReplayPlugin", "DictEWCPlugin"}  # AccuracyCollector is stateless
    assert any(k.startswith("DictEWCPlugin/importance/0/") for k in tensors)
    assert "ReplayPlugin/weights/0" in tensors
    with pytest.raises(CheckpointError, match="ReplayPlugin"):
        plugins_checkpoint_state([ReplayPlugin(mem_size=4)])  # avalanche's own storage


def test_replay_state_of_another_memory_size_is_refused(build, toy_tasks):
    _, benchmark, _ = build(toy_tasks)
    buffer = SeededReplayBuffer(32, seed=1)
    fill(buffer, benchmark, 1)
    state, tensors = buffer.checkpoint_state()
    with pytest.raises(CheckpointError, match="replay_mem_size=32"):
        SeededReplayBuffer(16).restore_checkpoint_state(state, tensors, strategy=None,
                                                        train_stream=benchmark.train_stream)
