"""Choosing the storage dtype of quantization scales.

Default "bfloat16": 2 bytes per scale, float32's exponent range (no overflow on outliers, no
underflow on nearly-zero factors such as a freshly trained zero-init B), and 8 significant bits,
so a stored scale is within 2**-8 relative of absmax / qmax. The codes are computed with the
*stored* scale, and since 127 / (1 - 2**-8) = 127.498 < 127.5 (and 7 / (1 - 2**-8) < 7.5) no
element needs clamping: every element is reconstructed within ``stored_scale / 2``.

"float16" keeps 11 significant bits but only in its normal range [2**-14, 65504]; a tensor with
any nonzero scale outside it (huge outlier, tiny weights) is stored with float32 scales instead,
so the artifact never holds inf or precision-starved subnormal scales. "float32" is exact.
"""

from __future__ import annotations

import torch

FP16_MIN_NORMAL = 2.0**-14
FP16_MAX = 65504.0

STORED_SCALE_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def storage_scales(scales: torch.Tensor, preferred: torch.dtype) -> torch.Tensor:
    """Cast float32 scales to the dtype they will be stored in.

    Args:
        scales: non-negative finite float32 scales, any shape.
        preferred: torch.bfloat16, torch.float16 or torch.float32.

    Returns:
        ``scales`` in ``preferred``, except float16 falls back to float32 when a nonzero scale
        is outside float16's normal range (see module docstring).

    Raises:
        ValueError: ``preferred`` is not one of the three dtypes.
    """
    if preferred not in STORED_SCALE_DTYPES:
        raise ValueError(f"Scale dtype must be one of {STORED_SCALE_DTYPES}, got {preferred}.")
    if preferred == torch.float16:
        nonzero = scales[scales != 0]
        if nonzero.numel() and (nonzero.min() < FP16_MIN_NORMAL or nonzero.max() > FP16_MAX):
            return scales.to(torch.float32)
    return scales.to(preferred)
