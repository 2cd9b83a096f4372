"""pack_int4 / unpack_int4: exact, documented nibble order, odd counts."""

import pytest
import torch

from kroncl.quant import pack_int4, unpack_int4


def test_all_sixteen_values_round_trip():
    codes = torch.arange(16, dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8
    assert packed.numel() == 8
    assert torch.equal(unpack_int4(packed, 16), codes)


def test_low_nibble_holds_the_even_index():
    packed = pack_int4(torch.tensor([0x1, 0x2, 0xF, 0x0], dtype=torch.uint8))
    assert packed.tolist() == [0x21, 0x0F]


@pytest.mark.parametrize("n", [0, 1, 15, 17, 1001])
def test_odd_and_even_counts_round_trip(n):
    gen = torch.Generator().manual_seed(n)
    codes = torch.randint(0, 16, (n,), generator=gen, dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.numel() == (n + 1) // 2
    assert torch.equal(unpack_int4(packed, n), codes)


def test_two_dimensional_codes_are_read_flattened():
    codes = torch.arange(16, dtype=torch.uint8).reshape(4, 4)
    assert torch.equal(unpack_int4(pack_int4(codes), 16), codes.reshape(-1))


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="16"):
        pack_int4(torch.tensor([16], dtype=torch.uint8))
    with pytest.raises(ValueError, match="int64"):
        pack_int4(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="need 3 bytes, got 2"):
        unpack_int4(torch.zeros(2, dtype=torch.uint8), 5)
    with pytest.raises(ValueError, match="float32"):
        unpack_int4(torch.zeros(2), 4)
