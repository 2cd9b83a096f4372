"""Composing a ready model from trained adapters: one task, several resident tasks, or a sum.

Library parts only. Every function takes a :class:`~kroncl.models.MultipleChoiceModel` and
adapters already read (``kroncl.quant.load_adapter_dequantized``: plain or quantized folders); finding versions in the registry,
fetching and checking their artifacts is ``pipelines.compose``'s job.

Three ways to compose:

* **one adapter** -- :func:`attach_adapters` with one entry: the set is active; ``merge()``
  folds ΔW into the base weights (``merge_adapter``), so a forward costs what the base costs.
* **several resident adapters** -- one adapter set per task, side by side in every adapted
  layer; :class:`ComposedModel` routes each row of a batch to its task's set by the batch's
  ``task_labels`` (``kroncl.adapters.routing.routed_forward``). Label ``i`` is the ``i``-th
  task passed in.
* **task arithmetic** -- :func:`weighted_sum` builds ``ΔW = Σ_i w_i ΔW_i`` per layer as one new
  adapter, stored exactly as a plain LoRA adapter of the sources' concatenated factors (the
  derivation is in :mod:`kroncl.composition.arithmetic`).

Modules:

* :mod:`~kroncl.composition.compatible` -- ``ComposeError``, set names, which adapters fit together
* :mod:`~kroncl.composition.attach` -- ``attach_adapters``, ``ComposedModel`` (route, merge)
* :mod:`~kroncl.composition.merge` -- ``strip_adapters`` (exact unmerge), ``bake_merged``
* :mod:`~kroncl.composition.arithmetic` -- ``kron_as_lora``, ``lowrank_terms``, ``weighted_sum`` (pure)
* :mod:`~kroncl.composition.score` -- ``score_examples``, ``accuracy``
* :mod:`~kroncl.composition.cache` -- ``BaseModelCache``
"""

from __future__ import annotations

from kroncl.composition.arithmetic import kron_as_lora, lowrank_terms, weighted_sum
from kroncl.composition.attach import ComposedModel, attach_adapters
from kroncl.composition.cache import BaseModelCache
from kroncl.composition.compatible import ComposeError, check_compatible, layer_tensors, set_name_for
from kroncl.composition.merge import bake_merged, strip_adapters
from kroncl.composition.score import accuracy, score_examples

__all__ = [
    "ComposeError",
    "ComposedModel",
    "BaseModelCache",
    "set_name_for",
    "layer_tensors",
    "check_compatible",
    "attach_adapters",
    "strip_adapters",
    "bake_merged",
    "kron_as_lora",
    "lowrank_terms",
    "weighted_sum",
    "score_examples",
    "accuracy",
]
