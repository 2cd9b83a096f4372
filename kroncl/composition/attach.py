"""Several adapter sets on one base model, each row of a batch routed to its task's set.

:func:`attach_adapters` loads each adapter as its own set (named after its task) into a clean
base model; :class:`ComposedModel` scores batches with it -- one set: the active set (merge it
with :meth:`ComposedModel.merge`); several: each row by the batch's ``task_labels``
(``kroncl.adapters.routing.routed_forward``). Label ``i`` is the ``i``-th task passed in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from kroncl.adapters import (
    LoadedAdapter,
    adapter_layers,
    adapter_names,
    inject_adapters,
    load_adapter_state_dict,
    merge_adapter,
    set_active_adapter,
)
from kroncl.adapters.routing import TokenCentroidRouter, confident_forward, routed_forward
from kroncl.composition.compatible import ComposeError, check_compatible, set_name_for

if TYPE_CHECKING:
    from kroncl.models import MultipleChoiceModel

__all__ = ["ComposedModel", "attach_adapters"]


@dataclass
class ComposedModel:
    """A base model with one or several task adapter sets loaded, ready to score.

    Attributes:
        model: the model; its backbone carries the adapter layers.
        tasks: task names in label order: a batch row with ``task_labels == i`` is answered
            by the set of ``tasks[i]``.
        sets: task -> adapter-set name in the backbone.
        merged: whether the (single) set is folded into the base weights.
    """

    model: MultipleChoiceModel
    tasks: list[str]
    sets: dict[str, str]
    merged: bool = False
    routed: Counter = field(default_factory=Counter)
    """Rows answered without task labels, counted by the task whose set answered them (clear
    it before scoring to measure routing on one task's rows)."""
    router: TokenCentroidRouter | None = None
    """Guesses the task of a row without ``task_labels`` (fitted with composed label values);
    None or unfitted: the most confident set answers."""

    @property
    def multi(self) -> bool:
        """Several resident sets, routed per batch row."""
        return len(self.tasks) > 1

    def label(self, task: str) -> int:
        """Task label (row routing value) of ``task``.

        Raises:
            ComposeError: ``task`` is not composed (the message lists what is).
        """
        if task not in self.sets:
            raise ComposeError(f"task {task!r} is not in this composition; its tasks are {self._known()}")
        return self.tasks.index(task)

    def route(self, task: int | str) -> str:
        """Adapter set answering for ``task``: a label (int) or a task name (str).

        Raises:
            ComposeError: unknown label or task (the message lists the known ones).
        """
        if isinstance(task, str):
            return self.sets[self.tasks[self.label(task)]]
        if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < len(self.tasks):
            raise ComposeError(f"task label {task!r} is not in this composition; its tasks are {self._known()}")
        return self.sets[self.tasks[task]]

    def _known(self) -> str:
        return ", ".join(f"{i}={t}" for i, t in enumerate(self.tasks))

    def merge(self) -> None:
        """Fold the single set into the base weights (no adapter cost left in forward).

        Raises:
            ComposeError: several sets are resident (one forward cannot serve them merged).
        """
        if self.multi:
            raise ComposeError(
                f"cannot merge {len(self.tasks)} resident adapter sets ({', '.join(self.tasks)}) into one base "
                "weight: merging folds exactly one set. Combine them with weights (task arithmetic) to get "
                "one adapter, or keep them resident and route by task"
            )
        merge_adapter(self.model.backbone, self.sets[self.tasks[0]])
        self.merged = True

    @torch.no_grad()
    def __call__(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, C) choice scores; with several sets each row goes through its task's set, or —
        for a batch without ``task_labels`` — through the set of the task :attr:`router`
        guesses, else the set most confident about it
        (:func:`kroncl.adapters.routing.confident_forward`); counted in :attr:`routed`.

        Raises:
            ComposeError: a label that names no composed task.
        """
        if not self.multi:
            return self.model(batch)
        task_ids = batch.get("task_labels")
        if task_ids is None:
            if self.router is not None and self.router.labels:
                guessed = self.router.predict(batch)
                self.routed.update(self.tasks[int(i)] for i in guessed.tolist())
                return routed_forward(self.model, self.model.backbone, batch, guessed, self.route)
            names = [self.sets[t] for t in self.tasks]
            scores, chosen = confident_forward(self.model, self.model.backbone, batch, names)
            self.routed.update(self.tasks[i] for i in chosen.tolist())
            return scores
        for label in task_ids.unique().tolist():
            self.route(int(label))  # fail with the known labels before any forward
        return routed_forward(self.model, self.model.backbone, batch, task_ids, self.route)

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: tasks with labels and set names, merged flag."""
        return {"tasks": [{"label": i, "task": t, "set": self.sets[t]} for i, t in enumerate(self.tasks)],
                "merged": self.merged}


def attach_adapters(model: MultipleChoiceModel, adapters: Mapping[str, LoadedAdapter]) -> ComposedModel:
    """Load each adapter as its own set (named after its task) into a clean base model.

    The first adapter's config injects the adapter layers; every adapter is loaded strictly
    (each missing, unexpected or mis-shaped tensor is reported). The first task's set is active.

    Args:
        model: a base model without adapter layers (see :func:`strip_adapters`), in eval mode.
        adapters: task name -> adapter, in label order.

    Returns:
        The composed model (not merged).

    Raises:
        ComposeError: the model already has adapter layers, two tasks map to one set name, or
            the adapters do not fit together (:func:`check_compatible`).
        AdapterLoadError: an adapter's tensors do not fit the layers.
    """
    if adapter_layers(model.backbone):
        raise ComposeError(
            f"the base model already carries adapter sets {adapter_names(model.backbone)}; "
            "compose into a clean base model (strip_adapters(model) removes them)"
        )
    check_compatible(adapters, resident=True)
    tasks = list(adapters)
    sets = {t: set_name_for(t) for t in tasks}
    if len(set(sets.values())) != len(sets):
        raise ComposeError(f"tasks {tasks} map to clashing adapter-set names {list(sets.values())}")
    first = adapters[tasks[0]]
    inject_adapters(model.backbone, first.config, adapter_name=sets[tasks[0]])
    for task in tasks:
        load_adapter_state_dict(
            model.backbone, adapters[task].tensors, sets[task], strict=True, config=adapters[task].config, source=task
        )
    model.requires_grad_(False)
    model.eval()
    set_active_adapter(model.backbone, sets[tasks[0]])
    return ComposedModel(model=model, tasks=tasks, sets=sets)
