"""quantize_tensors / dequantize_tensors: whole adapter state dicts, metadata, bytes, errors."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from kroncl.errors import QuantFormatError, QuantizationError
from kroncl.quant import (
    QuantScheme,
    artifact_bytes,
    delta_error_report,
    dequantize_tensors,
    quantize_tensors,
)

SCHEMES = ["int8", "int4", "nf4"]


def _kron_state(seed=0):
    """A Kron-LoRA + LoRA + head adapter state dict shaped like MiniLM (hidden 384, ffn 1536)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "encoder.layer.0.attention.self.query.A": torch.randn(4, 4, generator=g),
        "encoder.layer.0.attention.self.query.B1": torch.randn(96, 8, generator=g) * 0.02,
        "encoder.layer.0.attention.self.query.B2": torch.randn(8, 96, generator=g) * 0.02,
        "encoder.layer.0.intermediate.dense.A": torch.randn(8, 384, generator=g),
        "encoder.layer.0.intermediate.dense.B": torch.randn(1536, 8, generator=g) * 0.01,
        "classifier.delta_bias": torch.randn(1, generator=g),
        "classifier.delta_weight": torch.randn(1, 383, generator=g),
    }


@pytest.mark.parametrize("name", SCHEMES)
def test_round_trip_through_json_and_safetensors(tmp_path, name):
    tensors = _kron_state()
    packed, meta = quantize_tensors(tensors, name)
    expected_keys = {k + sfx for k in tensors for sfx in (".qweight", ".scales")}
    assert set(packed) == expected_keys
    save_file(packed, str(tmp_path / "adapter.safetensors"))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"quantization": meta}))
    meta_back = json.loads((tmp_path / "adapter_config.json").read_text())["quantization"]
    assert meta_back == meta
    out = dequantize_tensors(load_file(str(tmp_path / "adapter.safetensors")), meta_back)
    assert set(out) == set(tensors)
    tol = 0.01 if name == "int8" else 0.15
    for key, x in tensors.items():
        assert out[key].shape == x.shape and out[key].dtype == torch.float32
        assert float((out[key] - x).norm() / x.norm()) < tol, key


def test_metadata_records_scheme_shapes_and_dtypes():
    tensors = {"m.A": torch.randn(3, 5), "m.b": torch.randn(7).to(torch.bfloat16)}
    _, meta = quantize_tensors(tensors, QuantScheme.from_name("int4", block_size=32))
    assert meta["scheme"] == "int4" and meta["bits"] == 4 and meta["block_size"] == 32
    assert meta["format_version"] == 1 and meta["granularity"] == "block"
    assert meta["scale_dtype"] == "bfloat16"
    assert meta["shapes"] == {"m.A": [3, 5], "m.b": [7]}
    assert meta["dtypes"] == {"m.A": "float32", "m.b": "bfloat16"}


def test_dtype_none_restores_recorded_dtypes():
    tensors = {"a": torch.randn(4, 4).half(), "b": torch.randn(9).to(torch.bfloat16)}
    packed, meta = quantize_tensors(tensors, "int8")
    out = dequantize_tensors(packed, meta, dtype=None)
    assert out["a"].dtype == torch.float16 and out["b"].dtype == torch.bfloat16
    assert dequantize_tensors(packed, meta, dtype=torch.float64)["a"].dtype == torch.float64


@pytest.mark.parametrize("scale_dtype", ["bfloat16", "float16", "float32"])
def test_int4_artifact_is_at_most_a_sixth_of_fp32(scale_dtype):
    tensors = {"q.B1": torch.randn(384, 8), "q.B2": torch.randn(8, 1536)}
    fp32 = artifact_bytes(tensors)
    for kind in ("int4", "nf4"):
        packed, _ = quantize_tensors(tensors, QuantScheme.from_name(kind, scale_dtype=scale_dtype))
        assert artifact_bytes(packed) <= fp32 / 6, (kind, artifact_bytes(packed) / fp32)


