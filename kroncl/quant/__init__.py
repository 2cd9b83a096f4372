"""kroncl.quant — owner of quantized adapter artifacts (int8, int4, nf4).

Plain torch + safetensors: stored files load on any CPU without a GPU or quantization library.

- Schemes: `QuantScheme` (kind "int8" | "int4" | "nf4", block_size, scale_dtype, keep_below:
  tensors with fewer values stored unquantized as bfloat16, ``"<key>.kept"``),
  `QuantScheme.from_name("none" | "int8" | "int4" | "nf4")`.
- State dicts: `quantize_tensors(tensors, scheme) -> (packed, meta)` and
  `dequantize_tensors(packed, meta, dtype)`. ``packed`` holds ``"<key>.qweight"`` and
  ``"<key>.scales"`` per adapter tensor; ``meta`` is the JSON-able dict stored as
  ``adapter_config.json["quantization"]`` (scheme, block_size, scale_dtype, format_version,
  shapes, dtypes).
- Pure math: `quantize_int8_rows` / `dequantize_int8_rows` (per-row symmetric absmax),
  `quantize_blockwise_4bit` / `dequantize_blockwise_4bit` (block absmax, "int4" or "nf4"
  code book), `pack_int4` / `unpack_int4`.
- Error of the quantized update: `relative_error(ΔW, ΔŴ)`, `delta_error_report(pairs)`, and
  `quantization_error(tensors, packed, meta, cfg)` (ΔW per layer from the fp32 and the
  dequantized factors, no model needed; `layer_deltas(tensors, cfg)`).
- Size: `artifact_bytes(tensors)`.
- Files (the adapter folder of ``kroncl.adapters.io`` with a ``quantization`` entry):
  `save_quantized_adapter(dir, packed, meta, cfg, base_model, extra)`,
  `load_adapter_dequantized(dir, dtype)` (any folder, quantized or not -> float tensors) and
  `load_adapter_dequantized_into(model, dir, name)`. ``kroncl.adapters.load_adapter`` refuses
  quantized folders; ``kroncl.adapters`` never imports this package.

Names resolve lazily (PEP 562), so ``import kroncl.quant.scheme`` (the scheme names, used by
``kroncl.config``) loads no torch.

Errors: `kroncl.errors.QuantizationError` (cannot quantize this input/scheme),
`kroncl.errors.QuantFormatError` (stored data malformed), `kroncl.errors.ConfigError` (bad
scheme name/block size).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "QuantFormatError": "kroncl.errors",
    "QuantizationError": "kroncl.errors",
    "NF4_CODEBOOK": "kroncl.quant.blockwise4",
    "codebook_values": "kroncl.quant.blockwise4",
    "dequantize_blockwise_4bit": "kroncl.quant.blockwise4",
    "quantize_blockwise_4bit": "kroncl.quant.blockwise4",
    "QuantErrorReport": "kroncl.quant.delta_error",
    "delta_error_report": "kroncl.quant.delta_error",
    "relative_error": "kroncl.quant.delta_error",
    "load_adapter_dequantized": "kroncl.quant.files",
    "load_adapter_dequantized_into": "kroncl.quant.files",
    "save_quantized_adapter": "kroncl.quant.files",
    "dequantize_int8_rows": "kroncl.quant.int8",
    "quantize_int8_rows": "kroncl.quant.int8",
    "layer_deltas": "kroncl.quant.measure",
    "quantization_error": "kroncl.quant.measure",
    "pack_int4": "kroncl.quant.packing",
    "unpack_int4": "kroncl.quant.packing",
    "FORMAT_VERSION": "kroncl.quant.scheme",
    "SCHEME_NAMES": "kroncl.quant.scheme",
    "QuantScheme": "kroncl.quant.scheme",
    "artifact_bytes": "kroncl.quant.tensors",
    "dequantize_tensors": "kroncl.quant.tensors",
    "quantize_tensors": "kroncl.quant.tensors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kroncl.quant' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from kroncl.errors import QuantFormatError, QuantizationError
    from kroncl.quant.blockwise4 import (
        NF4_CODEBOOK,
        codebook_values,
        dequantize_blockwise_4bit,
        quantize_blockwise_4bit,
    )
    from kroncl.quant.delta_error import QuantErrorReport, delta_error_report, relative_error
    from kroncl.quant.files import load_adapter_dequantized, load_adapter_dequantized_into, save_quantized_adapter
    from kroncl.quant.int8 import dequantize_int8_rows, quantize_int8_rows
    from kroncl.quant.measure import layer_deltas, quantization_error
    from kroncl.quant.packing import pack_int4, unpack_int4
    from kroncl.quant.scheme import FORMAT_VERSION, SCHEME_NAMES, QuantScheme
    from kroncl.quant.tensors import artifact_bytes, dequantize_tensors, quantize_tensors
