"""Avalanche plugins of kroncl, and the factory that builds the configured set.

Replay is avalanche-lib's ``ReplayPlugin`` (:class:`GlobalBatchReplayPlugin`: its loader without a
sampler of its own under torchrun) over a :class:`~kroncl.strategy.plugin_state.SeededReplayBuffer`.
The stateful plugins implement the checkpoint contract of :mod:`kroncl.strategy.plugin_state`.

- :class:`AccuracyCollector` — our own per-experience test accuracy (and which answer positions
  were predicted, for the collapse check of :mod:`kroncl.metrics.reference`), the source of the
  accuracy matrix (avalanche-lib's ``AccuracyMatrixPluginMetric`` crashes on the evaluation
  before any training that forward transfer needs).
- :class:`TrainLossCollector` — the mean multiple-choice cross-entropy of each training epoch next
  to the rows' mean ln(choices), the loss of uniform scores (for the learnt-nothing check of
  :mod:`kroncl.metrics.reference`).
- :class:`ChoiceLwFPlugin` — avalanche-lib's LwF, distilling only the choice columns a batch has.
- :class:`DictEWCPlugin` — avalanche-lib's EWC with importances computed on dict batches and
  only over trainable parameters (its own ``compute_importances`` unpacks tuple batches and
  stores a copy of every frozen base weight).
- :class:`OrthogonalPlugin` — Kron-aware O-LoRA (arXiv 2310.14152): adds
  ``lambda · Σ_layers Σ_old |F_old · F_newᵀ|`` where F is the adapter's *input* factor
  (B2 for Kron-LoRA, A for LoRA), keeping the input subspaces of task updates apart.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import torch
from avalanche.training.plugins import (
    EWCPlugin,
    LwFPlugin,
    ReplayPlugin,
    SupervisedPlugin,
)
from avalanche.benchmarks.utils.data_loader import ReplayDataLoader
from avalanche.training.regularization import LearningWithoutForgetting
from avalanche.training.utils import ParamData
from torch.utils.data import DataLoader

from kroncl.adapters import adapter_layers
from kroncl.config import StrategyConfig
from kroncl.evaluate import batch_to_device, count_correct
from kroncl.models.base import PAD_SCORE
from kroncl.strategy.plugin_state import (
    SeededReplayBuffer,
    param_dicts_from_state,
    param_dicts_to_state,
    rebuild_teacher,
    teacher_state,
)


class AccuracyCollector(SupervisedPlugin, supports_distributed=True):
    """Counts correct answers per evaluated experience; ``results[exp] = accuracy``."""

    def __init__(self) -> None:
        super().__init__()
        self.results: dict[int, float] = {}
        self.predicted: dict[int, Counter] = {}
        """exp -> how often each answer position was predicted (collapse check)."""
        self.routing: dict[int, tuple[int, int]] = {}
        """exp -> (rows routed to their own task's set, rows) when answered without task labels."""
        self._correct = 0
        self._total = 0

    def before_eval_exp(self, strategy, **kwargs) -> None:
        self._correct = self._total = 0
        self.predicted[int(strategy.experience.current_experience)] = Counter()
        self.routing.pop(int(strategy.experience.current_experience), None)

    def after_eval_iteration(self, strategy, **kwargs) -> None:
        correct, total = count_correct(strategy.mb_output, strategy.mb_y)
        self._correct += correct
        self._total += total
        exp = int(strategy.experience.current_experience)
        self.predicted[exp].update(strategy.mb_output.float().argmax(dim=-1).tolist())
        if getattr(strategy, "mb_routing", None) is not None:
            hits, rows = self.routing.get(exp, (0, 0))
            self.routing[exp] = (hits + strategy.mb_routing[0], rows + strategy.mb_routing[1])

    def after_eval_exp(self, strategy, **kwargs) -> None:
        exp = int(strategy.experience.current_experience)
        world = getattr(strategy, "world", None)
        if world is not None and world.distributed:  # each rank scored its shard: add them up
            routing = self.routing.get(exp, (0, 0))
            self._correct, self._total, hits, rows = (
                int(v) for v in world.sum([self._correct, self._total, *routing]))
            if exp in self.routing:
                self.routing[exp] = (hits, rows)
            self.predicted[exp] = sum(world.gather(self.predicted[exp]), Counter())
        self.results[exp] = self._correct / self._total if self._total else float("nan")


class TrainLossCollector(SupervisedPlugin, supports_distributed=True):
    """Per experience: ``epochs[exp]`` = mean training cross-entropy of each epoch, and
    ``chance[exp]`` = mean over the training rows of ln(number of choices), what uniform scores
    would give. Only the task's own loss counts (not the penalties EWC, LwF or the orthogonality
    term add), on the rows of this experience (replayed rows included: they are trained on too).
    """

    def __init__(self) -> None:
        super().__init__()
        self.epochs: dict[int, list[float]] = {}
        self.chance: dict[int, float] = {}
        self._sums = [0.0, 0.0, 0]  # loss * rows, ln(choices) summed over rows, rows

    def before_training_exp(self, strategy, **kwargs) -> None:
        self.epochs[int(strategy.experience.current_experience)] = []

    def before_training_epoch(self, strategy, **kwargs) -> None:
        self._sums = [0.0, 0.0, 0]

    @torch.no_grad()
    def after_training_iteration(self, strategy, **kwargs) -> None:
        scores, labels = strategy.mb_output.float(), strategy.mb_y
        if labels.numel() == 0:
            return
        rows = int(labels.numel())
        choices = (scores > PAD_SCORE / 2).sum(dim=-1).clamp(min=1).float()
        self._sums[0] += float(strategy._criterion(scores, labels)) * rows
        self._sums[1] += float(choices.log().sum())
        self._sums[2] += rows

    def after_training_epoch(self, strategy, **kwargs) -> None:
        loss, chance, rows = self._sums
        world = getattr(strategy, "world", None)
        if world is not None and world.distributed:  # each rank trained on its shard: add them up
            loss, chance, rows = world.sum([loss, chance, float(rows)])
        exp = int(strategy.experience.current_experience)
        self.epochs.setdefault(exp, []).append(loss / rows if rows else float("nan"))
        self.chance[exp] = chance / rows if rows else float("nan")


class ChoiceLwF(LearningWithoutForgetting):
    """LwF over choice scores: distils only the choice columns a batch actually has.

    avalanche-lib distils over every label value seen in earlier tasks; with multiple choice a
    label value is a choice index, and a batch whose questions have fewer choices (ARC mixes 3-5)
    has fewer score columns. Padded columns score -1e9 in both models, so dropping the missing
    ones changes nothing else.
    """

    def _distillation_loss(self, out, prev_out, active_units):
        present = [u for u in active_units if u < min(out.shape[1], prev_out.shape[1])]
        return super()._distillation_loss(out, prev_out, present)


class ChoiceLwFPlugin(LwFPlugin, supports_distributed=True):
    """avalanche-lib's LwF plugin with :class:`ChoiceLwF` as its regulariser.

    Checkpointable (see :mod:`kroncl.strategy.plugin_state`): the teacher is stored as its
    adapter tensors only, since its frozen base is the resumed model's.
    """

    def __init__(self, alpha: float = 1.0, temperature: float = 2.0) -> None:
        super().__init__(alpha=alpha, temperature=temperature)
        self.lwf = ChoiceLwF(alpha, temperature)

    def checkpoint_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        lwf = self.lwf
        state = {
            "expcount": lwf.expcount,
            "prev_classes_by_task": {str(t): sorted(int(c) for c in cs)
                                     for t, cs in sorted(lwf.prev_classes_by_task.items())},
            "teacher": None,
        }
        tensors: dict[str, torch.Tensor] = {}
        if lwf.prev_model is not None:
            state["teacher"], teacher_tensors = teacher_state(lwf.prev_model)
            tensors = {f"teacher/{k}": t for k, t in teacher_tensors.items()}
        return state, tensors

    def restore_checkpoint_state(self, state, tensors, *, strategy, train_stream) -> None:
        lwf = self.lwf
        lwf.expcount = int(state["expcount"])
        lwf.prev_classes_by_task = defaultdict(set, {
            int(t): set(cs) for t, cs in state["prev_classes_by_task"].items()})
        lwf.prev_model = None
        if state["teacher"] is not None:
            own = {k[len("teacher/"):]: t for k, t in tensors.items() if k.startswith("teacher/")}
            lwf.prev_model = rebuild_teacher(strategy.model, state["teacher"], own, strategy.device)


class DictEWCPlugin(EWCPlugin, supports_distributed=True):
    """EWC over the trainable parameters of the current experience, for dict batches.

    Checkpointable (see :mod:`kroncl.strategy.plugin_state`): importances and saved parameters
    travel as tensors ``importance/<exp>/<param>`` and ``saved_params/<exp>/<param>``.
    """

    def checkpoint_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        imp_names, imp = param_dicts_to_state("importance", self.importances)
        saved_names, saved = param_dicts_to_state("saved_params", self.saved_params)
        return {"importance": imp_names, "saved_params": saved_names}, {**imp, **saved}

    def restore_checkpoint_state(self, state, tensors, *, strategy, train_stream) -> None:
        owner, device = type(self).__name__, strategy.device
        self.importances = defaultdict(dict, param_dicts_from_state(
            "importance", state["importance"], tensors, device, owner))
        self.saved_params = defaultdict(dict, param_dicts_from_state(
            "saved_params", state["saved_params"], tensors, device, owner))

    def after_training_exp(self, strategy, **kwargs) -> None:
        exp_counter = strategy.clock.train_exp_counter
        importances = self.compute_importances(
            strategy.model,
            strategy._criterion,
            strategy.optimizer,
            strategy.experience.dataset,
            strategy.device,
            strategy.train_mb_size,
        )
        self.update_importances(importances, exp_counter)
        # Only trainable parameters are saved, so the penalty skips the (unchanging) base.
        self.saved_params[exp_counter] = {
            k: ParamData(k, p.shape, device=p.device, init_tensor=p.detach().clone())
            for k, p in strategy.model.named_parameters()
            if k in importances
        }
        if exp_counter > 0 and not self.keep_importance_data:
            self.saved_params.pop(exp_counter - 1, None)

    def compute_importances(
        self, model, criterion, optimizer, dataset, device, batch_size, num_workers=0
    ) -> dict[str, ParamData]:
        params = {k: p for k, p in model.named_parameters() if p.requires_grad}
        importances = {k: ParamData(k, p.shape, device=p.device) for k, p in params.items()}
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=dataset.collate_fn)
        model.eval()
        for batch in loader:
            batch = batch_to_device(batch, device)
            model.zero_grad(set_to_none=True)
            criterion(model(batch), batch["labels"]).backward()
            for k, p in params.items():
                if p.grad is not None:
                    importances[k].data += p.grad.detach().pow(2)
        for imp in importances.values():
            imp.data /= max(1, len(loader))
        model.zero_grad(set_to_none=True)
        model.train()
        return importances


