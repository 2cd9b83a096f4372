"""Model selection on the validation split: best epoch kept, trajectory untouched, early stop."""

from __future__ import annotations

import pytest
import torch

from kroncl.adapters import adapter_state_dict
from kroncl.config import TrainConfig, validate_train
from kroncl.strategy.loop import run_stream
from kroncl.strategy.selection import EpochSelection, build_selection

EPOCHS = 4


class EpochTensors:
    """Copies the trained set after every epoch (placed after the selector)."""

    def __init__(self) -> None:
        self.by_exp: dict[int, list[dict[str, torch.Tensor]]] = {}

    def __getattr__(self, name):
        return lambda *a, **k: None

    def after_training_epoch(self, strategy, **kwargs) -> None:
        state = adapter_state_dict(strategy.model.backbone, strategy.adapter_sets.current)
        self.by_exp.setdefault(strategy.experience_index, []).append(
            {k: v.detach().clone() for k, v in state.items()})


def selected_run(build, tasks, patience=0, select=True, plugins=(), lr=3e-2):
    strategy, benchmark, matrix = build(tasks, plugins=plugins, epochs=EPOCHS, lr=lr)
    selector = EpochSelection(benchmark.valid_stream, patience) if select else None
    if selector:
        strategy.plugins.insert(0, selector)
    epochs = EpochTensors()
    strategy.plugins.append(epochs)
    ends = {}

    def at_end(index, _experience, _matrix):
        ends[index] = ({k: v.clone() for k, v in adapter_state_dict(strategy.model.backbone, "stream").items()},
                       None if selector is None else selector.last)

    run_stream(strategy, benchmark, matrix, on_experience_end=at_end, log=lambda _: None)
    return strategy, epochs.by_exp, ends


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_each_experience_ends_with_its_best_validation_epoch(build, toy_tasks):
    _, per_epoch, ends = selected_run(build, toy_tasks)
    chosen_not_last = 0
    for exp, (final, sel) in ends.items():
        assert len(sel.val_acc) == EPOCHS
        best = max(sel.val_acc)
        assert sel.epoch == sel.val_acc.index(best) + 1  # the first best epoch on ties
        assert same(final, per_epoch[exp][sel.epoch - 1])
        chosen_not_last += sel.epoch != EPOCHS
    # This seed and lr overfit the tiny model: at least one experience picks an earlier epoch,
    # so the test above is not only comparing the last epoch with itself.
    assert chosen_not_last >= 1, [s.val_acc for _, s in ends.values()]


def test_selection_does_not_change_the_training_trajectory(build, toy_tasks):
    """Validation scoring draws no random numbers: every epoch's tensors are those of a run
    without selection, and only the experience's end state differs."""
    _, with_sel, _ = selected_run(build, toy_tasks)
    _, without, _ = selected_run(build, toy_tasks, select=False)
    # Experience 1 starts from experience 0's *selected* state, so only experience 0 compares.
    assert all(same(a, b) for a, b in zip(with_sel[0], without[0], strict=True))


def test_patience_stops_an_experience_after_epochs_without_improvement(build, toy_tasks):
    _, per_epoch, ends = selected_run(build, toy_tasks, patience=1)
    for exp, (_, sel) in ends.items():
        ran = len(per_epoch[exp])
        assert ran == len(sel.val_acc)
        if sel.stopped_early:
            assert ran == sel.epoch + 1 < EPOCHS and sel.val_acc[-1] <= sel.best
        else:
            assert ran == EPOCHS
    assert any(sel.stopped_early for _, sel in ends.values())


def test_ewc_anchors_the_selected_epoch_not_the_last_one(build, toy_tasks):
    strategy, per_epoch, ends = selected_run(build, toy_tasks, plugins=["ewc"])
    ewc = next(p for p in strategy.plugins if type(p).__name__ == "DictEWCPlugin")
    _, sel = ends[1]
    # EWC names model parameters (backbone.<layer>.adapters.stream.A); the adapter state dict
    # names them per layer (<layer>.A).
    anchors = {n.removeprefix("backbone.").replace(".adapters.stream", ""): p.data
               for n, p in ewc.saved_params[1].items()}
    selected = per_epoch[1][sel.epoch - 1]
    assert set(selected) <= set(anchors), sorted(set(selected) - set(anchors))[:3]
    assert all(torch.equal(anchors[k], selected[k]) for k in selected)
    if sel.epoch != EPOCHS:
        assert not same(selected, per_epoch[1][-1])


def test_without_a_validation_stream_the_last_epoch_is_kept_and_said():
    said = []
    assert build_selection("best_val", 0, object(), said.append) == []
    assert "keeps its last epoch" in said[0]
    assert build_selection("last", 0, object(), said.append) == [] and len(said) == 1


@pytest.mark.parametrize(("select", "patience", "message"), [
    ("best", 0, "train.select='best' is not one of best_val, last"),
    ("last", 2, "train.patience=2 stops on validation accuracy, which train.select=last does not use"),
    ("best_val", -1, "train.patience=-1 must be >= 0"),
])
def test_bad_selection_settings_name_the_key(select, patience, message):
    errors: list[str] = []
    validate_train(TrainConfig(select=select, patience=patience), errors)
    assert len(errors) == 1 and message in errors[0], errors
