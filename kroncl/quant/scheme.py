"""`QuantScheme`: which quantization an adapter artifact uses, and its JSON form.

The JSON form is the ``"quantization"`` entry of ``adapter_config.json``::

    {"scheme": "int4", "block_size": 64, "scale_dtype": "bfloat16", "format_version": 1,
     "shapes": {"<key>": [384, 8], ...}, "dtypes": {"<key>": "float32", ...}}

This module is the one home of the scheme names and their parameter rules, and imports no
torch: ``kroncl.config`` validates the run's ``quant`` section with `SCHEME_NAMES` and
`block_size_problem` before any torch-heavy module is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from typing import TYPE_CHECKING

from kroncl.errors import ConfigError, QuantFormatError

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = 1
"""Version of the stored layout; bump it when the meaning of stored tensors changes."""

KIND_BITS: dict[str, int] = {"int8": 8, "int4": 4, "nf4": 4}
"""Every supported kind and its bit width."""

SCHEME_NAMES: tuple[str, ...] = ("none", "int8", "int4", "nf4")
"""Names accepted by `QuantScheme.from_name` ("none" = keep full precision)."""

SCALE_DTYPES: tuple[str, ...] = ("bfloat16", "float16", "float32")
"""Accepted ``scale_dtype`` names (torch dtype names; see `QuantScheme.torch_scale_dtype`)."""
DEFAULT_SCALE_DTYPE = "bfloat16"

DEFAULT_BLOCK_SIZE = 64

KEPT_DTYPE = "bfloat16"
"""Storage dtype of the tensors a scheme keeps unquantized (``QuantScheme.keep_below``)."""


@dataclass(frozen=True)
class QuantScheme:
    """How adapter tensors are quantized.

    Attributes:
        bits: 8 for "int8", 4 for "int4" and "nf4".
        kind: "int8" (symmetric, one absmax scale per output row), "int4" (symmetric
            block-wise absmax over the flattened tensor, levels -7..7) or "nf4" (block-wise
            absmax with the QLoRA NormalFloat-4 code book).
        block_size: elements per scale for the 4-bit kinds; a positive integer. Recorded
            but unused by "int8", whose granularity is one row.
        scale_dtype: storage dtype of scales: "bfloat16" (default; 2 bytes, float32's range),
            "float16" (2 bytes; a tensor whose scales fall outside float16's normal range is
            stored with float32 scales instead) or "float32" (4 bytes). See
            `kroncl.quant.scales` for why the error bound holds with any of them.
        keep_below: a tensor with fewer values than this is stored unquantized, as bfloat16
            (0, the default, quantizes every tensor). Kron-LoRA's A factor has 4-64 values per
            layer: quantized, they share one or two scales, which costs most of Kron-LoRA's
            quantization error; kept at 16 bits they add a few bytes per layer
            (``python -m pipelines.bench quant --keep-below 65`` measures both).
    """

    bits: int
    kind: str
    block_size: int = DEFAULT_BLOCK_SIZE
    scale_dtype: str = DEFAULT_SCALE_DTYPE
    keep_below: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KIND_BITS:
            raise ConfigError(
                f"Unknown quantization kind {self.kind!r}; use one of {sorted(KIND_BITS)}."
            )
        if self.bits != KIND_BITS[self.kind]:
            raise ConfigError(
                f"Quantization kind {self.kind!r} uses {KIND_BITS[self.kind]} bits, got "
                f"bits={self.bits!r}; set bits={KIND_BITS[self.kind]}."
            )
        _check_block_size(self.block_size)
        if self.scale_dtype not in SCALE_DTYPES:
            raise ConfigError(
                f"Unknown scale_dtype {self.scale_dtype!r}; use one of {sorted(SCALE_DTYPES)}."
            )
        problem = keep_below_problem(self.keep_below)
        if problem:
            raise ConfigError(problem)

    @property
    def torch_scale_dtype(self) -> torch.dtype:
        """The preferred scale dtype as a torch dtype."""
        import torch  # here, not at import: kroncl.config reads this module before torch loads

        return getattr(torch, self.scale_dtype)

    @property
    def granularity(self) -> str:
        """"row" for int8 (one scale per output row), "block" for the 4-bit kinds."""
        return "row" if self.kind == "int8" else "block"

    @classmethod
    def from_name(
        cls, name: str, block_size: int = DEFAULT_BLOCK_SIZE, scale_dtype: str = DEFAULT_SCALE_DTYPE,
        keep_below: int = 0,
    ) -> QuantScheme | None:
        """Build a scheme from its user-facing name.

        Args:
            name: "none", "int8", "int4" or "nf4" (case-insensitive).
            block_size: elements per scale for the 4-bit kinds (positive integer).
            scale_dtype: "bfloat16", "float16" or "float32".
            keep_below: tensors with fewer values stay unquantized (bfloat16); 0 = none.

        Returns:
            The scheme, or None for "none" (store full precision).

        Raises:
            ConfigError: unknown name, bad block size or scale dtype; the message names the
                bad value and the accepted ones.
        """
        problem = scheme_name_problem(name)
        if problem:
            raise ConfigError(problem)
        kind = name.lower()
        if kind == "none":
            return None
        return cls(bits=KIND_BITS[kind], kind=kind, block_size=block_size, scale_dtype=scale_dtype,
                   keep_below=keep_below)

    def to_meta(self) -> dict[str, Any]:
        """The scheme part of the JSON metadata (no per-tensor entries)."""
        return {
            "scheme": self.kind,
            "bits": self.bits,
            "block_size": self.block_size,
            "granularity": self.granularity,
            "scale_dtype": self.scale_dtype,
            "keep_below": self.keep_below,
            "format_version": FORMAT_VERSION,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> QuantScheme:
        """Read the scheme back from ``adapter_config.json["quantization"]``.

        Raises:
            QuantFormatError: the metadata is not a dict, misses "scheme", carries an unknown
                format_version, or names an unknown scheme / bad block size.
        """
        if not isinstance(meta, dict):
            raise QuantFormatError(
                f"Quantization metadata must be a JSON object, got {type(meta).__name__}."
            )
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise QuantFormatError(
                f"Quantization format_version {version!r} is not supported by this kroncl "
                f"(reads format_version {FORMAT_VERSION})."
            )
        if "scheme" not in meta:
            raise QuantFormatError("Quantization metadata has no 'scheme' entry.")
        try:
            scheme = cls.from_name(
                meta["scheme"],
                block_size=meta.get("block_size", DEFAULT_BLOCK_SIZE),
                scale_dtype=meta.get("scale_dtype", DEFAULT_SCALE_DTYPE),
                keep_below=meta.get("keep_below", 0),  # absent in files written before it existed
            )
        except ConfigError as err:
            raise QuantFormatError(f"Bad quantization metadata: {err}") from err
        if scheme is None:
            raise QuantFormatError("Quantization metadata says scheme 'none'; store null instead.")
        return scheme


def scheme_name_problem(name: Any) -> str | None:
    """Why ``name`` is not a scheme name (listing the choices), or None when it is one."""
    if isinstance(name, str) and name.lower() in SCHEME_NAMES:
        return None
    return f"Unknown quantization scheme {name!r}; use one of {list(SCHEME_NAMES)}."


def block_size_problem(block_size: Any) -> str | None:
    """Why ``block_size`` is not a valid block size, or None when it is."""
    # bool is an int subclass; True would silently mean a block of 1.
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        return (
            f"Quantization block_size must be a positive integer, got {block_size!r}; "
            f"{DEFAULT_BLOCK_SIZE} is the usual choice."
        )
    return None


def keep_below_problem(keep_below: Any) -> str | None:
    """Why ``keep_below`` is not a valid threshold, or None when it is."""
    if isinstance(keep_below, bool) or not isinstance(keep_below, int) or keep_below < 0:
        return (
            f"Quantization keep_below must be an integer >= 0 (values; 0 quantizes every tensor), "
            f"got {keep_below!r}; 65 keeps Kron-LoRA's A factors (up to 8x8) at 16 bits."
        )
    return None


def _check_block_size(block_size: Any) -> None:
    problem = block_size_problem(block_size)
    if problem:
        raise ConfigError(problem)
