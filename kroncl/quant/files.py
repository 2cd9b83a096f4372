"""Quantized adapter folders: the one adapter file format, with a ``quantization`` entry.

A quantized adapter is an ordinary adapter folder (``kroncl.adapters.io``):
``adapter.safetensors`` holds the packed tensors (``"<key>.qweight"`` / ``"<key>.scales"``)
and ``adapter_config.json`` holds, under ``"quantization"``, the metadata ``quantize_tensors``
returned. The folder integrity (symlinks, JSON, format version, sha256 of the weights) is
checked by ``kroncl.adapters.io.read_adapter``; this module dequantizes and then applies the
same tensor checks as a plain load (finite values, shapes that follow from the config).

``kroncl.adapters`` never imports this package: its ``load_adapter`` refuses a quantized folder
and names :func:`load_adapter_dequantized`, which reads plain and quantized folders alike.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from kroncl.adapters.config import AdapterConfig
from kroncl.adapters.io import (
    CONFIG_NAME,
    LoadedAdapter,
    attach_adapter,
    checked_adapter,
    read_adapter,
    save_adapter,
)
from kroncl.errors import AdapterConfigError, QuantFormatError
from kroncl.quant.scheme import QuantScheme
from kroncl.quant.tensors import dequantize_tensors

__all__ = ["save_quantized_adapter", "load_adapter_dequantized", "load_adapter_dequantized_into"]


def save_quantized_adapter(
    directory: str | os.PathLike,
    packed: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    cfg: AdapterConfig,
    base_model: str,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``quantize_tensors`` output as an adapter folder (``kroncl.adapters.save_adapter``).

    Args:
        directory: output folder.
        packed, meta: what ``quantize_tensors(tensors, scheme)`` returned.
        cfg: the adapter config the (unquantized) tensors belong to.
        base_model: id or path of the base model.
        extra: further JSON keys (task, experience, ...); not ``"quantization"``.

    Returns:
        The directory path.

    Raises:
        QuantFormatError: ``meta`` is not quantization metadata (see ``QuantScheme.from_meta``).
        AdapterConfigError: see ``save_adapter``; ``extra`` holds ``"quantization"``.
    """
    QuantScheme.from_meta(dict(meta))  # refuse metadata the loader could not read back
    extra = dict(extra or {})
    if "quantization" in extra:
        raise AdapterConfigError("save_quantized_adapter takes the quantization metadata as meta, not in extra")
    return save_adapter(directory, dict(packed), cfg, base_model, extra={**extra, "quantization": dict(meta)})


def load_adapter_dequantized(directory: str | os.PathLike, dtype: torch.dtype = torch.float32) -> LoadedAdapter:
    """Read any adapter folder, dequantizing it when its config has a ``quantization`` entry.

    A plain folder loads exactly as with ``kroncl.adapters.load_adapter``. A quantized one is
    read as stored (``read_adapter``: file checks, sha256), dequantized with
    :func:`~kroncl.quant.tensors.dequantize_tensors`, and its float tensors then pass the same
    checks as a plain load (finite, shapes from the config). ``meta["quantization"]`` keeps the
    scheme.

    Args:
        directory: the adapter folder.
        dtype: floating dtype of the returned tensors.

    Raises:
        AdapterLoadError: see ``kroncl.adapters.io.read_adapter`` / ``checked_adapter``
            (a non-finite value is reported after dequantizing).
        QuantFormatError: the packed tensors do not match the quantization metadata; the
            message names the folder's config file.
    """
    stored = read_adapter(directory)
    meta = stored.meta.get("quantization")
    if meta is None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in stored.tensors.items()}
    else:
        try:
            tensors = dequantize_tensors(stored.tensors, meta, dtype)
        except QuantFormatError as err:
            raise QuantFormatError(f"{Path(directory) / CONFIG_NAME}: {err}") from err
    return checked_adapter(stored, tensors, directory)


def load_adapter_dequantized_into(
    model: torch.nn.Module, directory: str | os.PathLike, name: str = "default", dtype: torch.dtype = torch.float32
) -> LoadedAdapter:
    """:func:`load_adapter_dequantized` then ``kroncl.adapters.attach_adapter`` as set ``name``.

    Injects the adapter layers first when ``model`` has none (see ``attach_adapter``).

    Raises:
        AdapterLoadError, QuantFormatError: see :func:`load_adapter_dequantized` and
            ``kroncl.adapters.load_adapter_state_dict``.
    """
    return attach_adapter(model, load_adapter_dequantized(directory, dtype=dtype), name, source=directory)
