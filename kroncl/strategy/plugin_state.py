"""Cross-experience plugin state in checkpoints: JSON + flat tensors, nothing pickled.

A run killed between experiences must resume with every plugin's memory (replay buffer, EWC
importances, LwF teacher), or the resumed run silently trains a different model. The contract:

- a plugin (or, for avalanche's ``ReplayPlugin``, its ``storage_policy``) with state that lives
  across experiences implements::

      checkpoint_state(self) -> tuple[dict, dict[str, torch.Tensor]]
      restore_checkpoint_state(self, state: dict, tensors: dict[str, torch.Tensor], *,
                               strategy, train_stream) -> None

  ``state`` must survive ``json.dumps``/``json.loads``; ``tensors`` is flat (safetensors).
  ``train_stream`` is the benchmark's train stream (``train_stream[e].dataset``), ``strategy``
  the resumed strategy (its model already holds the checkpoint's adapter sets);
- the pipeline calls :func:`plugins_checkpoint_state` when it checkpoints and
  :func:`restore_plugins_state` when it resumes. Both namespace by plugin class name: JSON
  ``{"DictEWCPlugin": {...}}``, tensor keys ``"DictEWCPlugin/importance/0/<param name>"``.

Plugins without the contract are stateless across experiences and skipped, except avalanche's
own stateful plugins, which are refused (their state could not be restored).

Also here: :class:`SeededReplayBuffer`, the replay storage whose state is a few row indices,
and the tensor codecs the EWC and LwF plugins of :mod:`kroncl.strategy.plugins` use.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch
from avalanche.benchmarks.utils.utils import concat_datasets
from avalanche.training.plugins import EWCPlugin, LwFPlugin, ReplayPlugin
from avalanche.training.storage_policy import ExemplarsBuffer
from avalanche.training.utils import ParamData

from kroncl.adapters import (
    adapter_layers,
    adapter_names,
    adapter_parameters,
    adapter_state_dict,
    add_adapter,
    delete_adapter,
    load_adapter_state_dict,
    set_active_adapter,
)
from kroncl.strategy.checkpoint import CheckpointError
from kroncl.strategy.template import experience_seed

SEP = "/"
_AVALANCHE_STATEFUL = (ReplayPlugin, LwFPlugin, EWCPlugin)


# ---- the contract and the two pipeline entry points ------------------------------------------
def implements_contract(obj) -> bool:
    """Looked up on the class: a catch-all ``__getattr__`` (test spies) is not a contract."""
    return all(callable(getattr(type(obj), m, None))
               for m in ("checkpoint_state", "restore_checkpoint_state"))


def _stateful(plugin):
    """The object holding ``plugin``'s cross-experience state, or None when it has none."""
    if implements_contract(plugin):
        return plugin
    storage = plugin.__dict__.get("storage_policy") if hasattr(plugin, "__dict__") else None
    if storage is not None and implements_contract(storage):
        return storage
    if isinstance(plugin, _AVALANCHE_STATEFUL):
        raise CheckpointError(
            f"plugin {type(plugin).__name__} keeps state across experiences but cannot be "
            "checkpointed; build it with kroncl.strategy.plugins.build_plugins"
        )
    return None


def _named_stateful(plugins: Iterable) -> dict[str, object]:
    """Class name (or the class's ``checkpoint_name``) -> state holder; two stateful plugins of
    one class would share a namespace."""
    named: dict[str, object] = {}
    for plugin in plugins:
        holder = _stateful(plugin)
        if holder is None:
            continue
        name = getattr(type(plugin), "checkpoint_name", type(plugin).__name__)
        if name in named:
            raise CheckpointError(f"two {name} plugins: their checkpoint states would collide")
        named[name] = holder
    return named


