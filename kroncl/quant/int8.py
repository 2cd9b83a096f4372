"""Symmetric int8 with one absmax scale per output row.

``scale[r] = max_j |x[r, j]| / 127``, ``q = clamp(round(x / scale), -127, 127)``, so every
element is reconstructed within ``scale[r] / 2``. Rows are ``x.shape[0]`` with the remaining
dimensions flattened (for an ``nn.Linear`` weight or LoRA factor that is one scale per output
feature); a 1-D tensor (or a scalar) is a single row.
"""

from __future__ import annotations

import torch

from kroncl.quant.inputs import checked_float32, numel_of
from kroncl.quant.scales import storage_scales

INT8_QMAX = 127


def as_rows(shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
    """(rows, cols) that `quantize_int8_rows` uses for a tensor of ``shape``."""
    shape = tuple(shape)
    if len(shape) <= 1:
        return 1, (shape[0] if shape else 1)
    cols = 1
    for d in shape[1:]:
        cols *= d
    return shape[0], cols


def quantize_int8_rows(
    x: torch.Tensor, scale_dtype: torch.dtype = torch.bfloat16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``x`` to int8 with one symmetric absmax scale per row.

    Args:
        x: floating tensor (float32/float16/bfloat16/float64), any shape; see `as_rows`.
        scale_dtype: scale storage dtype, bfloat16/float16/float32 (float16 falls back to
            float32 per tensor, see `kroncl.quant.scales`).

    Returns:
        ``(q, scales)``: ``q`` int8 of shape ``as_rows(x.shape)`` with values in -127..127,
        ``scales`` of shape ``(rows,)``. An all-zero row has scale 0 and codes 0.

    Raises:
        QuantizationError: ``x`` is not floating point or holds NaN/inf.
    """
    x32 = checked_float32(x)
    rows, cols = as_rows(x.shape)
    x2 = x32.reshape(rows, cols)  # (rows, cols)
    absmax = x2.abs().amax(dim=1) if cols else x2.new_zeros(rows)  # (rows,)
    scales = storage_scales(absmax / INT8_QMAX, scale_dtype)
    s = scales.to(torch.float32)
    # Zero rows: divide by 1 instead of 0; their codes are 0 either way.
    divisor = torch.where(s > 0, s, torch.ones_like(s)).unsqueeze(1)  # (rows, 1)
    q = torch.clamp(torch.round(x2 / divisor), -INT8_QMAX, INT8_QMAX).to(torch.int8)
    return q, scales


def dequantize_int8_rows(
    q: torch.Tensor,
    scales: torch.Tensor,
    shape: torch.Size | tuple[int, ...] | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Reconstruct ``q * scale`` per row.

    Args:
        q: int8 codes of shape (rows, cols).
        scales: float scales of shape (rows,).
        shape: shape to return (the original tensor's); defaults to ``q.shape``.
        dtype: output dtype (computed in float32, then cast).

    Returns:
        Tensor of ``shape`` and ``dtype``.

    Raises:
        ValueError: ``q`` is not 2-D int8, or ``scales`` does not have one entry per row, or
            ``shape`` does not hold ``q.numel()`` elements.
    """
    if q.dtype != torch.int8 or q.dim() != 2:
        raise ValueError(
            f"dequantize_int8_rows expects 2-D int8 codes, got {q.dtype} of shape "
            f"{tuple(q.shape)}."
        )
    if scales.dim() != 1 or scales.numel() != q.shape[0]:
        raise ValueError(
            f"dequantize_int8_rows: {q.shape[0]} rows need {q.shape[0]} scales, "
            f"got scales of shape {tuple(scales.shape)}."
        )
    out = q.to(torch.float32) * scales.to(torch.float32).unsqueeze(1)  # (rows, cols)
    target = tuple(q.shape) if shape is None else tuple(shape)
    if out.numel() != numel_of(target):
        raise ValueError(f"dequantize_int8_rows: {out.numel()} values do not fill shape {target}.")
    return out.reshape(target).to(dtype)

