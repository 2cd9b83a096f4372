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
  adapter. A sum of Kronecker products is not one Kronecker product of the same shape, so the
  result is stored exactly, as a plain LoRA adapter whose rank is the concatenation of the
  sources' factors (see :func:`kron_as_lora`)::

      ΔW_i = s_i · A_i ⊗ (B1_i B2_i) = s_i · (A_i ⊗ B1_i)(I ⊗ B2_i)      (a_in <= a_out)
      Σ_i w_i ΔW_i = [w_1 s_1 U_1 | w_2 s_2 U_2 | ...] · [D_1; D_2; ...] = B · A

  with ``alpha = r`` (scale 1). ``method="lora"`` is what ``inject_adapters`` and
  ``load_adapter`` already understand, so the result round-trips through adapter files and the
  registry and composes back like any other adapter. Its rank is ``Σ_i min(a_out, a_in)·r_i``
  (``r_i`` for LoRA sources): 32 for two MiniLM Kron-LoRA adapters with 2×2 factors and r=8,
  ~6x smaller than a dense ΔW of a 384×384 layer. Dense head deltas (``DenseDeltaLinear``)
  are summed directly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from kroncl.adapters import (
    AdapterConfig,
    LoadedAdapter,
    adapter_layers,
    adapter_names,
    inject_adapters,
    load_adapter_state_dict,
    merge_adapter,
    set_active_adapter,
    unmerge_adapters,
)
from kroncl.errors import KronclError
from kroncl.adapters.routing import routed_forward

if TYPE_CHECKING:
    from kroncl.data.example import MCExample
    from kroncl.models import ModelConfig, MultipleChoiceModel

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

# Config fields that must agree for adapters to share adapter layers (dropout only matters
# while training).
_LAYOUT_FIELDS = ("method", "a_out", "a_in", "r", "alpha", "targets", "head_targets")


class ComposeError(KronclError, ValueError):
    """Adapters cannot be composed as asked; the message names the adapters and what differs."""


def set_name_for(task: str) -> str:
    """Adapter-set name of a task: module names may not contain '.', registry names may.

    >>> set_name_for("arc_easy"), set_name_for("data.v2")
    ('arc_easy', 'data_v2')
    """
    return task.replace(".", "_")