def plugins_checkpoint_state(plugins: Iterable) -> tuple[dict, dict[str, torch.Tensor]]:
    """JSON state and flat tensors of every stateful plugin, namespaced by class name."""
    state: dict = {}
    tensors: dict[str, torch.Tensor] = {}
    for name, holder in _named_stateful(plugins).items():
        part, part_tensors = holder.checkpoint_state()
        state[name] = part
        for key, t in part_tensors.items():
            tensors[f"{name}{SEP}{key}"] = t.detach().cpu().contiguous()
    return state, tensors


def restore_plugins_state(plugins: Iterable, state: Mapping, tensors: Mapping[str, torch.Tensor],
                          *, strategy, train_stream) -> None:
    """Give every stateful plugin back what :func:`plugins_checkpoint_state` took.

    Raises:
        CheckpointError: a stateful plugin has no state in the checkpoint (it was written
            without plugin state, or with other plugins).
    """
    for name, holder in _named_stateful(plugins).items():
        if name not in state:
            raise CheckpointError(
                f"the checkpoint has no state for plugin {name} (it has: {sorted(state) or 'none'}); "
                "it was written by a run with other plugins or without plugin state — "
                "start a new run instead of resuming"
            )
        prefix = f"{name}{SEP}"
        own = {k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)}
        holder.restore_checkpoint_state(dict(state[name]), own, strategy=strategy,
                                        train_stream=train_stream)


def require_tensor(tensors: Mapping[str, torch.Tensor], key: str, owner: str) -> torch.Tensor:
    """``tensors[key]``, or a CheckpointError naming the plugin and the key."""
    if key not in tensors:
        raise CheckpointError(f"checkpoint state of {owner} lacks tensor {key!r}; it is incomplete")
    return tensors[key]


