"""Our NF4 against bitsandbytes' own (CPU): the same codes, the same absmax, the same values.

bitsandbytes is the reference implementation of QLoRA's NF4; it is a test dependency only
(kroncl never imports it). It packs the first of two codes in the *high* nibble, we in the low
one, so codes are compared unpacked.
"""

from __future__ import annotations

import bitsandbytes.functional as bnb  # pinned in requirements.lock: a missing one fails here
import pytest
import torch

from kroncl.quant.blockwise4 import dequantize_blockwise_4bit, quantize_blockwise_4bit
from kroncl.quant.packing import unpack_int4


@pytest.mark.parametrize("shape", [(384, 8), (1000,), (64, 33), (7, 5), (3, 129)])
@pytest.mark.parametrize("block_size", [64, 128])
def test_nf4_codes_scales_and_values_are_bitsandbytes_bit_for_bit(shape, block_size):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape) + block_size)) * 0.05
    ref_packed, state = bnb.quantize_4bit(x, blocksize=block_size, quant_type="nf4")
    n = x.numel()
    raw = ref_packed.reshape(-1)
    ref_codes = torch.stack([raw >> 4, raw & 0x0F], dim=1).reshape(-1)[:n]

    packed, scales = quantize_blockwise_4bit(x, block_size, "nf4", scale_dtype=torch.float32)
    assert torch.equal(unpack_int4(packed, n), ref_codes)
    assert torch.equal(scales, state.absmax)
    ours = dequantize_blockwise_4bit(packed, scales, shape, block_size, "nf4")
    assert torch.equal(ours.reshape(-1), bnb.dequantize_4bit(ref_packed, state).reshape(-1))
