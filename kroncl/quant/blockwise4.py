"""Block-wise absmax 4-bit quantization: symmetric "int4" and QLoRA's "nf4".

The tensor is flattened and cut into blocks of ``block_size`` elements (the last block may be
short; it is treated as if zero-padded). Each block has one absmax scale; each element becomes a
4-bit code, packed two per byte (`kroncl.quant.packing`). A value is reconstructed as
``codebook[code] * scale``:

- "int4": ``scale = absmax / 7``, code ``c`` means the integer ``c - 8`` (levels -7..7, code 0
  is never written), so every element is within ``scale / 2`` of its input.
- "nf4": ``scale = absmax``, code ``c`` means ``NF4_CODEBOOK[c]`` (16 normal-distribution
  quantiles in [-1, 1], Dettmers et al. 2023, "QLoRA", sec. 3); each element snaps to the
  nearest level, so it is within ``scale * max_gap / 2`` (max_gap ~ 0.304, between -1 and the
  next level).

Bytes: ``ceil(n / 2)`` packed + ``ceil(n / block_size)`` scales.
"""

from __future__ import annotations

import math

import torch

from kroncl.quant.inputs import checked_float32, numel_of
from kroncl.quant.packing import pack_int4, unpack_int4
from kroncl.quant.scales import storage_scales

INT4_QMAX = 7
INT4_ZERO_CODE = 8  # code of the value 0 for "int4"

# NormalFloat-4 levels as published with QLoRA (bitsandbytes `create_normal_map(0.9677083)`);
# tests rebuild them from scipy's normal quantiles.
NF4_CODEBOOK: tuple[float, ...] = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)
NF4_ZERO_CODE = 7

CODEBOOKS: tuple[str, ...] = ("int4", "nf4")


def codebook_values(codebook: str) -> torch.Tensor:
    """Float32 tensor of the 16 values that codes 0..15 stand for (before scaling).

    Raises:
        ValueError: unknown codebook name.
    """
    if codebook == "int4":
        return torch.arange(16, dtype=torch.float32) - INT4_ZERO_CODE
    if codebook == "nf4":
        return torch.tensor(NF4_CODEBOOK, dtype=torch.float32)
    raise ValueError(f"Unknown 4-bit codebook {codebook!r}; use one of {list(CODEBOOKS)}.")


def num_blocks(numel: int, block_size: int) -> int:
    """Number of scales a tensor of ``numel`` elements gets."""
    return math.ceil(numel / block_size)


def quantize_blockwise_4bit(
    x: torch.Tensor,
    block_size: int = 64,
    codebook: str = "int4",
    scale_dtype: torch.dtype = torch.bfloat16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``x`` (flattened) to 4-bit codes with one absmax scale per block.

    Args:
        x: floating tensor (float32/float16/bfloat16/float64) of any shape.
        block_size: elements per scale (positive integer).
        codebook: "int4" or "nf4".
        scale_dtype: scale storage dtype, bfloat16/float16/float32 (float16 falls back to
            float32 per tensor, see `kroncl.quant.scales`).

    Returns:
        ``(packed, scales)``: 1-D uint8 of ``ceil(n / 2)`` bytes and 1-D scales of
        ``ceil(n / block_size)`` entries. An all-zero block has scale 0 and decodes to zeros.

    Raises:
        QuantizationError: ``x`` is not floating point or holds NaN/inf.
        ValueError: bad ``block_size`` or ``codebook``.
    """
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}.")
    levels = codebook_values(codebook)
    flat = checked_float32(x).reshape(-1)  # (n,)
    n = flat.numel()
    nb = num_blocks(n, block_size)
    blocks = torch.cat([flat, flat.new_zeros(nb * block_size - n)]).view(nb, block_size)  # (nb, bs)
    absmax = blocks.abs().amax(dim=1) if nb else blocks.new_zeros(0)  # (nb,)
    qmax = INT4_QMAX if codebook == "int4" else 1.0
    scales = storage_scales(absmax / qmax, scale_dtype)
    s = scales.to(torch.float32)
    # Zero blocks: divide by 1 instead of 0; they encode as the zero code either way.
    normed = blocks / torch.where(s > 0, s, torch.ones_like(s)).unsqueeze(1)  # (nb, bs)
    if codebook == "int4":
        codes = torch.clamp(torch.round(normed), -INT4_QMAX, INT4_QMAX) + INT4_ZERO_CODE
    else:
        midpoints = (levels[1:] + levels[:-1]) / 2  # (15,)
        codes = torch.bucketize(normed.contiguous(), midpoints)
    codes = codes.to(torch.uint8).reshape(-1)[:n]  # (n,)
    return pack_int4(codes), scales


def dequantize_blockwise_4bit(
    packed: torch.Tensor,
    scales: torch.Tensor,
    shape: torch.Size | tuple[int, ...],
    block_size: int = 64,
    codebook: str = "int4",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Reconstruct a tensor from `quantize_blockwise_4bit` output.

    Args:
        packed: 1-D uint8 bytes (``ceil(n / 2)`` of them, n = elements of ``shape``).
        scales: 1-D float scales, ``ceil(n / block_size)`` of them.
        shape: the original tensor's shape.
        block_size: the block size used to quantize.
        codebook: "int4" or "nf4".
        dtype: output dtype (computed in float32, then cast).

    Returns:
        Tensor of ``shape`` and ``dtype``.

    Raises:
        ValueError: wrong byte or scale count for ``shape``, or an "int4" code of 0 (never
            written, so the bytes are corrupt).
    """
    levels = codebook_values(codebook)
    target = tuple(int(d) for d in shape)
    n = numel_of(target)
    nb = num_blocks(n, block_size)
    if scales.dim() != 1 or scales.numel() != nb:
        raise ValueError(
            f"{n} elements in blocks of {block_size} need {nb} scales, got scales of shape "
            f"{tuple(scales.shape)}."
        )
    codes = unpack_int4(packed, n).to(torch.int64)  # (n,)
    if codebook == "int4" and bool((codes == 0).any()):
        raise ValueError("int4 code 0 found; this code is never written, so the data is corrupt.")
    pad_code = INT4_ZERO_CODE if codebook == "int4" else NF4_ZERO_CODE
    codes = torch.cat([codes, codes.new_full((nb * block_size - n,), pad_code)])
    values = levels[codes].view(nb, block_size) * scales.to(torch.float32).unsqueeze(1)  # (nb, bs)
    return values.reshape(-1)[:n].reshape(target).to(dtype)
