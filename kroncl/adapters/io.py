"""Adapter files: ``adapter.safetensors`` + ``adapter_config.json`` (format version 1).

The JSON holds everything needed to rebuild the adapter layers on the base model:

    {"format_version": 1, "method": "kron", "a_out": 2, "a_in": 2, "r": 8, "alpha": 16.0,
     "dropout": 0.0, "targets": [...], "head_targets": [...], "base_model": "<id or path>",
     "quantization": null | {<scheme dict owned by kroncl.quant>}, ...extra keys}

Tensor keys are "<module path>.<param>" as produced by ``inject.adapter_state_dict``. Both files
are written to a temporary name and moved into place with ``os.replace``, so a reader never sees
a half-written file. Nothing is pickled.

This package reads plain adapters; it never imports ``kroncl.quant``. A quantized folder (its
``quantization`` entry set) is refused by :func:`load_adapter` with an error naming
``kroncl.quant.load_adapter_dequantized``, which reads it with :func:`read_adapter`, dequantizes
and applies the same checks (:func:`checked_adapter`).

Integrity (checked by :func:`read_adapter` and :func:`checked_adapter`, i.e. by every loader,
before anything reaches a model):

* ``"weights_sha256"`` in the JSON is the sha256 of ``adapter.safetensors``; a flipped byte, a
  truncated copy or a weights file from another save is refused. The weights are written
  first and the JSON (holding their hash) second, so a crash between the two leaves the new
  weights beside the old JSON: that pair is reported as a hash mismatch, never loaded as a
  silent mix. Folders written before the hash existed have no key and still load (a warning
  is logged once per process).
* both files must be regular files inside the folder (no symbolic links, nothing resolving
  elsewhere), every tensor must be finite, and every tensor's shape must follow from the
  config (a_out, a_in, r) before a layer is built from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from kroncl.adapters.config import AdapterConfig
from kroncl.errors import AdapterConfigError, AdapterLoadError
from kroncl.fileio import atomic_write

__all__ = [
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
    "HASH_KEY",
    "LoadedAdapter",
    "save_adapter",
    "read_adapter",
    "checked_adapter",
    "load_adapter",
    "attach_adapter",
    "load_adapter_into",
    "file_sha256",
    "adapter_file",
    "check_finite",
    "check_tensor_shapes",
]

FORMAT_VERSION = 1
WEIGHTS_NAME = "adapter.safetensors"
CONFIG_NAME = "adapter_config.json"
HASH_KEY = "weights_sha256"
_CORE_KEYS = {"format_version", "base_model", "quantization", HASH_KEY}
_log = logging.getLogger(__name__)
_warned_unhashed = False


@dataclass
class LoadedAdapter:
    """An adapter read from disk.

    Attributes:
        tensors: "<module path>.<param>" -> tensor: float from :func:`load_adapter` (and from
            ``kroncl.quant.load_adapter_dequantized``), as stored from :func:`read_adapter`.
        config: the adapter hyper-parameters and targets.
        meta: the whole JSON document (format_version, base_model, quantization, extra keys).
    """

    tensors: dict[str, Tensor]
    config: AdapterConfig
    meta: dict[str, Any] = field(default_factory=dict)


def save_adapter(
    directory: str | os.PathLike,
    tensors: dict[str, Tensor],
    cfg: AdapterConfig,
    base_model: str,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write one adapter to ``directory`` (created if needed), with the weights' sha256.

    ``adapter.safetensors`` is written first and ``adapter_config.json`` (recording its sha256
    as ``"weights_sha256"``) second, each atomically (``kroncl.fileio.atomic_write``). A crash
    between the two leaves new weights beside the previous config, which :func:`load_adapter`
    reports as a hash mismatch: a reader gets the old pair, the new pair, or an error, never a
    silent mix.

    Args:
        directory: output folder; existing adapter files in it are replaced atomically.
        tensors: adapter tensors (e.g. ``adapter_state_dict(model, name)``, or quantized ones).
        cfg: the adapter config the tensors belong to.
        base_model: id or path of the base model the adapter was trained on.
        extra: additional JSON-serialisable top-level keys. ``extra["quantization"]`` is how
            ``kroncl.quant.save_quantized_adapter`` marks a quantized file (the dict
            ``kroncl.quant.load_adapter_dequantized`` reads back); other core keys may not be
            overridden.

    Returns:
        The directory path.

    Raises:
        AdapterConfigError: invalid ``cfg`` or ``extra`` overriding a reserved key.
    """
    cfg.validate()
    extra = dict(extra or {})
    clash = sorted((set(extra) & (set(cfg.to_dict()) | _CORE_KEYS)) - {"quantization"})
    if clash:
        raise AdapterConfigError(f"save_adapter extra keys {clash} would override reserved adapter_config.json keys")
    doc: dict[str, Any] = {"format_version": FORMAT_VERSION, **cfg.to_dict(), "base_model": base_model}
    doc["quantization"] = extra.pop("quantization", None)
    doc.update(extra)
    json.dumps(doc)  # fail on a non-JSON extra value before any file is replaced

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    digest: list[str] = []

    def write_weights(tmp: str) -> None:
        save_file(flat, tmp, metadata={"format": "pt"})
        digest.append(file_sha256(tmp))  # hash what was written, not what we meant to write

    # Weights first, then the JSON holding their hash: a crash in between leaves a pair that
    # load_adapter reports as a mismatch instead of loading new weights under an old config.
    atomic_write(out / WEIGHTS_NAME, write_weights)
    doc[HASH_KEY] = digest[0]
    text = json.dumps(doc, indent=2, sort_keys=True)
    atomic_write(out / CONFIG_NAME, lambda p: Path(p).write_text(text + "\n"))
    return out


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (adapter files may be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def adapter_file(directory: Path, name: str) -> Path:
    """``directory / name``, refused unless it is a regular file that lives in ``directory``.

    A symbolic link (or a path resolving elsewhere) would let an adapter folder read any file
    on the machine, and would make the folder's hash and registry record describe a file the
    folder does not hold.

    Raises:
        AdapterLoadError: the file is missing, a symlink, or resolves outside ``directory``.
    """
    p = directory / name
    if p.is_symlink():
        raise AdapterLoadError(
            f"{p} is a symbolic link (to {os.readlink(p)}); adapter files must be regular files inside "
            f"{directory}: copy the real file there"
        )
    if not p.is_file():
        raise AdapterLoadError(f"adapter folder {directory} lacks {name}")
    if p.resolve().parent != directory.resolve():
        raise AdapterLoadError(
            f"{p} resolves to {p.resolve()}, outside the adapter folder {directory.resolve()}; "
            "copy the real file into the folder"
        )
    return p


def check_finite(tensors: dict[str, Tensor], path: Path) -> None:
    """Refuse NaN/Inf tensors: they would attach silently and poison every forward and merge.

    Raises:
        AdapterLoadError: naming every non-finite tensor key (the layer) and the file.
    """
    bad = [
        f"{k} ({int((~torch.isfinite(t)).sum())} of {t.numel()} values)"
        for k, t in sorted(tensors.items())
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]
    if bad:
        raise AdapterLoadError(
            f"{path}: non-finite (NaN/Inf) values in tensor(s) {', '.join(bad)}; the adapter diverged in "
            "training or the file is corrupt: re-train it or restore it from the registry"
        )


def _expected_shapes(local: set[str], cfg: AdapterConfig, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple]:
    """Shapes the config implies for one layer's tensors, given the free dimensions in the file."""
    if local == {"weight", "bias"}:  # dense head: free (d_out, d_in), bias d_out
        w = shapes["weight"]
        return {"weight": w if len(w) == 2 else (-1, -1), "bias": (w[0] if w else -1,)}
    if cfg.method == "kron" and local == {"A", "B1", "B2"}:
        b_out = shapes["B1"][0] if len(shapes["B1"]) == 2 else -1
        b_in = shapes["B2"][1] if len(shapes["B2"]) == 2 else -1
        return {"A": (cfg.a_out, cfg.a_in), "B1": (b_out, cfg.r), "B2": (cfg.r, b_in)}
    if cfg.method == "lora" and local == {"A", "B"}:
        d_in = shapes["A"][1] if len(shapes["A"]) == 2 else -1
        d_out = shapes["B"][0] if len(shapes["B"]) == 2 else -1
        return {"A": (cfg.r, d_in), "B": (d_out, cfg.r)}
    return {}


def check_tensor_shapes(tensors: dict[str, Tensor], cfg: AdapterConfig, path: Path) -> None:
    """Check every layer's tensors against ``cfg`` before any layer is built from it.

    A config whose a_out / a_in / r disagree with the stored factors (edited by hand, or paired
    with another save's weights) would otherwise build layers of the config's size first and
    fail, or worse load, afterwards.

    Raises:
        AdapterLoadError: one line per tensor whose shape does not follow from the config.
    """
    problems = []
    groups: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, t in tensors.items():
        layer, _, local = key.rpartition(".")
        groups.setdefault(layer, {})[local] = tuple(t.shape)
    for layer, shapes in sorted(groups.items()):
        # Incomplete or foreign layouts are left to the strict load, which names missing and
        # unexpected keys against the model's layers.
        expected = _expected_shapes(set(shapes), cfg, shapes)
        for local, want in expected.items():
            if shapes[local] != want:
                problems.append(
                    f"{layer}.{local}: shape {shapes[local]} but the config (method={cfg.method!r}, a_out={cfg.a_out}, "
                    f"a_in={cfg.a_in}, r={cfg.r}) implies {want}"
                )
    if problems:
        raise AdapterLoadError(
            f"{path} does not match its {CONFIG_NAME}:\n  " + "\n  ".join(problems)
            + "\n  the config or the weights were edited or come from another save: re-export the adapter "
            "or restore it from the registry"
        )


def _check_hash(meta: dict[str, Any], w_path: Path, cfg_path: Path) -> None:
    """Compare the weights file with the sha256 its config recorded (absent: pre-hash folder)."""
    global _warned_unhashed
    expected = meta.get(HASH_KEY)
    if expected is None:
        if not _warned_unhashed:
            _warned_unhashed = True
            _log.warning(
                "%s has no %s (written before kroncl recorded weight hashes); loading it unverified. "
                "Re-save it with save_adapter to add the hash.", cfg_path, HASH_KEY,
            )
        return
    actual = file_sha256(w_path)
    if actual != expected:
        raise AdapterLoadError(
            f"{w_path}: sha256 is {actual} but {cfg_path.name} records {HASH_KEY}={expected}; the weights file "
            "is corrupt or from another save (or a save was interrupted): re-export the adapter or restore "
            "the folder from the registry"
        )


def read_adapter(directory: str | os.PathLike) -> LoadedAdapter:
    """Read an adapter folder's files exactly as stored, after the file-level integrity checks.

    Checks both files are regular files inside the folder, the JSON, its format version and
    adapter config, and the weights' sha256; the tensors come back as stored (packed
    ``"<key>.qweight"`` / ``"<key>.scales"`` for a quantized file, which this package does not
    interpret). Use :func:`load_adapter` for a plain adapter and
    ``kroncl.quant.load_adapter_dequantized`` for any folder, quantized or not: both go on to
    check finiteness and shapes (:func:`checked_adapter`).

    Raises:
        AdapterLoadError: a file is missing, malformed, a symlink or outside the folder; the
            format version is newer than this code understands; the weights do not match the
            recorded sha256.
    """
    d = Path(directory)
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (d / n).is_file() and not (d / n).is_symlink()]
    if missing:
        raise AdapterLoadError(f"adapter folder {d} lacks {missing}; expected {CONFIG_NAME} and {WEIGHTS_NAME}")
    cfg_path, w_path = adapter_file(d, CONFIG_NAME), adapter_file(d, WEIGHTS_NAME)
    try:
        meta = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterLoadError(f"{cfg_path} is not valid JSON: {e}") from e
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise AdapterLoadError(
            f"{cfg_path}: format_version={version!r} is not supported (this kroncl reads 1..{FORMAT_VERSION})"
        )
    cfg_keys = set(AdapterConfig.__dataclass_fields__)
    try:
        cfg = AdapterConfig.from_dict({k: v for k, v in meta.items() if k in cfg_keys})
    except (AdapterConfigError, TypeError) as e:
        raise AdapterLoadError(f"{cfg_path}: {e}") from e
    if meta.get(HASH_KEY) is not None and not isinstance(meta[HASH_KEY], str):
        raise AdapterLoadError(f"{cfg_path}: {HASH_KEY}={meta[HASH_KEY]!r} must be a hex sha256 string")
    _check_hash(meta, w_path, cfg_path)
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise AdapterLoadError(f"{w_path} is not a readable safetensors file: {e}") from e
    return LoadedAdapter(tensors=tensors, config=cfg, meta=meta)


