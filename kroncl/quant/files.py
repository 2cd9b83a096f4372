"""Safetensors file helpers that turn low-level read failures into `QuantFormatError`.

The adapter file itself is owned by `kroncl.adapters.io`; these helpers give it (and the quant
benchmark) one place where a truncated or garbled file becomes an error naming the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from kroncl.errors import QuantFormatError
from kroncl.quant.tensors import dequantize_tensors

QUANT_META_KEY = "kroncl.quantization"
"""Safetensors header entry where `save_quantized` keeps the JSON metadata."""


def read_safetensors_with_metadata(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read every tensor and the header metadata of a safetensors file.

    Raises:
        QuantFormatError: the file is missing, unreadable, truncated or not safetensors; the
            message names the file and safetensors' reason.
    """
    p = Path(path)
    if not p.is_file():
        raise QuantFormatError(f"Safetensors file {str(p)!r} does not exist (or is not a file).")
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise QuantFormatError(
            f"Cannot read safetensors file {str(p)!r} ({p.stat().st_size} bytes): {err}. "
            f"The file is truncated or corrupt; re-export the adapter."
        ) from err
    return tensors, metadata


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read every tensor of a safetensors file (see `read_safetensors_with_metadata`)."""
    return read_safetensors_with_metadata(path)[0]


def save_quantized(
    path: str | os.PathLike[str], packed: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> Path:
    """Write `quantize_tensors` output to one safetensors file, metadata in its header.

    Returns:
        The path written.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in packed.items()}
    save_file(tensors, str(p), metadata={"format": "pt", QUANT_META_KEY: json.dumps(dict(meta))})
    return p


def load_quantized(
    path: str | os.PathLike[str], dtype: torch.dtype | None = torch.float32
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and dequantize a file written by `save_quantized`.

    Returns:
        ``(tensors, meta)``: dequantized tensors (see `dequantize_tensors`) and the metadata.

    Raises:
        QuantFormatError: unreadable file, no/garbled metadata header, or any
            `dequantize_tensors` error (prefixed with the file name).
    """
    packed, header = read_safetensors_with_metadata(path)
    if QUANT_META_KEY not in header:
        raise QuantFormatError(
            f"{str(path)!r} has no {QUANT_META_KEY!r} header entry; it was not written by "
            f"save_quantized (pass adapter_config.json's 'quantization' to dequantize_tensors)."
        )
    try:
        meta = json.loads(header[QUANT_META_KEY])
    except json.JSONDecodeError as err:
        raise QuantFormatError(
            f"{str(path)!r}: quantization header is not valid JSON: {err}"
        ) from err
    try:
        return dequantize_tensors(packed, meta, dtype), meta
    except QuantFormatError as err:
        raise QuantFormatError(f"{str(path)!r}: {err}") from err
