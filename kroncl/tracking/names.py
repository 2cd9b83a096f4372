"""Turning arbitrary names, configs and metric values into what MLflow accepts."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

# Limits from mlflow/utils/validation.py (MLflow 3.x).
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

# MLflow allows [/\w.\- :] on POSIX servers but not ':' on Windows ones; stay portable.
_INVALID_CHARS = re.compile(r"[^/\w.\- ]")


def sanitize_name(name: str) -> str:
    """Make ``name`` a valid MLflow metric/param/tag key.

    Characters outside ``[A-Za-z0-9_./\\- ]`` become ``_``; empty, ``.`` and ``..`` path
    segments are dropped or replaced (MLflow rejects keys that ``normpath`` would change); the
    result is cut to MLflow's 250-character limit. Avalanche names such as
    ``Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp000`` pass through unchanged.

    >>> sanitize_name("acc/arc:easy")
    'acc/arc_easy'
    >>> sanitize_name("/a//b/../c/")
    'a/b/_/c'
    """
    cleaned = _INVALID_CHARS.sub("_", str(name))[:MAX_KEY_LENGTH]
    parts = [("_" if p in (".", "..") else p) for p in cleaned.split("/") if p]
    return "/".join(parts) or "_"


def redact_uri(uri: str) -> str:
    """``uri`` with any password in its user-info replaced by ``***`` (safe to write to files).

    >>> redact_uri("http://bob:s3cret@mlflow:5000")
    'http://bob:***@mlflow:5000'
    """
    return re.sub(r"^([a-zA-Z][\w+.-]*://[^:/@]*):[^@/]*@", r"\1:***@", uri)


def truncate(value: str, limit: int) -> str:
    """Cut ``value`` to ``limit`` characters, ending with ``...`` when something was cut."""
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _param_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (list, tuple)):
        return json.dumps([_jsonable(v) for v in value])
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def flatten_config(config: Any, prefix: str = "", sep: str = ".") -> dict[str, str]:
    """Flatten a nested config into MLflow params: ``{"train.lr": "0.002", ...}``.

    Args:
        config: a mapping (dict, OmegaConf ``DictConfig``) or a dataclass instance; nested
            mappings/dataclasses become dotted keys, lists of mappings get index keys
            (``plugins.0.name``), other lists are JSON strings.
        prefix: key prefix, used by the recursion.
        sep: separator between key levels.

    Returns:
        Sanitised keys -> string values cut to MLflow's 6000-character limit.
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    if not isinstance(config, Mapping):
        raise TypeError(f"flatten_config expects a mapping or dataclass, got {type(config).__name__}")
    out: dict[str, str] = {}
    for key, value in config.items():
        full = f"{prefix}{sep}{key}" if prefix else str(key)
        if dataclasses.is_dataclass(value) and not isinstance(value, type) or isinstance(value, Mapping):
            out.update(flatten_config(value, full, sep))
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
            for i, item in enumerate(value):
                out.update(flatten_config(item, f"{full}{sep}{i}", sep))
        else:
            out[sanitize_name(full)] = truncate(_param_string(value), MAX_PARAM_VALUE_LENGTH)
    return out


def scalar_value(value: Any) -> float | None:
    """The float in ``value`` if it is a scalar metric, else ``None``.

    Accepts Python/NumPy numbers and one-element tensors/arrays (anything with ``numel()`` or
    ``size`` equal to 1 and an ``item()``); ``None``, strings, images, figures, dicts and larger
    tensors give ``None`` (the caller skips them).
    """
    if value is None or isinstance(value, (str, bytes)):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    item = getattr(value, "item", None)
    if item is None:
        return None
    numel = getattr(value, "numel", None)
    size = numel() if callable(numel) else getattr(value, "size", None)
    if size != 1:
        return None
    try:
        out = item()
    except (TypeError, ValueError, RuntimeError):
        return None
    return float(out) if isinstance(out, numbers.Real) else None


def json_safe_number(value: float) -> float | str:
    """Finite floats as is; NaN/inf as the strings ``"nan"``, ``"inf"``, ``"-inf"`` (strict JSON)."""
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def tag_values(tags) -> dict[str, str]:
    """MLflow-safe tag names and values (stringified, cut to MLflow's length limit)."""
    return {sanitize_name(k): truncate(str(v), MAX_TAG_VALUE_LENGTH) for k, v in (tags or {}).items()}