def checked_adapter(stored: LoadedAdapter, tensors: dict[str, Tensor], directory: str | os.PathLike) -> LoadedAdapter:
    """``stored`` with its float ``tensors`` in place of the stored ones, once they pass the checks.

    Every tensor must be finite (:func:`check_finite`) and its shape must follow from the config
    (:func:`check_tensor_shapes`). ``kroncl.quant`` calls this on the dequantized tensors.

    Raises:
        AdapterLoadError: a tensor is not finite or its shape does not follow from the config.
    """
    w_path = Path(directory) / WEIGHTS_NAME
    check_finite(tensors, w_path)
    check_tensor_shapes(tensors, stored.config, w_path)
    return LoadedAdapter(tensors=tensors, config=stored.config, meta=stored.meta)


def load_adapter(directory: str | os.PathLike, dtype: torch.dtype = torch.float32) -> LoadedAdapter:
    """Read a plain (not quantized) adapter folder written by :func:`save_adapter`.

    Args:
        directory: folder holding ``adapter.safetensors`` and ``adapter_config.json``.
        dtype: floating dtype of the returned tensors.

    Returns:
        ``LoadedAdapter`` with float tensors.

    Raises:
        AdapterLoadError: see :func:`read_adapter`; the folder is quantized (its config has a
            ``quantization`` entry: load it with ``kroncl.quant.load_adapter_dequantized``); a
            tensor is not finite or its shape does not follow from the config.
    """
    stored = read_adapter(directory)
    scheme = stored.meta.get("quantization")
    if scheme is not None:
        name = scheme.get("scheme") if isinstance(scheme, dict) else scheme
        raise AdapterLoadError(
            f"{Path(directory) / CONFIG_NAME}: the adapter is quantized (scheme {name!r}); kroncl.adapters reads "
            "plain adapters only: load it with kroncl.quant.load_adapter_dequantized(directory) (or "
            "kroncl.quant.load_adapter_dequantized_into(model, directory, name)), which dequantizes it"
        )
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in stored.tensors.items()}
    return checked_adapter(stored, tensors, directory)


