"""Searching versions by adapter, task, base model, method, bits, tags, metric bounds and
MLflow run id (one query; results ordered by adapter name then number)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from registry.entities import AdapterVersion
from registry.errors import InvalidValue
from registry.lookups import adapter_row, base_model_row, task_row, version_entities
from registry.rows import SqlAdapter, SqlAdapterVersion, SqlBaseModel, SqlTask, SqlVersionTag
from registry.validation import _validated_metric_name

Run = Callable[..., Any]  # Sessions.run: run(fn, *, write=True)
Bound = tuple[str, float | None, float | None]


def search_versions(
    run: Run,
    *,
    adapter: str | None = None,
    task: str | None = None,
    base_model: str | None = None,
    method: str | None = None,
    bits: int | None = None,
    tags: Mapping[str, str | None] | None = None,
    metric: str | None = None,
    min_value: float | None = None,
    max_value: float | None = None,
    min_metrics: Mapping[str, float] | None = None,
    mlflow_run_id: str | None = None,
    limit: int | None = None,
) -> list[AdapterVersion]:
    """Versions matching every given filter, ordered by adapter name then number.

    Args:
        adapter, task, base_model, method, bits, mlflow_run_id: exact matches.
        tags: key -> value that must all be set (value ``None``: the key only).
        metric: metric name for ``min_value`` / ``max_value`` (inclusive bounds); versions
            without the metric never match a bound.
        min_metrics: more lower bounds, name -> minimum.
        limit: at most this many results.

    Raises:
        NotFound: ``adapter``, ``task`` or ``base_model`` names nothing registered (a typo
            would otherwise look like an empty result).
        InvalidValue: a bound without ``metric``.
    """
    bounds = metric_bounds(metric, min_value, max_value, min_metrics)
    return run(
        lambda s: search(
            s,
            adapter=adapter,
            task=task,
            base_model=base_model,
            method=method,
            bits=bits,
            tags=tags,
            bounds=bounds,
            mlflow_run_id=mlflow_run_id,
            limit=limit,
        ),
        write=False,
    )


def metric_bounds(
    metric: str | None,
    min_value: float | None,
    max_value: float | None,
    min_metrics: Mapping[str, float] | None,
) -> list[Bound]:
    """``(metric, low, high)`` bounds for :func:`search`, names validated."""
    if (min_value is not None or max_value is not None) and metric is None:
        raise InvalidValue("min_value/max_value need metric= naming the metric to compare")
    bounds: list[Bound] = []
    if metric is not None:
        bounds.append((_validated_metric_name(metric), min_value, max_value))
    for name, lo in (min_metrics or {}).items():
        bounds.append((_validated_metric_name(name), float(lo), None))
    return bounds


def search(
    s: Session,
    *,
    adapter: str | None,
    task: str | None,
    base_model: str | None,
    method: str | None,
    bits: int | None,
    tags: Mapping[str, str | None] | None,
    bounds: Sequence[Bound],
    mlflow_run_id: str | None,
    limit: int | None,
) -> list[AdapterVersion]:
    """Versions matching every filter, by adapter name then number (NotFound for unknown
    adapter/task/base model names)."""
    if adapter is not None:
        adapter_row(s, adapter)
    if task is not None:
        task_row(s, task)
    if base_model is not None:
        base_model_row(s, base_model)
    V = SqlAdapterVersion
    q = select(V).join(V.adapter).join(SqlAdapter.task).join(SqlAdapter.base_model)
    equal = ((SqlAdapter.name, adapter), (SqlTask.name, task), (SqlBaseModel.name, base_model),
             (V.method, method), (V.bits, bits), (V.mlflow_run_id, mlflow_run_id))
    for column, value in equal:
        if value is not None:
            q = q.where(column == value)
    for key, value in (tags or {}).items():
        cond = [SqlVersionTag.version_id == V.id, SqlVersionTag.key == key]
        if value is not None:
            cond.append(SqlVersionTag.value == value)
        q = q.where(exists().where(*cond))
    for name, lo, hi in bounds:
        val = V.metrics[name].as_float()
        if lo is not None:
            q = q.where(val >= lo)
        if hi is not None:
            q = q.where(val <= hi)
    q = q.order_by(SqlAdapter.name, V.number)
    if limit is not None:
        q = q.limit(limit)
    return version_entities(s, s.scalars(q).unique().all())