def test_artifact_bytes_counts_codes_and_scales():
    tensors = {"q.B1": torch.randn(384, 8)}
    assert artifact_bytes(tensors) == 384 * 8 * 4
    packed, _ = quantize_tensors(tensors, "int4")  # 3072 values: 1536 bytes + 48 bf16 scales
    assert artifact_bytes(packed) == 1536 + 48 * 2
    packed, _ = quantize_tensors(tensors, QuantScheme.from_name("int8", scale_dtype="float32"))
    assert artifact_bytes(packed) == 3072 + 384 * 4
    odd = {"x": torch.randn(65)}  # 33 bytes + 2 blocks of scales
    packed, _ = quantize_tensors(odd, "nf4")
    assert artifact_bytes(packed) == 33 + 2 * 2


@pytest.mark.parametrize("name", SCHEMES)
def test_quantized_kron_update_stays_close(name):
    """ΔW = kron(A, B1 @ B2) rebuilt from quantized factors, measured by delta_error_report."""
    tensors = _kron_state(seed=1)
    out = dequantize_tensors(*quantize_tensors(tensors, name))
    p = "encoder.layer.0.attention.self.query."
    delta = torch.kron(tensors[p + "A"], tensors[p + "B1"] @ tensors[p + "B2"])  # (384, 384)
    delta_hat = torch.kron(out[p + "A"], out[p + "B1"] @ out[p + "B2"])
    q = "encoder.layer.0.intermediate.dense."
    lora = tensors[q + "B"] @ tensors[q + "A"]
    lora_hat = out[q + "B"] @ out[q + "A"]
    report = delta_error_report({"query": (delta, delta_hat), "ffn": (lora, lora_hat)})
    limit = 0.02 if name == "int8" else 0.3
    assert 0 < report.max < limit
    assert set(report.per_layer) == {"query", "ffn"}


def test_zero_init_factor_survives_every_scheme():
    tensors = {"l.B1": torch.zeros(96, 8), "l.A": torch.randn(4, 4)}
    for name in SCHEMES:
        out = dequantize_tensors(*quantize_tensors(tensors, name))
        assert torch.equal(out["l.B1"], tensors["l.B1"])


def test_quantize_errors_name_the_key():
    with pytest.raises(QuantizationError, match="'bad.key'.*NaN"):
        quantize_tensors({"ok": torch.randn(3), "bad.key": torch.tensor([float("nan")])}, "int8")
    with pytest.raises(QuantizationError, match="'steps'.*int64"):
        quantize_tensors({"steps": torch.tensor([3])}, "int4")
    with pytest.raises(QuantizationError, match="'none'"):
        quantize_tensors({"a": torch.randn(3)}, "none")


@pytest.fixture
def stored():
    tensors = {"l.A": torch.randn(4, 4), "l.B": torch.randn(5, 13)}
    return quantize_tensors(tensors, "int4")


def test_missing_and_extra_keys_are_all_listed(stored):
    packed, meta = stored
    broken = dict(packed)
    del broken["l.A.scales"]
    del broken["l.B.qweight"]
    broken["l.C.qweight"] = torch.zeros(2, dtype=torch.uint8)
    with pytest.raises(QuantFormatError) as info:
        dequantize_tensors(broken, meta)
    msg = str(info.value)
    assert "'l.A.scales'" in msg and "'l.B.qweight'" in msg and "'l.C.qweight'" in msg


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (lambda p: p.__setitem__("l.B.qweight", p["l.B.qweight"][:-1]), "'l.B.qweight'.*truncated"),
        (lambda p: p.__setitem__("l.B.scales", p["l.B.scales"][:-1]), "'l.B.scales'.*need 2"),
        (
            lambda p: p.__setitem__("l.B.qweight", p["l.B.qweight"].to(torch.int8)),
            "'l.B.qweight'.*int8",
        ),
        (lambda p: p.__setitem__("l.A.scales", p["l.A.scales"].double()), "'l.A.scales'.*float64"),
        (
            lambda p: p.__setitem__("l.A.scales", torch.full_like(p["l.A.scales"], float("nan"))),
            "non-finite",
        ),
        (lambda p: p.__setitem__("l.A.scales", -p["l.A.scales"]), "negative"),
    ],
)
def test_corrupt_tensors_raise_format_error(stored, corrupt, match):
    packed, meta = stored
    packed = dict(packed)
    corrupt(packed)
    with pytest.raises(QuantFormatError, match=match):
        dequantize_tensors(packed, meta)


