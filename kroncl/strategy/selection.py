"""Model selection on the validation split: each experience keeps its best epoch.

After every training epoch :class:`EpochSelection` scores the current experience's validation
rows (``benchmark.valid_stream``) with :func:`kroncl.evaluate.evaluate_accuracy` — plain
inference that draws no random numbers, so selection never changes the training trajectory,
only which epoch's tensors the experience ends with. At the end of the experience the trained
adapter set is put back to the best epoch (the first one on ties), *before* any other plugin's
``after_training_exp`` (EWC's importances and anchors, LwF's teacher) sees the model, so
everything downstream — test row of the accuracy matrix, stored adapter, registry version —
is the selected epoch. With ``patience`` > 0, training stops after that many epochs without a
better validation accuracy (early stopping).

The choice is an experience's own business: a crash restarts the experience from its
checkpoint and re-selects, so there is no cross-experience state to checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from avalanche.training.plugins import SupervisedPlugin

from kroncl.adapters import adapter_state_dict, load_adapter_state_dict
from kroncl.evaluate import evaluate_accuracy


@dataclass
class Selection:
    """What one experience's selection saw and chose."""

    val_acc: list[float] = field(default_factory=list)
    """Validation accuracy after each epoch that ran (epoch 1 first)."""
    epoch: int = 0
    """The chosen epoch, 1-based (0 before any epoch ended)."""
    stopped_early: bool = False

    @property
    def best(self) -> float:
        return self.val_acc[self.epoch - 1] if self.epoch else float("nan")

    def to_dict(self) -> dict:
        return {"selected_epoch": self.epoch, "epochs_run": len(self.val_acc),
                "val_acc": self.val_acc, "stopped_early": self.stopped_early}


class EpochSelection(SupervisedPlugin, supports_distributed=True):
    """Best epoch by validation accuracy per experience; optional early stopping.

    Must come first among the strategy's plugins (see the module docstring).

    Args:
        valid_stream: one validation experience per training experience, aligned by index.
        patience: stop after this many epochs without improvement; 0 trains every epoch.
    """

    def __init__(self, valid_stream, patience: int = 0) -> None:
        super().__init__()
        self.valid = [exp.dataset for exp in valid_stream]
        self.patience = patience
        self.last = Selection()
        self._best_state: dict[str, torch.Tensor] | None = None

    def before_training_exp(self, strategy, **kwargs) -> None:
        self.last = Selection()
        self._best_state = None

    def after_training_epoch(self, strategy, **kwargs) -> None:
        sel = self.last
        acc = evaluate_accuracy(
            strategy.model, self.valid[strategy.experience_index], strategy.adapter_sets.route,
            batch_size=strategy.eval_mb_size, device=strategy.device, autocast=strategy._autocast)
        sel.val_acc.append(acc)
        if sel.epoch == 0 or acc > sel.best:
            sel.epoch = len(sel.val_acc)
            # adapter_state_dict already returns detached copies.
            self._best_state = adapter_state_dict(strategy.model.backbone, strategy.adapter_sets.current)
        elif self.patience and len(sel.val_acc) - sel.epoch >= self.patience:
            sel.stopped_early = len(sel.val_acc) < strategy.train_epochs
            strategy.stop_training()

    def after_training_exp(self, strategy, **kwargs) -> None:
        if self._best_state is not None and self.last.epoch != len(self.last.val_acc):
            load_adapter_state_dict(strategy.model.backbone, self._best_state, strategy.adapter_sets.current)
        self._best_state = None


def build_selection(select: str, patience: int, benchmark, log=print) -> list[EpochSelection]:
    """``[EpochSelection]`` for ``train.select=best_val`` when the benchmark has a validation
    stream; ``[]`` (the last epoch is kept) otherwise, saying why."""
    if select != "best_val":
        return []
    valid = getattr(benchmark, "valid_stream", None)
    if valid is None:
        log("no validation split (stream.validation_fraction=0 and none in the data): "
            "each experience keeps its last epoch")
        return []
    return [EpochSelection(valid, patience)]