def input_factor(params: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The factor that reads the layer input: B2 (r×b_in) for Kron-LoRA, A (r×d_in) for LoRA."""
    if "B2" in params:
        return params["B2"]
    if "B" in params and "A" in params:
        return params["A"]
    return None  # dense head deltas have no low-rank input subspace


def orthogonality_penalty(new: list[torch.Tensor], old: list[list[torch.Tensor]]) -> torch.Tensor:
    """Σ_l Σ_k |F_old[l][k] · F_new[l]ᵀ|₁ — zero iff every new row is orthogonal to every old row.

    Args:
        new: per layer, the new set's input factor, shape (r, b_in).
        old: per layer, the frozen sets' input factors, each (r', b_in).
    """
    total = new[0].new_zeros(()) if new else torch.zeros(())
    for f_new, olds in zip(new, old, strict=True):
        for f_old in olds:
            total = total + (f_old @ f_new.T).abs().sum()  # (r', r)
    return total


def factor_pairs(model, current: str, frozen: list[str]):
    """Per adapted layer: (current input factor, [frozen sets' input factors])."""
    new, old = [], []
    for layer in adapter_layers(model).values():
        f_new = input_factor(layer.adapter_parameters(current))
        if f_new is None:
            continue
        olds = [input_factor(layer.adapter_parameters(n)) for n in frozen]
        new.append(f_new)
        old.append([f.detach() for f in olds if f is not None])
    return new, old


class OrthogonalPlugin(SupervisedPlugin, supports_distributed=True):
    """Adds ``lam · orthogonality_penalty`` against every frozen set before the backward pass."""

    def __init__(self, adapter_sets, lam: float) -> None:
        super().__init__()
        self.adapter_sets = adapter_sets
        self.lam = lam
        self.last_penalty: float = 0.0

    def before_backward(self, strategy, **kwargs) -> None:
        frozen = self.adapter_sets.frozen_sets()
        if not frozen:
            return
        new, old = factor_pairs(strategy.model, self.adapter_sets.current, frozen)
        penalty = orthogonality_penalty(new, old)
        self.last_penalty = float(penalty.detach())
        strategy.loss += self.lam * penalty


class GlobalBatchReplayPlugin(ReplayPlugin, supports_distributed=True):
    """avalanche-lib's replay, its loader yielding global batches under torchrun too.

    ``ReplayPlugin`` builds a ``ReplayDataLoader`` that adds a ``DistributedSampler`` of its own
    whenever ``torch.distributed`` is initialised (and has no argument to stop it), so each rank
    would draw other rows than a single process and the strategy's sharding would cut them again.
    This builds the same loader with ``distributed_sampling=False``; the strategy then takes each
    rank's rows of every batch (:mod:`kroncl.distributed`). In one process it is the same loader.
    """

    checkpoint_name = "ReplayPlugin"  # its state's name in checkpoints, written before this class too

    def before_training_exp(self, strategy, num_workers: int = 0, shuffle: bool = True,
                            drop_last: bool = False, **kwargs) -> None:
        if len(self.storage_policy.buffer) == 0:
            return  # the first experience: nothing to replay, the strategy's own loader
        extra = {k: kwargs[k] for k in ("ffcv_args", "persistent_workers") if k in kwargs}
        strategy.dataloader = ReplayDataLoader(
            strategy.adapted_dataset, self.storage_policy.buffer, oversample_small_tasks=True,
            batch_size=self.batch_size or strategy.train_mb_size,
            batch_size_mem=self.batch_size_mem or strategy.train_mb_size,
            task_balanced_dataloader=self.task_balanced_dataloader, num_workers=num_workers,
            shuffle=shuffle, drop_last=drop_last, distributed_sampling=False, **extra)


def build_plugins(cfg: StrategyConfig, adapter_sets, seed: int | None = None) -> list[SupervisedPlugin]:
    """The configured continual-learning plugins, in a fixed order.

    Every plugin with cross-experience state is checkpointable (:mod:`kroncl.strategy.plugin_state`).
    ``seed`` seeds replay sampling; None takes the strategy's seed.
    """
    plugins: list[SupervisedPlugin] = []
    if "replay" in cfg.plugins:
        buffer = SeededReplayBuffer(cfg.replay_mem_size, seed=seed)
        plugins.append(GlobalBatchReplayPlugin(mem_size=cfg.replay_mem_size, storage_policy=buffer))
    if "lwf" in cfg.plugins:
        plugins.append(ChoiceLwFPlugin(alpha=cfg.lwf_alpha, temperature=cfg.lwf_temperature))
    if "ewc" in cfg.plugins:
        plugins.append(DictEWCPlugin(ewc_lambda=cfg.ewc_lambda))
    if cfg.mode == "orthogonal":
        plugins.append(OrthogonalPlugin(adapter_sets, cfg.orthogonal_lambda))
    return plugins

