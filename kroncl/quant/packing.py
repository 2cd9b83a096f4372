"""Two 4-bit codes per byte.

Layout: code ``i`` of the flat sequence goes to byte ``i // 2``; even ``i`` in the low nibble,
odd ``i`` in the high nibble. An odd count is padded with one zero nibble, so ``n`` codes take
``ceil(n / 2)`` bytes.
"""

from __future__ import annotations

import torch


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Pack 4-bit codes two per byte.

    Args:
        values: uint8 tensor (any shape, read flattened) with every value in 0..15.

    Returns:
        1-D uint8 tensor of ``ceil(values.numel() / 2)`` bytes.

    Raises:
        ValueError: ``values`` is not uint8 or holds a value above 15.
    """
    if values.dtype != torch.uint8:
        raise ValueError(f"pack_int4 expects uint8 codes in 0..15, got dtype {values.dtype}.")
    flat = values.reshape(-1)
    if flat.numel() and int(flat.max()) > 15:
        raise ValueError(f"pack_int4 expects codes in 0..15, got a value of {int(flat.max())}.")
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    pairs = flat.view(-1, 2)  # (n/2, 2): (low, high)
    return pairs[:, 0] | (pairs[:, 1] << 4)


def unpack_int4(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of `pack_int4`.

    Args:
        packed: 1-D uint8 tensor from `pack_int4`.
        numel: how many codes were packed (drops the padding nibble of an odd count).

    Returns:
        1-D uint8 tensor of ``numel`` codes in 0..15.

    Raises:
        ValueError: ``packed`` is not uint8 or does not hold exactly ``ceil(numel / 2)`` bytes.
    """
    if packed.dtype != torch.uint8:
        raise ValueError(f"unpack_int4 expects uint8 bytes, got dtype {packed.dtype}.")
    expected = (numel + 1) // 2
    if packed.numel() != expected:
        raise ValueError(
            f"unpack_int4: {numel} codes need {expected} bytes, got {packed.numel()} bytes."
        )
    flat = packed.reshape(-1)
    codes = torch.stack([flat & 0x0F, flat >> 4], dim=1).reshape(-1)  # (2 * bytes,)
    return codes[:numel]
