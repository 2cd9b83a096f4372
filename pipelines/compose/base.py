"""Which base model the chosen versions need: rebuilt from their stored run config, then verified.

The base model is rebuilt from ``config.run.model`` of the versions (what ``kroncl.run``
stores) unless ``--model`` / ``--model-opt`` say otherwise (:func:`model_node_for`), and its
content hash must equal the registered base-model revision (:func:`verify_base`): an
encoder's classifier head is newly initialised by ``model.seed``, so the same checkpoint
with another seed is another base model, and adapters trained on one would silently score
garbage on the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kroncl.composition import BaseModelCache, ComposeError
from pipelines.registration import base_model_identity
from registry import AdapterVersion, RegistryStore

__all__ = ["check_one_base", "model_node_for", "verify_base"]


def check_one_base(versions: Sequence[AdapterVersion]) -> str:
    """The one registry base model of ``versions``.

    Raises:
        ComposeError: the versions were trained on different base models (each listed).
    """
    bases = {v.base_model for v in versions}
    if len(bases) != 1:
        listed = ", ".join(f"{v.ref} on {v.base_model!r}" for v in versions)
        raise ComposeError(f"these versions were trained on different base models ({listed}); "
                           "adapters compose only on the base model they were trained on")
    return bases.pop()


def model_node_for(
    versions: Sequence[AdapterVersion], model: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``model`` config node that rebuilds the versions' base model.

    Args:
        versions: versions whose ``config.run.model`` (written by ``kroncl.run``) is used.
        model: a model name (preset / tiny / custom) replacing the stored node.
        overrides: ``model.<key>`` values applied last (``--model-opt seed=1``).

    Raises:
        ComposeError: no node stored and no ``model`` given, or the versions store different
            nodes (the differing keys are listed).
    """
    if model is not None:
        node: dict[str, Any] = {"name": model}
    else:
        nodes = {v.ref: (v.config.get("run") or {}).get("model") for v in versions}
        missing = [r for r, n in nodes.items() if not n]
        if missing:
            raise ComposeError(f"version(s) {missing} store no base-model config (config.run.model); "
                               "name the base model with --model NAME (and --model-opt KEY=VALUE)")
        first_ref, node = next(iter(nodes.items()))
        for ref, other in nodes.items():
            diff = sorted(k for k in set(node) | set(other) if node.get(k) != other.get(k))
            if diff:
                raise ComposeError(
                    f"{ref} and {first_ref} were trained with different model configs (keys {diff}); "
                    "choose one with --model NAME / --model-opt KEY=VALUE"
                )
        node = dict(node)
    node.update(overrides or {})
    return node


def verify_base(
    model, store: RegistryStore, base_model: str, cache: BaseModelCache | None = None
) -> tuple[str | None, bool]:
    """Compare the attached model's base weights with the registered base-model revision.

    Must run after the adapters are attached (the registered hash is taken over the model
    with its adapter layers injected, as ``kroncl.run`` registers it) and before merging.

    Returns:
        ``(registered revision, verified)``; ``verified`` is False only when the registry
        pins no revision.

    Raises:
        ComposeError: the hashes differ (names both and what to change).
    """
    revision = store.get_base_model(base_model).revision
    if revision is None:
        return None, False
    key = ("identity", id(model), tuple(sorted(n for n, _ in model.backbone.named_modules())))
    if cache is not None and key in cache.memo:
        name, actual = cache.memo[key]
    else:
        name, actual = base_model_identity(model)
        if cache is not None:
            cache.memo[key] = (name, actual)
    if actual != revision:
        raise ComposeError(
            f"the rebuilt base model ({name}, weights hash {actual}) is not the registered base model "
            f"{base_model!r} (revision {revision}) the adapters were trained on. A different model.seed "
            "re-initialises the classifier head, another checkpoint has other weights: use the training "
            "run's model config (drop --model/--model-opt overrides, or set them to the run's values)"
        )
    return revision, True
