"""Reusing a loaded base model across compositions, restored to its pristine weights."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor

from kroncl.composition.merge import strip_adapters

if TYPE_CHECKING:
    from kroncl.models import ModelConfig, MultipleChoiceModel

__all__ = ["BaseModelCache"]


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
