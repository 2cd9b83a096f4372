"""Safetensors helpers: truncated/corrupt/missing files raise QuantFormatError naming the file."""

import pytest
import torch
from safetensors.torch import save_file

from kroncl.errors import QuantFormatError
from kroncl.quant import (
    load_quantized,
    quantize_tensors,
    read_safetensors,
    read_safetensors_with_metadata,
    save_quantized,
)


@pytest.fixture
def adapter_file(tmp_path):
    packed, meta = quantize_tensors({"l.A": torch.randn(4, 4), "l.B": torch.randn(96, 8)}, "int4")
    path = tmp_path / "adapter.safetensors"
    save_file(packed, str(path))
    return path, packed, meta


def test_read_safetensors_returns_all_tensors(adapter_file):
    path, packed, _ = adapter_file
    tensors = read_safetensors(path)
    assert set(tensors) == set(packed)
    for key, value in packed.items():
        assert torch.equal(tensors[key], value)


@pytest.mark.parametrize("keep", [0, 5, 60, -1])
def test_truncated_file_names_the_file(adapter_file, keep):
    path, _, _ = adapter_file
    data = path.read_bytes()
    cut = len(data) + keep if keep < 0 else keep
    path.write_bytes(data[:cut])
    with pytest.raises(QuantFormatError, match="adapter.safetensors.*truncated or corrupt") as info:
        read_safetensors(path)
    assert str(path) in str(info.value)


def test_garbage_and_missing_files(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file" * 10)
    with pytest.raises(QuantFormatError, match="junk.safetensors"):
        read_safetensors(junk)
    with pytest.raises(QuantFormatError, match="nowhere.safetensors.*does not exist"):
        read_safetensors(tmp_path / "nowhere.safetensors")
    with pytest.raises(QuantFormatError, match="not a file"):
        read_safetensors(tmp_path)


@pytest.mark.parametrize("name", ["int8", "int4", "nf4"])
def test_save_and_load_quantized_round_trip(tmp_path, name):
    tensors = {"l.A": torch.randn(4, 4), "l.B": torch.randn(7, 9).half()}
    packed, meta = quantize_tensors(tensors, name)
    path = save_quantized(tmp_path / "sub" / "q.safetensors", packed, meta)
    _, header = read_safetensors_with_metadata(path)
    assert "kroncl.quantization" in header
    out, meta_back = load_quantized(path, dtype=None)
    assert meta_back == meta
    assert out["l.B"].dtype == torch.float16
    assert float((out["l.A"] - tensors["l.A"]).abs().max()) < 0.5


def test_load_quantized_needs_the_header_and_intact_bytes(adapter_file, tmp_path):
    path, packed, meta = adapter_file
    with pytest.raises(QuantFormatError, match="no 'kroncl.quantization' header"):
        load_quantized(path)
    saved = save_quantized(tmp_path / "q.safetensors", packed, meta)
    saved.write_bytes(saved.read_bytes()[:-7])
    with pytest.raises(QuantFormatError, match="q.safetensors"):
        load_quantized(saved)
    # Intact file, but tensors that do not match the metadata: the error names the file too.
    wrong = {k: v for k, v in packed.items() if k != "l.A.scales"}
    bad = save_quantized(tmp_path / "bad.safetensors", wrong, meta)
    with pytest.raises(QuantFormatError, match="bad.safetensors.*'l.A.scales'"):
        load_quantized(bad)