def attach_adapter(
    model: torch.nn.Module, loaded: LoadedAdapter, name: str = "default", source: str | os.PathLike = ""
) -> LoadedAdapter:
    """Put the adapter ``loaded`` into ``model`` as set ``name`` (strictly) and return it.

    Injects the adapter layers first when ``model`` has none; otherwise adds set ``name`` to the
    existing layers (which must match the file's targets, method and A shape; the new set takes
    the file's own r and alpha, so it is scaled by its own alpha / r beside sets with others).

    Raises:
        AdapterLoadError: see ``inject.load_adapter_state_dict``.
    """
    from kroncl.adapters.inject import adapter_layers, inject_adapters, load_adapter_state_dict

    if not adapter_layers(model):
        inject_adapters(model, loaded.config, adapter_name=name)
    load_adapter_state_dict(model, loaded.tensors, name, strict=True, config=loaded.config, source=str(source))
    return loaded


def load_adapter_into(
    model: torch.nn.Module, directory: str | os.PathLike, name: str = "default", dtype: torch.dtype = torch.float32
) -> LoadedAdapter:
    """Load a plain adapter folder into ``model`` as set ``name`` (:func:`attach_adapter`).

    Raises:
        AdapterLoadError: see :func:`load_adapter` and ``inject.load_adapter_state_dict``.
    """
    return attach_adapter(model, load_adapter(directory, dtype=dtype), name, source=directory)