def test_metadata_problems_raise_format_error(stored):
    packed, meta = stored
    with pytest.raises(QuantFormatError, match=r"'l.B.qweight'.*\[5, 14\]"):
        dequantize_tensors(packed, {**meta, "shapes": {**meta["shapes"], "l.B": [5, 14]}})
    with pytest.raises(QuantFormatError, match="'shapes'"):
        dequantize_tensors(packed, {k: v for k, v in meta.items() if k != "shapes"})
    with pytest.raises(QuantFormatError, match="non-negative"):
        dequantize_tensors(packed, {**meta, "shapes": {**meta["shapes"], "l.A": [4, -4]}})
    with pytest.raises(QuantFormatError, match="format_version"):
        dequantize_tensors(packed, {**meta, "format_version": 2})
    # Same bytes read as int8: the dtype check catches it.
    with pytest.raises(QuantFormatError, match="int8 scheme stores int8"):
        dequantize_tensors(packed, {**meta, "scheme": "int8", "bits": 8})


def test_int8_shape_mismatch_raises(tmp_path):
    packed, meta = quantize_tensors({"w": torch.randn(6, 4)}, "int8")
    packed["w.qweight"] = packed["w.qweight"][:5]
    with pytest.raises(QuantFormatError, match=r"\(5, 4\).*\(6, 4\)"):
        dequantize_tensors(packed, meta)


@pytest.mark.parametrize("name", SCHEMES)
def test_keep_below_stores_small_tensors_at_16_bits(tmp_path, name):
    """Kron-LoRA's A (16 values here) is kept as bfloat16; everything larger is quantized as before."""
    tensors = _kron_state(seed=2)
    a = "encoder.layer.0.attention.self.query.A"
    plain, plain_meta = quantize_tensors(tensors, name)
    packed, meta = quantize_tensors(tensors, QuantScheme.from_name(name, keep_below=17))
    assert meta["kept"] == ["classifier.delta_bias", a] and meta["keep_below"] == 17
    assert set(packed) == (set(plain) - {k + sfx for k in meta["kept"] for sfx in (".qweight", ".scales")}) | {
        a + ".kept", "classifier.delta_bias.kept"}
    save_file(packed, str(tmp_path / "adapter.safetensors"))
    out = dequantize_tensors(load_file(str(tmp_path / "adapter.safetensors")), json.loads(json.dumps(meta)))
    ref = dequantize_tensors(plain, plain_meta)
    assert torch.equal(out[a], tensors[a].to(torch.bfloat16).float())
    err_kept = float((out[a] - tensors[a]).norm() / tensors[a].norm())
    err_quant = float((ref[a] - tensors[a]).norm() / tensors[a].norm())
    assert err_kept < 4e-3  # bfloat16 rounding (2^-9 relative)
    assert err_quant > (2e-3 if name == "int8" else 2e-2)  # int8: ~2^-8 per row; 4-bit: 15 levels
    for key in set(tensors) - set(meta["kept"]):
        assert torch.equal(out[key], ref[key]), key
    # 16 values of A at 2 bytes instead of the scheme's codes + scale(s)
    assert artifact_bytes(packed) - artifact_bytes(plain) == (
        (16 + 1) * 2 - sum(plain[k + s].numel() * plain[k + s].element_size()
                           for k in meta["kept"] for s in (".qweight", ".scales")))


def test_kept_tensor_problems_raise_format_error():
    packed, meta = quantize_tensors({"l.A": torch.randn(2, 2), "l.B": torch.randn(5, 13)},
                                    QuantScheme.from_name("int4", keep_below=5))
    with pytest.raises(QuantFormatError, match=r"'l.A.kept' has dtype torch.float32.*bfloat16"):
        dequantize_tensors({**packed, "l.A.kept": packed["l.A.kept"].float()}, meta)
    with pytest.raises(QuantFormatError, match="'kept' must list keys of 'shapes'"):
        dequantize_tensors(packed, {**meta, "kept": ["l.C"]})
    old = {k: v for k, v in meta.items() if k not in ("kept", "keep_below")}  # a file from before keep_below
    plain, plain_meta = quantize_tensors({"l.B": torch.randn(5, 13)}, "int4")
    assert set(dequantize_tensors(plain, {k: v for k, v in plain_meta.items() if k not in ("kept", "keep_below")})) == {"l.B"}
    with pytest.raises(QuantFormatError, match=r"missing keys \['l.A.qweight', 'l.A.scales'\]"):
        dequantize_tensors(packed, old)
