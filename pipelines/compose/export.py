"""``--export FORMAT DIR``: one composed adapter as a folder another tool loads.

    peft-lora   standard PEFT LoRA folder, exact (rank min(a_out, a_in)·r for Kron-LoRA):
                what vLLM's ``--lora-modules name=DIR`` and ``PeftModel.from_pretrained`` take;
                ``--max-rank N`` truncates by SVD for servers that cap the rank (lossy, reported)
    peft-lokr   PEFT LoKr folder (Kron-LoRA only, a_out == a_in)
    merged      plain Hugging Face model with the adapter folded in (what ``--merge --save`` writes)

Each format is written by the one function that already writes it
(:func:`kroncl.adapters.export_peft_lora`, :func:`kroncl.adapters.export_peft_lokr`,
:func:`save_composition`); this module only checks the request and picks the writer.

``--register-export NAME`` also stores a PEFT folder in the registry, as a version of adapter
NAME with an ``exported_from`` edge to its source and the tag ``export_format``. Such a version
is a file for PEFT / vLLM, not a kroncl adapter: composition never picks it for ``--task`` and
refuses it by ref, naming the source to compose instead (``select.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import json
import math
from collections.abc import Sequence

from safetensors import safe_open

from kroncl.adapters import export_peft_lokr, export_peft_lora
from kroncl.adapters.peft_interop import PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME, check_export_dir
from kroncl.composition import ComposeError
from pipelines.compose.build import Composition
from pipelines.compose.save import save_composition
from pipelines.compose.select import EXPORT_TAG
from registry import EXPORTED_FROM, AdapterVersion, RegistryStore

__all__ = ["EXPORT_FORMATS", "check_export_request", "export_composition", "register_export"]

EXPORT_FORMATS = ("peft-lora", "peft-lokr", "merged")


def check_export_request(fmt: str, directory: str | Path, *, n_versions: int, merge: bool,
                         max_rank: int | None, register_as: str | None = None,
                         sources: Sequence[AdapterVersion] = ()) -> None:
    """Refuse an export that cannot be written, before any model is built.

    Raises:
        ComposeError: unknown format, several adapters for a PEFT folder (it holds one),
            ``--merge`` with a PEFT format, ``--max-rank`` with anything but peft-lora,
            ``--register-export`` of a merged model or under a source's own adapter name.
        AdapterConfigError: ``directory`` is a file or a non-empty folder.
    """
    if fmt not in EXPORT_FORMATS:
        raise ComposeError(f"--export {fmt!r} is not a format; choose one of {list(EXPORT_FORMATS)}")
    if fmt != "merged" and n_versions != 1:
        raise ComposeError(f"--export {fmt} writes one adapter, but {n_versions} versions were chosen; "
                           "export one REF (or one --task) at a time")
    if fmt != "merged" and merge:
        raise ComposeError(f"--export {fmt} writes the adapter for the unmerged base model; drop --merge "
                           "(or use --export merged for a model with the adapter folded in)")
    if max_rank is not None and fmt != "peft-lora":
        raise ComposeError(f"--max-rank caps the rank of a peft-lora export; it does not apply to --export {fmt}")
    if register_as is not None and fmt == "merged":
        raise ComposeError("--register-export stores a PEFT adapter folder; a merged model is not an adapter "
                           "(drop --register-export, or export peft-lora)")
    if register_as is not None and register_as in {v.adapter for v in sources}:
        raise ComposeError(f"--register-export {register_as!r} is the source's own adapter: the export would become "
                           "its latest version; give the export another adapter name, e.g. "
                           f"{register_as}-{fmt.replace('peft-', '')}")
    check_export_dir(directory)


def export_composition(composition: Composition, fmt: str, directory: str | Path,
                       max_rank: int | None = None) -> dict[str, Any]:
    """Write ``composition`` in format ``fmt`` to ``directory`` (see the module docstring).

    Returns:
        The summary's ``export`` entry: format, path, source version and, for peft-lora, the
        rank a server must allow (``max_lora_rank``) and the per-layer truncation error.
    """
    composed = composition.composed
    source = composition.versions[0]
    entry: dict[str, Any] = {"format": fmt, "path": str(Path(directory)), "exported_from": source.ref}
    if fmt == "merged":
        if not composed.merged:
            raise ComposeError("--export merged needs a merged composition (the CLI merges for it)")
        entry["path"] = str(save_composition(composition, directory))
        return entry
    backbone, set_name = composed.model.backbone, composed.sets[source.task]
    name_or_path = composition.model_config.resolved().name_or_path or composition.base_model
    if fmt == "peft-lokr":
        export_peft_lokr(backbone, set_name, directory, base_model_name_or_path=name_or_path)
        return entry
    report = export_peft_lora(backbone, set_name, directory, base_model_name_or_path=name_or_path,
                              max_rank=max_rank)
    entry.update(max_lora_rank=report.max_rank, max_rel_error=report.max_error, mean_rel_error=report.mean_error,
                 layers=len(report.ranks), heads=report.heads)
    return entry


def register_export(store: RegistryStore, source: AdapterVersion, entry: dict[str, Any], name: str) -> AdapterVersion:
    """Register the PEFT folder of ``entry`` as the next version of adapter ``name``.

    Same task and base model as ``source``; lineage ``exported_from`` ``source``; tags
    ``export_format`` (the format) and ``exported_from`` (the source ref).

    Raises:
        Conflict: adapter ``name`` exists for another task or base model.
    """
    folder = Path(entry["path"])
    doc = json.loads((folder / PEFT_CONFIG_NAME).read_text())
    with safe_open(str(folder / PEFT_WEIGHTS_NAME), framework="pt") as f:  # shapes only, no tensor read
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    lora = entry["format"] == "peft-lora"
    store.register_adapter(name, task=source.task, base_model=source.base_model)
    return store.register_version(
        name, folder, method=entry["format"].replace("-", "_"), bits=32,
        a_out=None if lora else source.a_out, a_in=None if lora else source.a_in,
        r=int(doc["r"]), alpha=float(doc["lora_alpha"] if lora else doc["alpha"]), param_count=params,
        files=[PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME],
        config={"export": entry, "peft_config": doc},
        tags={EXPORT_TAG: entry["format"], EXPORTED_FROM: source.ref},
        parents=[(source.ref, EXPORTED_FROM)],
    )

