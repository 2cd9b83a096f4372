"""kroncl.quant — owner of quantized adapter artifacts (int8, int4, nf4).

Plain torch + safetensors: stored files load on any CPU without a GPU or quantization library.

- Schemes: `QuantScheme` (kind "int8" | "int4" | "nf4", block_size, scale_dtype),
  `QuantScheme.from_name("none" | "int8" | "int4" | "nf4")`.
- State dicts: `quantize_tensors(tensors, scheme) -> (packed, meta)` and
  `dequantize_tensors(packed, meta, dtype)`. ``packed`` holds ``"<key>.qweight"`` and
  ``"<key>.scales"`` per adapter tensor; ``meta`` is the JSON-able dict stored as
  ``adapter_config.json["quantization"]`` (scheme, block_size, scale_dtype, format_version,
  shapes, dtypes).
- Pure math: `quantize_int8_rows` / `dequantize_int8_rows` (per-row symmetric absmax),
  `quantize_blockwise_4bit` / `dequantize_blockwise_4bit` (block absmax, "int4" or "nf4"
  code book), `pack_int4` / `unpack_int4`.
- Error of the quantized update: `relative_error(ΔW, ΔŴ)`, `delta_error_report(pairs)`.
- Size: `artifact_bytes(tensors)`.
- Files: `read_safetensors(path)` (failures -> `QuantFormatError` naming the file),
  `save_quantized` / `load_quantized` (metadata kept in the safetensors header).

Errors: `kroncl.errors.QuantizationError` (cannot quantize this input/scheme),
`kroncl.errors.QuantFormatError` (stored data malformed), `kroncl.errors.ConfigError` (bad
scheme name/block size).
"""

from kroncl.errors import QuantFormatError, QuantizationError
from kroncl.quant.blockwise4 import (
    NF4_CODEBOOK,
    codebook_values,
    dequantize_blockwise_4bit,
    quantize_blockwise_4bit,
)
from kroncl.quant.delta_error import QuantErrorReport, delta_error_report, relative_error
from kroncl.quant.files import (
    load_quantized,
    read_safetensors,
    read_safetensors_with_metadata,
    save_quantized,
)
from kroncl.quant.int8 import dequantize_int8_rows, quantize_int8_rows
from kroncl.quant.packing import pack_int4, unpack_int4
from kroncl.quant.scheme import FORMAT_VERSION, SCHEME_NAMES, QuantScheme
from kroncl.quant.tensors import artifact_bytes, dequantize_tensors, quantize_tensors

__all__ = [
    "FORMAT_VERSION",
    "NF4_CODEBOOK",
    "SCHEME_NAMES",
    "QuantErrorReport",
    "QuantFormatError",
    "QuantScheme",
    "QuantizationError",
    "artifact_bytes",
    "codebook_values",
    "delta_error_report",
    "dequantize_blockwise_4bit",
    "dequantize_int8_rows",
    "dequantize_tensors",
    "load_quantized",
    "pack_int4",
    "quantize_blockwise_4bit",
    "quantize_int8_rows",
    "quantize_tensors",
    "read_safetensors",
    "read_safetensors_with_metadata",
    "relative_error",
    "save_quantized",
    "unpack_int4",
]