def layer_tensors(tensors: Mapping[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """Group adapter tensors "<module path>.<param>" by module path.

    >>> import torch
    >>> sorted(layer_tensors({"a.q.A": torch.zeros(1), "a.q.B": torch.zeros(1), "h.weight": torch.zeros(1)}))
    ['a.q', 'h']
    """
    out: dict[str, dict[str, Tensor]] = {}
    for key, t in tensors.items():
        path, _, local = key.rpartition(".")
        out.setdefault(path, {})[local] = t
    return out


def _layout(cfg: AdapterConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    return {k: d[k] for k in _LAYOUT_FIELDS}


def _is_head(local: Mapping[str, Tensor]) -> bool:
    return set(local) == {"weight", "bias"}


def check_compatible(adapters: Mapping[str, LoadedAdapter], *, resident: bool) -> None:
    """Check that ``adapters`` can be composed on one base model.

    Args:
        adapters: label (task or version ref, used in messages) -> adapter.
        resident: True when they will live side by side as adapter sets of the same layers:
            then method, factor shapes, rank, alpha and targets must be identical. False for
            :func:`weighted_sum`, which only needs the same base model and the same adapted
            layers (it may mix Kron-LoRA and LoRA, or different ranks).

    Raises:
        ComposeError: no adapters, or every difference found (one line each).
    """
    if not adapters:
        raise ComposeError("nothing to compose: pass at least one adapter")
    items = list(adapters.items())
    first_label, first = items[0]
    problems: list[str] = []
    base0 = first.meta.get("base_model")
    layers0 = {p: _is_head(t) for p, t in layer_tensors(first.tensors).items()}
    for label, ad in items[1:]:
        base = ad.meta.get("base_model")
        if base != base0:
            problems.append(
                f"{label!r} was trained on base model {base!r} but {first_label!r} on {base0!r}"
            )
        if resident:
            a, b = _layout(first.config), _layout(ad.config)
            diff = {k: (a[k], b[k]) for k in _LAYOUT_FIELDS if a[k] != b[k]}
            if "method" in diff:
                problems.append(
                    f"{label!r} is a {b['method']!r} adapter but {first_label!r} is {a['method']!r}: "
                    "resident adapter sets share one layer type, so methods cannot be mixed; "
                    "compose them separately, or combine them with weights (task arithmetic)"
                )
            elif diff:
                shown = ", ".join(f"{k}: {v[1]!r} vs {v[0]!r}" for k, v in diff.items())
                problems.append(
                    f"{label!r} has a different adapter layout than {first_label!r} ({shown}); "
                    "resident adapter sets must share method, factor shapes, r, alpha and targets"
                )
        layers = {p: _is_head(t) for p, t in layer_tensors(ad.tensors).items()}
        if layers != layers0:
            only_a = sorted(set(layers0) - set(layers))[:5]
            only_b = sorted(set(layers) - set(layers0))[:5]
            problems.append(
                f"{label!r} adapts other layers than {first_label!r} "
                f"(only in {first_label!r}: {only_a}; only in {label!r}: {only_b})"
            )
    if problems:
        raise ComposeError("cannot compose these adapters:\n  " + "\n  ".join(problems))


# ------------------------------------------------------------------------------------------------
# The composed model
# ------------------------------------------------------------------------------------------------


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
        """(B, C) choice scores; with several sets each row goes through its task's set.

        Raises:
            ComposeError: several sets and the batch has no ``task_labels``, or a label that
                names no composed task.
        """
        if not self.multi:
            return self.model(batch)
        task_ids = batch.get("task_labels")
        if task_ids is None:
            raise ComposeError(
                f"this model holds {len(self.tasks)} adapter sets and routes by task: give the batch "
                f"'task_labels' ({self._known()})"
            )
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


def _replace_adapter_layers(model: nn.Module) -> None:
    for path, layer in list(adapter_layers(model).items()):
        parent_path, _, child = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, child, layer.base_layer)


def strip_adapters(model: MultipleChoiceModel) -> MultipleChoiceModel:
    """Remove every adapter layer in place, restoring the base weights bit for bit.

    Merged sets are unmerged first (exact restore); each ``AdapterLinear`` is replaced by the
    ``nn.Linear`` it wraps. Returns ``model``.
    """
    if adapter_layers(model.backbone):
        unmerge_adapters(model.backbone)
        _replace_adapter_layers(model.backbone)
    return model


def bake_merged(composed: ComposedModel) -> MultipleChoiceModel:
    """Replace every adapter layer by its (merged) plain ``nn.Linear``, in place.

    The result is an ordinary Hugging Face model (``save_pretrained`` writes the merged
    weights); the composition's other sets are dropped with the wrappers.

    Raises:
        ComposeError: the composition is not merged.
    """
    if not composed.merged:
        raise ComposeError("bake_merged needs a merged composition; call composed.merge() first")
    _replace_adapter_layers(composed.model.backbone)
    return composed.model


# ------------------------------------------------------------------------------------------------
# Task arithmetic
# ------------------------------------------------------------------------------------------------


def kron_as_lora(A: Tensor, B1: Tensor, B2: Tensor) -> tuple[Tensor, Tensor]:
    """Exact low-rank factors of a Kronecker update: ``up @ down == kron(A, B1 @ B2)``.

    Uses ``(A ⊗ B1)(I ⊗ B2) = A ⊗ (B1 B2)`` when ``a_in <= a_out`` and
    ``(I ⊗ B1)(A ⊗ B2)`` otherwise, so the inner dimension is ``min(a_out, a_in) · r``.

    Args:
        A: (a_out, a_in); B1: (b_out, r); B2: (r, b_in).

    Returns:
        ``up`` (a_out·b_out, k) and ``down`` (k, a_in·b_in), ``k = min(a_out, a_in)·r``.

    >>> g = torch.Generator().manual_seed(0)
    >>> A, B1, B2 = torch.randn(3, 2, generator=g), torch.randn(4, 2, generator=g), torch.randn(2, 5, generator=g)
    >>> up, down = kron_as_lora(A, B1, B2)
    >>> up.shape, down.shape, torch.allclose(up @ down, torch.kron(A, B1 @ B2), atol=1e-5)
    (torch.Size([12, 4]), torch.Size([4, 10]), True)
    """
    a_out, a_in = A.shape
    if a_in <= a_out:
        eye = torch.eye(a_in, dtype=B2.dtype, device=B2.device)
        return torch.kron(A, B1), torch.kron(eye, B2)  # (a_out b_out, a_in r), (a_in r, a_in b_in)
    eye = torch.eye(a_out, dtype=B1.dtype, device=B1.device)
    return torch.kron(eye, B1), torch.kron(A, B2)  # (a_out b_out, a_out r), (a_out r, a_in b_in)


def lowrank_terms(adapter: LoadedAdapter) -> dict[str, tuple[Tensor, Tensor]]:
    """Each adapted layer's update as scaled low-rank factors ``(up, down)``, ΔW = up @ down.

    Head layers (dense ΔW and Δbias) are returned as ``(weight, bias)`` under their path too;
    tell them apart with :func:`layer_tensors` (``{"weight", "bias"}``).

    Raises:
        ComposeError: a layer's tensors match neither Kron-LoRA, LoRA nor a dense head.
    """
    cfg = adapter.config
    scale = cfg.alpha / cfg.r
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for path, t in layer_tensors(adapter.tensors).items():
        keys = set(t)
        if keys == {"weight", "bias"}:
            out[path] = (t["weight"], t["bias"])
        elif keys == {"A", "B1", "B2"}:
            up, down = kron_as_lora(t["A"], t["B1"], t["B2"])
            out[path] = (up * scale, down)
        elif keys == {"A", "B"}:
            out[path] = (t["B"] * scale, t["A"])
        else:
            raise ComposeError(
                f"layer {path!r} has adapter tensors {sorted(keys)}: expected Kron-LoRA (A, B1, B2), "
                "LoRA (A, B) or a dense head (weight, bias)"
            )
    return out


def weighted_sum(
    adapters: Sequence[LoadedAdapter], weights: Sequence[float]
) -> tuple[dict[str, Tensor], AdapterConfig]:
    """Task arithmetic: one adapter whose update is ``Σ_i weights[i] · ΔW_i`` on every layer.

    Exact up to float rounding (see the module docstring): low-rank layers become a LoRA
    update of rank ``Σ_i k_i`` by concatenating the sources' factors, dense head deltas and
    biases are summed.

    Args:
        adapters: at least one adapter on the same base model, adapting the same layers.
        weights: one finite weight per adapter (``(1, 0)`` reproduces the first adapter).

    Returns:
        ``(tensors, config)`` ready for :func:`kroncl.adapters.save_adapter`: a ``"lora"``
        adapter with ``alpha == r`` (scale 1) and the first adapter's targets.

    Raises:
        ComposeError: weights do not match the adapters, are not finite, or the adapters do
            not fit together (:func:`check_compatible` with ``resident=False``).
    """
    weights = [float(w) for w in weights]
    if len(weights) != len(adapters):
        raise ComposeError(
            f"got {len(weights)} weights {weights} for {len(adapters)} adapters; give one weight per adapter"
        )
    if not all(torch.isfinite(torch.tensor(w)) for w in weights):
        raise ComposeError(f"weights {weights} must all be finite numbers")
    check_compatible({f"adapter {i}": a for i, a in enumerate(adapters)}, resident=False)
    terms = [lowrank_terms(a) for a in adapters]
    heads = {p for p, t in layer_tensors(adapters[0].tensors).items() if _is_head(t)}
    tensors: dict[str, Tensor] = {}
    rank: int | None = None
    for path in terms[0]:
        if path in heads:
            tensors[f"{path}.weight"] = sum(w * t[path][0] for w, t in zip(weights, terms))  # (d_out, d_in)
            tensors[f"{path}.bias"] = sum(w * t[path][1] for w, t in zip(weights, terms))  # (d_out,)
            continue
        up = torch.cat([w * t[path][0] for w, t in zip(weights, terms)], dim=1)  # (d_out, R)
        down = torch.cat([t[path][1] for t in terms], dim=0)  # (R, d_in)
        assert rank is None or rank == up.shape[1], "per-adapter inner dims are uniform across layers"
        rank = up.shape[1]
        tensors[f"{path}.B"] = up.contiguous()
        tensors[f"{path}.A"] = down.contiguous()
    if rank is None:
        raise ComposeError("the adapters hold only head deltas; task arithmetic needs adapted body layers")
    first = adapters[0].config
    cfg = AdapterConfig(method="lora", a_out=1, a_in=1, r=rank, alpha=float(rank), dropout=0.0,
                        targets=list(first.targets), head_targets=list(first.head_targets)).validate()
    return tensors, cfg


# ------------------------------------------------------------------------------------------------
# Scoring a task's examples
# ------------------------------------------------------------------------------------------------


def score_examples(
    composed: ComposedModel, examples: Sequence[MCExample], task: str | None = None, batch_size: int = 64,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """Score ``examples`` of one task with the composed model.

    Args:
        composed: the composed model.
        examples: rows of one task.
        task: the rows' task; required when several sets are resident (it picks the set).
        batch_size: rows per forward.
        progress: show a progress bar.

    Returns:
        ``(predictions, labels)``, both (N,) long.

    Raises:
        ComposeError: several sets are resident and ``task`` is None or not composed.
    """
    if composed.multi and task is None:
        raise ComposeError(f"name the examples' task: this model routes between {composed.tasks}")
    label = composed.label(task) if composed.multi else 0
    model = composed.model
    preds, labels = [], []
    starts = range(0, len(examples), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"scoring {task or 'examples'}", unit="batch", leave=False)
    for start in starts:
        feats = [{**model.encode(ex), "task_labels": label} for ex in examples[start:start + batch_size]]
        batch = model.collate(feats)
        preds.append(composed(batch).argmax(dim=-1))
        labels.append(batch["labels"])
    if not preds:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(preds), torch.cat(labels)


def accuracy(
    composed: ComposedModel, examples: Sequence[MCExample], task: str | None = None, batch_size: int = 64,
    progress: bool = False,
) -> float:
    """Share of ``examples`` whose best-scoring choice is the right one (NaN for no rows)."""
    preds, labels = score_examples(composed, examples, task, batch_size, progress)
    return float("nan") if labels.numel() == 0 else (preds == labels).float().mean().item()


# ------------------------------------------------------------------------------------------------
# Reusing a loaded base model
# ------------------------------------------------------------------------------------------------


@dataclass
class BaseModelCache:
    """Builds each base model once and hands the same object out again, restored.

    Loading a base model (reading ~90 MB of MiniLM weights, building the HF module tree) is
    usually the slowest step of a composition. :meth:`get` returns the cached model with every
    adapter layer removed and the weights copied back from a pristine snapshot, so whatever
    the previous composition did (merge, bake) cannot leak into the next one. A model from
    :meth:`get` is valid until the next :meth:`get` of the same config.

    Attributes:
        memo: free slot for facts about a pristine base model that callers want to compute
            once (e.g. its content hash), keyed by the caller.
    """

    models: dict[str, tuple[MultipleChoiceModel, dict[str, Tensor]]] = field(default_factory=dict)
    memo: dict[Any, Any] = field(default_factory=dict)

    @staticmethod
    def key(cfg: ModelConfig) -> str:
        """Cache key of a model config (its fields as sorted JSON)."""
        return json.dumps(asdict(cfg), sort_keys=True, default=str)

    def get(self, cfg: ModelConfig) -> tuple[MultipleChoiceModel, bool]:
        """The base model of ``cfg`` and whether it came from the cache.

        Raises:
            ModelConfigError, ModelLoadError: see :func:`kroncl.models.build_model`.
        """
        from kroncl.models import build_model

        key = self.key(cfg)
        if key in self.models:
            model, pristine = self.models[key]
            strip_adapters(model)
            model.backbone.load_state_dict(pristine, strict=True)
            return model.eval(), True
        model = build_model(cfg)
        pristine = {k: v.detach().clone() for k, v in model.backbone.state_dict().items()}
        self.models[key] = (model, pristine)
        return model, False

    def clear(self) -> None:
        """Drop every cached model and the memo (memo keys may name models by ``id``)."""
        self.models.clear()
        self.memo.clear()
