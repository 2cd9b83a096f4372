"""Input checks shared by the quantizers."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from kroncl.errors import QuantizationError


def checked_float32(x: torch.Tensor, name: str = "tensor") -> torch.Tensor:
    """Detached float32 CPU copy of ``x``.

    Raises:
        QuantizationError: ``x`` is not floating point or holds NaN/inf (quantizing those
            would silently store garbage scales).
    """
    if not isinstance(x, torch.Tensor):
        raise QuantizationError(f"Can only quantize torch tensors; {name} is a {type(x).__name__}.")
    if not torch.is_floating_point(x):
        raise QuantizationError(
            f"Only floating-point tensors can be quantized; {name} has dtype {x.dtype}."
        )
    x32 = x.detach().to(device="cpu", dtype=torch.float32)
    finite = torch.isfinite(x32)
    if not finite.all():
        raise QuantizationError(
            f"Cannot quantize {name}: it holds {int((~finite).sum())} NaN/inf value(s); "
            f"fix the weights first."
        )
    return x32


def numel_of(shape: Iterable[int]) -> int:
    """Number of elements of a tensor of ``shape`` (1 for a scalar)."""
    n = 1
    for d in shape:
        n *= int(d)
    return n
