"""Taking adapter layers off a composed model again: exactly (strip) or merged in (bake).

:meth:`~kroncl.composition.attach.ComposedModel.merge` folds one set into the base weights;
:func:`strip_adapters` undoes any merge and removes the wrappers, restoring the base weights
bit for bit; :func:`bake_merged` keeps the merged weights as plain ``nn.Linear`` layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from kroncl.adapters import adapter_layers, unmerge_adapters
from kroncl.composition.compatible import ComposeError

if TYPE_CHECKING:
    from kroncl.composition.attach import ComposedModel
    from kroncl.models import MultipleChoiceModel

__all__ = ["strip_adapters", "bake_merged"]


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
