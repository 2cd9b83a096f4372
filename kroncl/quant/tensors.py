"""Quantize / dequantize a whole adapter state dict.

Stored layout (one safetensors file): for every adapter tensor ``<key>`` (e.g.
``"encoder.layer.0.attention.self.query.B1"``) two entries,

- ``"<key>.qweight"``: int8 of shape (rows, cols) for "int8"; 1-D uint8 packed 4-bit codes for
  "int4"/"nf4";
- ``"<key>.scales"``: 1-D scales, bfloat16 by default (float16 or float32 on request; see
  `kroncl.quant.scales`),

except a tensor with fewer values than the scheme's ``keep_below``, stored unquantized as one
entry ``"<key>.kept"`` (bfloat16, its own shape) and listed under the metadata's ``"kept"``;

and a JSON-able metadata dict for ``adapter_config.json["quantization"]``: the scheme
(`QuantScheme.to_meta`) plus ``"shapes"`` (key -> original shape) and ``"dtypes"`` (key ->
original dtype name).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from kroncl.errors import QuantFormatError, QuantizationError
from kroncl.quant.blockwise4 import dequantize_blockwise_4bit, num_blocks, quantize_blockwise_4bit
from kroncl.quant.inputs import numel_of
from kroncl.quant.int8 import as_rows, dequantize_int8_rows, quantize_int8_rows
from kroncl.quant.scales import STORED_SCALE_DTYPES
from kroncl.quant.scheme import KEPT_DTYPE, QuantScheme

QWEIGHT_SUFFIX = ".qweight"
SCALES_SUFFIX = ".scales"
KEPT_SUFFIX = ".kept"

_DTYPES_BY_NAME: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def dtype_name(dtype: torch.dtype) -> str:
    """"float32" for torch.float32 etc."""
    return str(dtype).removeprefix("torch.")


def artifact_bytes(tensors: Mapping[str, torch.Tensor]) -> int:
    """Bytes of tensor data: sum of ``numel * element_size`` (packed codes and scales alike).

    Excludes the safetensors header and the JSON metadata, which are the same order of size
    for every scheme.
    """
    return sum(t.numel() * t.element_size() for t in tensors.values())


def quantize_tensors(
    tensors: Mapping[str, torch.Tensor], scheme: QuantScheme | str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Quantize every tensor of an adapter state dict.

    Args:
        tensors: key -> floating tensor (any shape; 1-D tensors are one row for int8).
        scheme: a `QuantScheme` or its name ("int8", "int4", "nf4").

    Returns:
        ``(packed, meta)``: the tensors to store (two per input key, see module docstring) and
        the JSON-able metadata for ``adapter_config.json["quantization"]``.

    Raises:
        QuantizationError: scheme "none"/unknown, an input is not floating point or holds
            NaN/inf (the message names the key).
    """
    scheme = _as_scheme(scheme)
    packed: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    dtypes: dict[str, str] = {}
    kept: list[str] = []
    for key in sorted(tensors):
        x = tensors[key]
        shapes[key] = list(x.shape)
        dtypes[key] = dtype_name(x.dtype)
        if x.numel() < scheme.keep_below:
            packed[key + KEPT_SUFFIX] = x.detach().to(getattr(torch, KEPT_DTYPE)).contiguous()
            kept.append(key)
            continue
        try:
            if scheme.kind == "int8":
                q, scales = quantize_int8_rows(x, scheme.torch_scale_dtype)
            else:
                q, scales = quantize_blockwise_4bit(
                    x, scheme.block_size, scheme.kind, scheme.torch_scale_dtype
                )
        except QuantizationError as err:
            raise QuantizationError(f"Adapter tensor {key!r}: {err}") from err
        packed[key + QWEIGHT_SUFFIX] = q
        packed[key + SCALES_SUFFIX] = scales
    meta = scheme.to_meta()
    meta["shapes"] = shapes
    meta["dtypes"] = dtypes
    meta["kept"] = kept
    return packed, meta


def dequantize_tensors(
    packed: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    dtype: torch.dtype | None = torch.float32,
) -> dict[str, torch.Tensor]:
    """Rebuild float tensors from stored quantized tensors.

    Args:
        packed: the tensors written by `quantize_tensors` (e.g. read from safetensors).
        meta: the metadata returned by `quantize_tensors` (e.g. read back from JSON).
        dtype: output dtype; None restores each tensor's recorded original dtype.

    Returns:
        key -> tensor of the recorded shape.

    Raises:
        QuantFormatError: unsupported metadata, missing or unexpected keys (all listed at once),
            wrong dtypes, truncated or over-long data, shape mismatch, or non-finite/negative
            scales; the message names the key.
    """
    scheme = QuantScheme.from_meta(dict(meta))
    shapes = _read_shapes(meta)
    kept = _read_kept(meta, shapes)
    expected = {k + KEPT_SUFFIX for k in kept} | {
        k + sfx for k in shapes if k not in kept for sfx in (QWEIGHT_SUFFIX, SCALES_SUFFIX)}
    missing = sorted(expected - set(packed))
    unexpected = sorted(set(packed) - expected)
    if missing or unexpected:
        raise QuantFormatError(
            f"Quantized tensors do not match the metadata ({scheme.kind}, {len(shapes)} "
            f"tensors): missing keys {missing}, unexpected keys {unexpected}."
        )
    recorded = meta.get("dtypes") or {}
    out: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        target_dtype = dtype if dtype is not None else _recorded_dtype(recorded, key)
        if key in kept:
            out[key] = _read_kept_tensor(key, packed[key + KEPT_SUFFIX], shape).to(target_dtype)
            continue
        q, scales = packed[key + QWEIGHT_SUFFIX], packed[key + SCALES_SUFFIX]
        _check_scales(key, scales)
        try:
            if scheme.kind == "int8":
                _check_int8_codes(key, q, shape)
                out[key] = dequantize_int8_rows(q, scales, shape, target_dtype)
            else:
                _check_4bit_codes(key, q, shape, scales, scheme.block_size)
                out[key] = dequantize_blockwise_4bit(
                    q, scales, shape, scheme.block_size, scheme.kind, target_dtype
                )
        except ValueError as err:
            if isinstance(err, QuantFormatError):
                raise
            raise QuantFormatError(f"Quantized tensor {key!r}: {err}") from err
    return out


