"""Writing a composition to a folder: a plain HF model (merged) or adapter sets, with a manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kroncl.adapters import adapter_state_dict, save_adapter
from kroncl.composition import bake_merged
from pipelines.compose.build import Composition

__all__ = ["save_composition"]


def save_composition(composition: Composition, directory: str | Path) -> Path:
    """Write the composed model to ``directory`` with a ``compose.json`` manifest.

    Merged: the adapter layers are baked into plain linear layers and the Hugging Face model
    and tokenizer are saved under ``model/`` (load it with ``model=custom``, its
    ``model_config`` in the manifest; no adapter code needed). Not merged: each adapter set is
    saved under ``adapters/<set>/`` in the adapter file format. Baking is in place: do this last.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    composed = composition.composed
    manifest: dict[str, Any] = {
        "base_model": composition.base_model, "revision": composition.revision,
        "sources": [v.ref for v in composition.versions], **composed.describe(),
    }
    cfg = composition.model_config.resolved()
    if composed.merged:
        model = bake_merged(composed)
        model.backbone.save_pretrained(out / "model")
        model.tokenizer.save_pretrained(out / "model")
        manifest["model_config"] = {"name": "custom", "kind": cfg.kind, "name_or_path": str((out / "model").resolve()),
                                    "max_length": cfg.max_length, "dtype": cfg.dtype,
                                    "length_normalize": cfg.length_normalize, "prompt_template": cfg.prompt_template}
    else:
        for v in composition.versions:
            set_name = composed.sets[v.task]
            loaded = composition.loaded[v.task]
            save_adapter(out / "adapters" / set_name, adapter_state_dict(composed.model.backbone, set_name),
                         loaded.config, base_model=composition.base_model,
                         extra={"task": v.task, "source": v.ref})
        manifest["model_config"] = {k: v for k, v in vars(composition.model_config).items()}
    (out / "compose.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return out
