"""``--export FORMAT DIR``: one composed adapter as a folder another tool loads.

    peft-lora   standard PEFT LoRA folder, exact (rank min(a_out, a_in)·r for Kron-LoRA):
                what vLLM's ``--lora-modules name=DIR`` and ``PeftModel.from_pretrained`` take;
                ``--max-rank N`` truncates by SVD for servers that cap the rank (lossy, reported)
    peft-lokr   PEFT LoKr folder (Kron-LoRA only, a_out == a_in)
    merged      plain Hugging Face model with the adapter folded in (what ``--merge --save`` writes)

Each format is written by the one function that already writes it
(:func:`kroncl.adapters.export_peft_lora`, :func:`kroncl.adapters.export_peft_lokr`,
:func:`save_composition`); this module only checks the request and picks the writer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kroncl.adapters import export_peft_lokr, export_peft_lora
from kroncl.adapters.peft_interop import check_export_dir
from kroncl.composition import ComposeError
from pipelines.compose.build import Composition
from pipelines.compose.save import save_composition

__all__ = ["EXPORT_FORMATS", "check_export_request", "export_composition"]

EXPORT_FORMATS = ("peft-lora", "peft-lokr", "merged")


def check_export_request(fmt: str, directory: str | Path, *, n_versions: int, merge: bool,
                         max_rank: int | None) -> None:
    """Refuse an export that cannot be written, before any model is built.

    Raises:
        ComposeError: unknown format, several adapters for a PEFT folder (it holds one),
            ``--merge`` with a PEFT format, ``--max-rank`` with anything but peft-lora.
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