def _as_scheme(scheme: QuantScheme | str) -> QuantScheme:
    if isinstance(scheme, QuantScheme):
        return scheme
    resolved = QuantScheme.from_name(scheme) if isinstance(scheme, str) else None
    if resolved is None:
        raise QuantizationError(
            f"quantize_tensors needs a quantization scheme ('int8', 'int4', 'nf4' or a "
            f"QuantScheme), got {scheme!r}; skip quantization instead of passing 'none'."
        )
    return resolved


def _read_shapes(meta: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    shapes = meta.get("shapes")
    if not isinstance(shapes, Mapping):
        raise QuantFormatError(f"Quantization metadata needs a 'shapes' object, got {shapes!r}.")
    result: dict[str, tuple[int, ...]] = {}
    for key, shape in shapes.items():
        if not isinstance(shape, (list, tuple)) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise QuantFormatError(
                f"Quantization metadata: shape of {key!r} must be a list of non-negative "
                f"integers, got {shape!r}."
            )
        result[key] = tuple(shape)
    return result


def _read_kept(meta: Mapping[str, Any], shapes: Mapping[str, Any]) -> set[str]:
    kept = meta.get("kept", [])  # absent in files written before keep_below existed
    if not isinstance(kept, list) or not all(isinstance(k, str) and k in shapes for k in kept):
        raise QuantFormatError(
            f"Quantization metadata: 'kept' must list keys of 'shapes', got {kept!r}."
        )
    return set(kept)


def _read_kept_tensor(key: str, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    if x.dtype != getattr(torch, KEPT_DTYPE) or tuple(x.shape) != shape:
        raise QuantFormatError(
            f"{key + KEPT_SUFFIX!r} has dtype {x.dtype} and shape {tuple(x.shape)}; a kept tensor "
            f"is stored as {KEPT_DTYPE} of its recorded shape {list(shape)}."
        )
    return x


def _recorded_dtype(recorded: Mapping[str, Any], key: str) -> torch.dtype:
    name = recorded.get(key, "float32")
    if name not in _DTYPES_BY_NAME:
        raise QuantFormatError(
            f"Quantization metadata: dtype of {key!r} is {name!r}; expected one of "
            f"{sorted(_DTYPES_BY_NAME)}."
        )
    return _DTYPES_BY_NAME[name]


def _check_scales(key: str, scales: torch.Tensor) -> None:
    if scales.dtype not in STORED_SCALE_DTYPES:
        raise QuantFormatError(
            f"{key + SCALES_SUFFIX!r} has dtype {scales.dtype}; scales are stored as one of "
            f"{[dtype_name(d) for d in STORED_SCALE_DTYPES]}."
        )
    if scales.dim() != 1:
        raise QuantFormatError(
            f"{key + SCALES_SUFFIX!r} must be 1-D, got shape {tuple(scales.shape)}."
        )
    if not bool(torch.isfinite(scales).all()) or bool((scales < 0).any()):
        raise QuantFormatError(
            f"{key + SCALES_SUFFIX!r} holds negative or non-finite scales; the file is corrupt."
        )


def _check_int8_codes(key: str, q: torch.Tensor, shape: tuple[int, ...]) -> None:
    if q.dtype != torch.int8:
        raise QuantFormatError(
            f"{key + QWEIGHT_SUFFIX!r} has dtype {q.dtype}; int8 scheme stores int8."
        )
    expected = as_rows(shape)
    if tuple(q.shape) != expected:
        raise QuantFormatError(
            f"{key + QWEIGHT_SUFFIX!r} has shape {tuple(q.shape)}, but a tensor of shape "
            f"{list(shape)} is stored as {expected} (truncated or mismatched data)."
        )


def _check_4bit_codes(
    key: str, q: torch.Tensor, shape: tuple[int, ...], scales: torch.Tensor, block_size: int
) -> None:
    if q.dtype != torch.uint8:
        raise QuantFormatError(
            f"{key + QWEIGHT_SUFFIX!r} has dtype {q.dtype}; 4-bit schemes store packed uint8."
        )
    n = numel_of(shape)
    if q.dim() != 1 or q.numel() != (n + 1) // 2:
        raise QuantFormatError(
            f"{key + QWEIGHT_SUFFIX!r} has shape {tuple(q.shape)}, but {n} elements of shape "
            f"{list(shape)} pack into ({(n + 1) // 2},) bytes (truncated or mismatched data)."
        )
    if scales.numel() != num_blocks(n, block_size):
        raise QuantFormatError(
            f"{key + SCALES_SUFFIX!r} has {scales.numel()} scales, but {n} elements in blocks of "
            f"{block_size} need {num_blocks(n, block_size)} (truncated or mismatched data)."
        )
