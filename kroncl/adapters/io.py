"""Adapter files: ``adapter.safetensors`` + ``adapter_config.json`` (format version 1).

The JSON holds everything needed to rebuild the adapter layers on the base model:

    {"format_version": 1, "method": "kron", "a_out": 2, "a_in": 2, "r": 8, "alpha": 16.0,
     "dropout": 0.0, "targets": [...], "head_targets": [...], "base_model": "<id or path>",
     "quantization": null | {<scheme dict from kroncl.quant>}, ...extra keys}

Tensor keys are "<module path>.<param>" as produced by ``inject.adapter_state_dict``. Both files
are written to a temporary name and moved into place with ``os.replace``, so a reader never sees
a half-written file. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from kroncl.adapters.config import AdapterConfig
from kroncl.errors import AdapterConfigError, AdapterLoadError
from kroncl.fileio import atomic_write

__all__ = ["FORMAT_VERSION", "WEIGHTS_NAME", "CONFIG_NAME", "LoadedAdapter", "save_adapter", "load_adapter"]

FORMAT_VERSION = 1
WEIGHTS_NAME = "adapter.safetensors"
CONFIG_NAME = "adapter_config.json"
_CORE_KEYS = {"format_version", "base_model", "quantization"}


@dataclass
class LoadedAdapter:
    """An adapter read from disk.

    Attributes:
        tensors: "<module path>.<param>" -> float tensor (dequantized when the file was quantized).
        config: the adapter hyper-parameters and targets.
        meta: the whole JSON document (format_version, base_model, quantization, extra keys).
    """

    tensors: dict[str, Tensor]
    config: AdapterConfig
    meta: dict[str, Any] = field(default_factory=dict)


def save_adapter(
    directory: str | os.PathLike,
    tensors: dict[str, Tensor],
    cfg: AdapterConfig,
    base_model: str,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write one adapter to ``directory`` (created if needed).

    Args:
        directory: output folder; existing adapter files in it are replaced atomically.
        tensors: adapter tensors (e.g. ``adapter_state_dict(model, name)``, or quantized ones).
        cfg: the adapter config the tensors belong to.
        base_model: id or path of the base model the adapter was trained on.
        extra: additional JSON-serialisable top-level keys. ``extra["quantization"]`` is how
            ``kroncl.quant`` marks a quantized file (the scheme dict passed back to
            ``kroncl.quant.dequantize_tensors`` on load); other core keys may not be overridden.

    Returns:
        The directory path.

    Raises:
        AdapterConfigError: invalid ``cfg`` or ``extra`` overriding a reserved key.
    """
    cfg.validate()
    extra = dict(extra or {})
    clash = sorted((set(extra) & (set(cfg.to_dict()) | _CORE_KEYS)) - {"quantization"})
    if clash:
        raise AdapterConfigError(f"save_adapter extra keys {clash} would override reserved adapter_config.json keys")
    doc: dict[str, Any] = {"format_version": FORMAT_VERSION, **cfg.to_dict(), "base_model": base_model}
    doc["quantization"] = extra.pop("quantization", None)
    doc.update(extra)
    text = json.dumps(doc, indent=2, sort_keys=True)

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(out / WEIGHTS_NAME, lambda p: save_file(flat, p, metadata={"format": "pt"}))
    atomic_write(out / CONFIG_NAME, lambda p: Path(p).write_text(text + "\n"))
    return out


def load_adapter(directory: str | os.PathLike, dtype: torch.dtype = torch.float32) -> LoadedAdapter:
    """Read an adapter folder written by :func:`save_adapter`.

    Args:
        directory: folder holding ``adapter.safetensors`` and ``adapter_config.json``.
        dtype: floating dtype of the returned tensors.

    Returns:
        ``LoadedAdapter``; quantized files are dequantized by ``kroncl.quant.dequantize_tensors``.

    Raises:
        AdapterLoadError: a file is missing or malformed, or the format version is newer than
            this code understands.
    """
    d = Path(directory)
    cfg_path, w_path = d / CONFIG_NAME, d / WEIGHTS_NAME
    missing = [p.name for p in (cfg_path, w_path) if not p.is_file()]
    if missing:
        raise AdapterLoadError(f"adapter folder {d} lacks {missing}; expected {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        meta = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterLoadError(f"{cfg_path} is not valid JSON: {e}") from e
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise AdapterLoadError(
            f"{cfg_path}: format_version={version!r} is not supported (this kroncl reads 1..{FORMAT_VERSION})"
        )
    cfg_keys = set(AdapterConfig.__dataclass_fields__)
    try:
        cfg = AdapterConfig.from_dict({k: v for k, v in meta.items() if k in cfg_keys})
    except (AdapterConfigError, TypeError) as e:
        raise AdapterLoadError(f"{cfg_path}: {e}") from e
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise AdapterLoadError(f"{w_path} is not a readable safetensors file: {e}") from e

    scheme = meta.get("quantization")
    if scheme is not None:
        from kroncl.quant import dequantize_tensors  # lazy: quant is optional for plain adapters

        tensors = dequantize_tensors(tensors, scheme, dtype)
    else:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    return LoadedAdapter(tensors=tensors, config=cfg, meta=meta)


def load_adapter_into(
    model: torch.nn.Module, directory: str | os.PathLike, name: str = "default", dtype: torch.dtype = torch.float32
) -> LoadedAdapter:
    """Load an adapter folder into ``model`` as set ``name`` (strictly) and return what was read.

    Injects the adapter layers first when ``model`` has none; otherwise adds set ``name`` to the
    existing layers (which must match the file's targets and shapes).

    Raises:
        AdapterLoadError: see :func:`load_adapter` and ``inject.load_adapter_state_dict``.
    """
    from kroncl.adapters.inject import adapter_layers, inject_adapters, load_adapter_state_dict

    loaded = load_adapter(directory, dtype=dtype)
    if not adapter_layers(model):
        inject_adapters(model, loaded.config, adapter_name=name)
    load_adapter_state_dict(model, loaded.tensors, name, strict=True)
    return loaded