# ---- replay -------------------------------------------------------------------------------
class SeededReplayBuffer(ExemplarsBuffer):
    """Experience-balanced reservoir of row indices, seeded per experience.

    Every row of experience ``e`` gets a weight from a ``torch.Generator`` seeded with
    ``experience_seed(seed, e)`` (the global RNG is neither read nor advanced, so replay cannot
    shift data order or dropout); each of the ``n`` experiences seen keeps its
    ``max_size // n`` highest-weight rows (the remainder stays unused, so every experience
    weighs the same). Its checkpoint state is those row indices (and their
    weights, for later shrinking), not the examples. ``seed=None`` takes the strategy's seed.
    """

    def __init__(self, max_size: int, seed: int | None = None) -> None:
        super().__init__(max_size)
        self.seed = seed
        self.kept: dict[int, torch.Tensor] = {}
        """Experience -> kept row indices, highest weight first."""
        self.weights: dict[int, torch.Tensor] = {}
        """Experience -> weights of the kept rows (descending)."""
        self._datasets: dict[int, object] = {}

    def row_weights(self, experience: int, n_rows: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(experience_seed(seed, experience))
        return torch.rand(n_rows, generator=generator)

    def post_adapt(self, agent_state, exp) -> None:
        e = int(exp.current_experience)
        seed = self.seed if self.seed is not None else int(getattr(agent_state, "seed", 0))
        weights, order = self.row_weights(e, len(exp.dataset), seed).sort(descending=True)
        self.kept[e], self.weights[e], self._datasets[e] = order, weights, exp.dataset
        self._rebalance()

    def _rebalance(self) -> None:
        per = self.max_size // max(1, len(self.kept))
        for e in self.kept:
            self.kept[e], self.weights[e] = self.kept[e][:per], self.weights[e][:per]
        self._rebuild()

    def _rebuild(self) -> None:
        parts = [self._datasets[e].subset(self.kept[e].tolist()) for e in sorted(self.kept)]
        self.buffer = concat_datasets(parts)

    def resize(self, strategy, new_size: int) -> None:
        self.max_size = new_size
        self._rebalance()

    def checkpoint_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        state = {"max_size": self.max_size,
                 "kept": {str(e): idx.tolist() for e, idx in sorted(self.kept.items())}}
        return state, {f"weights{SEP}{e}": w.clone() for e, w in self.weights.items()}

    def restore_checkpoint_state(self, state, tensors, *, strategy, train_stream) -> None:
        if int(state["max_size"]) != self.max_size:
            raise CheckpointError(
                f"replay buffer was checkpointed with max_size={state['max_size']}, this run has "
                f"{self.max_size}; resume with strategy.replay_mem_size={state['max_size']}"
            )
        self.kept, self.weights, self._datasets = {}, {}, {}
        for key, rows in state["kept"].items():
            e = int(key)
            dataset = train_stream[e].dataset
            if rows and max(rows) >= len(dataset):
                raise CheckpointError(
                    f"replay buffer keeps row {max(rows)} of experience {e}, whose training set "
                    f"has {len(dataset)} rows: the checkpoint belongs to other data"
                )
            self.kept[e] = torch.tensor(rows, dtype=torch.long)
            self.weights[e] = require_tensor(tensors, f"weights{SEP}{e}", "replay buffer").clone()
            self._datasets[e] = dataset
        self._rebuild()


# ---- EWC: ParamData dicts <-> flat tensors ----------------------------------------------------
def param_dicts_to_state(kind: str, dicts: Mapping[int, Mapping[str, ParamData]]):
    """{exp: {name: ParamData}} -> (JSON {exp: [names in order]}, tensors "<kind>/<exp>/<name>")."""
    names = {str(e): list(d) for e, d in sorted(dicts.items())}
    tensors = {f"{kind}{SEP}{e}{SEP}{k}": p.data.detach().clone()
               for e, d in dicts.items() for k, p in d.items()}
    return names, tensors


def param_dicts_from_state(kind: str, names: Mapping[str, list[str]], tensors, device, owner: str):
    """Inverse of :func:`param_dicts_to_state`: ParamData on ``device``, original key order."""
    out: dict[int, dict[str, ParamData]] = {}
    for e, keys in names.items():
        out[int(e)] = {}
        for k in keys:
            t = require_tensor(tensors, f"{kind}{SEP}{e}{SEP}{k}", owner).to(device).clone()
            out[int(e)][k] = ParamData(k, t.shape, device=device, init_tensor=t)
    return out


# ---- LwF: the teacher as adapter tensors + flags -------------------------------------------------
def teacher_state(teacher: torch.nn.Module) -> tuple[dict, dict[str, torch.Tensor]]:
    """The teacher's adapter sets and flags; its frozen base equals the resumed model's."""
    backbone = teacher.backbone
    sets = adapter_names(backbone)
    trainable = [n for n in sets if any(p.requires_grad for p in adapter_parameters(backbone, n).values())]
    layers = list(adapter_layers(backbone).values())
    state = {
        "sets": sets,
        "trainable": trainable,
        "active": layers[0].active_adapter if layers else None,
        "training": teacher.training,
        "training_differs": [n for n, m in teacher.named_modules() if m.training != teacher.training],
    }
    tensors = {f"{n}{SEP}{k}": t for n in sets for k, t in adapter_state_dict(backbone, n).items()}
    return state, tensors


def rebuild_teacher(model: torch.nn.Module, state: Mapping, tensors, device) -> torch.nn.Module:
    """``deepcopy(model)`` holding exactly the teacher's adapter sets, values and flags."""
    teacher = copy.deepcopy(model).to(device)
    backbone = teacher.backbone
    for name in state["sets"]:
        prefix = f"{name}{SEP}"
        own = {k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)}
        if not own:
            raise CheckpointError(f"checkpoint state of the LwF teacher lacks adapter set {name!r}")
        if name not in adapter_names(backbone):
            add_adapter(backbone, name)
        load_adapter_state_dict(backbone, own, name)
    for name in adapter_names(backbone):
        if name not in state["sets"]:
            delete_adapter(backbone, name)
    for p in teacher.parameters():
        p.requires_grad_(False)
    for name in state["trainable"]:
        for p in adapter_parameters(backbone, name).values():
            p.requires_grad_(True)
    set_active_adapter(backbone, state["active"])
    differs = set(state["training_differs"])
    for name, m in teacher.named_modules():
        m.training = state["training"] != (name in differs)
    return teacher
