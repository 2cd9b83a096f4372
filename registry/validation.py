"""Pure validators of user-supplied fields, run before any file is written or row touched.

Each returns the normalised value (e.g. metrics as floats, config after a JSON round trip) or
raises :class:`InvalidName` / :class:`InvalidValue` with a message naming the rule.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from registry.errors import InvalidName, InvalidValue
from registry.names import LATEST, validate_name

METHOD_RULE = r"^[a-z][a-z0-9_]{0,31}$"
METRIC_RULE = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$"
RUN_ID_RULE = r"^[A-Za-z0-9_-]{1,64}$"
MAX_TAG_VALUE = 1024


def _validated_alias(alias: object) -> str:
    name = validate_name(alias, "alias")
    if name == LATEST:
        raise InvalidName(
            f"alias {LATEST!r} is reserved: it always resolves to the adapter's highest version "
            "number; choose another alias name"
        )
    return name


def _validated_metric_name(name: object) -> str:
    if not isinstance(name, str) or not re.fullmatch(METRIC_RULE, name):
        raise InvalidName(f"invalid metric name {name!r}: must match {METRIC_RULE}")
    return name


def _validated_metrics(metrics: Mapping[str, float] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in (metrics or {}).items():
        _validated_metric_name(name)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise InvalidValue(f"metric {name!r} has value {value!r}: expected a finite number")
        out[name] = float(value)
    return out


def _validated_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (tags or {}).items():
        validate_name(key, "tag key")
        if not isinstance(value, str) or len(value) > MAX_TAG_VALUE:
            raise InvalidValue(
                f"tag {key!r} has value {value!r}: "
                f"expected a string of at most {MAX_TAG_VALUE} chars"
            )
        out[key] = value
    return out


def _validated_run_id(run_id: str | None) -> str | None:
    if run_id is not None and not re.fullmatch(RUN_ID_RULE, str(run_id)):
        raise InvalidValue(f"invalid MLflow run id {run_id!r}: must match {RUN_ID_RULE}")
    return run_id


def _positive_int(name: str, value: object, *, allow_zero: bool = False) -> int | None:
    if value is None:
        return None
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidValue(f"{name}={value!r}: expected an int >= {low} or None")
    return value


def _validated_base_model_revision(revision: str | None) -> str | None:
    if revision is not None and (not isinstance(revision, str) or not 0 < len(revision) <= 256):
        raise InvalidValue(f"invalid base model revision {revision!r}: expected 1-256 characters")
    return revision


def _validated_version_fields(
    *,
    method: str,
    bits: int,
    a_out: int | None,
    a_in: int | None,
    r: int | None,
    alpha: float | None,
    param_count: int | None,
    metrics: Mapping[str, float] | None,
    config: Mapping[str, Any] | None,
    mlflow_run_id: str | None,
    tags: Mapping[str, str] | None,
) -> dict[str, Any]:
    """Check every user-supplied version field before any file is written."""
    if not isinstance(method, str) or not re.fullmatch(METHOD_RULE, method):
        raise InvalidName(
            f"invalid method {method!r}: must match {METHOD_RULE} (e.g. 'kron', 'lora')"
        )
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 64:
        raise InvalidValue(f"bits={bits!r}: expected an int in 1..64 (e.g. 32, 16, 8, 4)")
    if alpha is not None and (
        isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha)
    ):
        raise InvalidValue(f"alpha={alpha!r}: expected a finite number or None")
    _validated_run_id(mlflow_run_id)
    cfg = dict(config or {})
    try:
        # Round trip: what comes back from the database must equal what was passed in.
        cfg = json.loads(json.dumps(cfg, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise InvalidValue(f"config is not JSON-serialisable without NaN/inf: {e}") from e
    return {
        "method": method,
        "bits": bits,
        "a_out": _positive_int("a_out", a_out),
        "a_in": _positive_int("a_in", a_in),
        "r": _positive_int("r", r),
        "alpha": float(alpha) if alpha is not None else None,
        "param_count": _positive_int("param_count", param_count, allow_zero=True),
        "metrics": _validated_metrics(metrics),
        "config": cfg,
        "mlflow_run_id": mlflow_run_id,
        "tags": _validated_tags(tags),
    }
