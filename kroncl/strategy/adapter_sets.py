"""Which adapter set trains on which experience, and which one answers for which task.

The one place that knows the continual-learning *modes*:

- ``sequential``: one adapter set (``stream``) trains through the whole stream.
- ``per_task``: experience ``i`` trains a new set ``task<i>``, warm-started from the previous
  set (lineage ``continued_from``); earlier sets are frozen and stay resident. At evaluation, a
  batch's task label selects the set trained on that task; a task not trained yet is answered
  by the newest set (that is what forward transfer measures).
- ``orthogonal`` (O-LoRA, arXiv 2310.14152): experience ``i`` trains a *fresh* set ``task<i>``
  while every earlier set stays active, frozen, summed into the same forward; the model that
  answers every task — labels known or not — is the sum of all trained sets. Orthogonality of
  the input factors (the plugin) is what keeps a new set from undoing the earlier ones.

Everything trained in an experience (adapters and the head's dense delta) lives in that set, so
nothing shared drifts; under ``per_task`` per-task accuracy on known tasks cannot change after
training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import nn

from kroncl.adapters import (
    AdapterConfig,
    adapter_names,
    add_adapter,
    inject_adapters,
    set_active_adapter,
    set_requires_grad,
    set_stacked_adapters,
)
from kroncl.config import PER_TASK_MODES


@dataclass
class AdapterSets:
    """Mode-specific bookkeeping of adapter sets. Serialisable through :meth:`state_dict`."""

    mode: str
    current: str | None = None
    """Adapter set trained by the running (or last) experience."""
    by_task: dict[int, str] = field(default_factory=dict)
    """Task label -> adapter set trained on it."""
    history: list[str] = field(default_factory=list)
    """Adapter set snapshot names in experience order (sequential repeats its one name)."""

    @property
    def per_task(self) -> bool:
        """A new set per experience (``per_task``, ``orthogonal``)."""
        return self.mode in PER_TASK_MODES

    @property
    def summed(self) -> bool:
        """Every trained set answers together (``orthogonal``): nothing is routed by task."""
        return self.mode == "orthogonal"

    @property
    def routes_by_task(self) -> bool:
        """Which set answers depends on the row's task (``per_task``)."""
        return self.per_task and not self.summed

    def name_for(self, experience: int) -> str:
        return f"task{experience}" if self.per_task else "stream"

    def inject(self, model: nn.Module, cfg: AdapterConfig) -> list[str]:
        """Inject the first experience's set into ``model`` and make it current.

        Returns:
            The replaced module paths (see :func:`kroncl.adapters.inject_adapters`).
        """
        name = self.name_for(0)
        replaced = inject_adapters(model, cfg, adapter_name=name)
        self.current = name
        return replaced

    def begin_experience(self, model: nn.Module, experience: int) -> str:
        """Create (per task) and activate the set that trains on ``experience``; freeze the rest."""
        name = self.name_for(experience)
        if name not in adapter_names(model):
            if self.current is None:
                raise RuntimeError(f"no adapter set to warm-start {name!r} from; inject first")
            # O-LoRA trains each task's set from scratch: a copy would start it inside the
            # earlier set's subspace, where the orthogonality penalty is at its maximum.
            add_adapter(model, name, init_from=None if self.summed else self.current)
        for other in adapter_names(model):
            set_requires_grad(model, other, other == name)
        set_active_adapter(model, name)
        self.current = name
        if self.summed:
            set_stacked_adapters(model, self.frozen_sets())
        return name

    def end_experience(self, task_label: int) -> None:
        assert self.current is not None
        self.by_task[task_label] = self.current
        self.history.append(self.current)

    def route(self, task_label: int) -> str:
        """Adapter set that answers for ``task_label``."""
        assert self.current is not None, "inject adapters before routing"
        if self.routes_by_task:
            return self.by_task.get(task_label, self.current)
        return self.current  # sequential: the one set; orthogonal: current + the stacked sets

    def answer_sets(self) -> list[str]:
        """Sets that may answer a row whose task is not known: one per trained task, in training
        order (before any training, the current set)."""
        assert self.current is not None, "inject adapters before routing"
        trained = list(dict.fromkeys(self.by_task.values()))
        return trained or [self.current]

    def frozen_sets(self) -> list[str]:
        """Sets trained on earlier experiences (the orthogonality penalty compares against them)."""
        return [n for n in dict.fromkeys(self.by_task.values()) if n != self.current]

    def state_dict(self) -> dict:
        return {
            "mode": self.mode,
            "current": self.current,
            "by_task": {str(k): v for k, v in self.by_task.items()},
            "history": list(self.history),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping) -> AdapterSets:
        return cls(
            mode=state["mode"],
            current=state["current"],
            by_task={int(k): v for k, v in state["by_task"].items()},
            history=list(state["history"]),
        )
