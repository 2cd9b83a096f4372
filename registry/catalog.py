"""Base models, tasks and adapters: get-or-create, get and list (functions of a session).

Names are validated by the store before a transaction starts; these functions only read and
write rows and return entities.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.entities import Adapter, BaseModel, Task
from registry.errors import Conflict
from registry.lookups import (
    adapter_entity,
    adapter_row,
    base_model_entity,
    base_model_row,
    task_entity,
    task_row,
    utcnow,
)
from registry.rows import SqlAdapter, SqlBaseModel, SqlTask


def register_base_model(
    s: Session, name: str, revision: str | None, description: str | None
) -> BaseModel:
    """Get or create; an existing unpinned model gets ``revision`` recorded (Conflict if
    it is pinned to another revision)."""
    row = s.scalar(select(SqlBaseModel).where(SqlBaseModel.name == name))
    if row is None:
        row = SqlBaseModel(
            name=name, revision=revision, description=description, created_at=utcnow()
        )
        s.add(row)
        s.flush()
    elif revision is not None:
        if row.revision is None:
            row.revision = revision
        elif row.revision != revision:
            raise Conflict(
                f"base model {name!r} is registered with revision {row.revision!r}, not "
                f"{revision!r}; register the other revision under a different name"
            )
    return base_model_entity(row)


def get_base_model(s: Session, name: str) -> BaseModel:
    return base_model_entity(base_model_row(s, name))


def list_base_models(s: Session) -> list[BaseModel]:
    return [
        base_model_entity(r) for r in s.scalars(select(SqlBaseModel).order_by(SqlBaseModel.name))
    ]


def register_task(s: Session, name: str, description: str | None) -> Task:
    row = s.scalar(select(SqlTask).where(SqlTask.name == name))
    if row is None:
        row = SqlTask(name=name, description=description, created_at=utcnow())
        s.add(row)
        s.flush()
    return task_entity(row)


def get_task(s: Session, name: str) -> Task:
    return task_entity(task_row(s, name))


def list_tasks(s: Session) -> list[Task]:
    return [task_entity(r) for r in s.scalars(select(SqlTask).order_by(SqlTask.name))]


def register_adapter(
    s: Session, name: str, task: str, base_model: str, description: str | None
) -> Adapter:
    """Get or create; Conflict when it exists for another task or base model."""
    row = s.scalar(select(SqlAdapter).where(SqlAdapter.name == name))
    if row is not None:
        if row.task.name != task or row.base_model.name != base_model:
            raise Conflict(
                f"adapter {name!r} exists for task {row.task.name!r} on base model "
                f"{row.base_model.name!r}, not task {task!r} on {base_model!r}; "
                "choose another adapter name"
            )
        return adapter_entity(row)
    task_r = task_row(s, task)
    model_r = base_model_row(s, base_model)
    row = SqlAdapter(
        name=name,
        task=task_r,
        base_model=model_r,
        description=description,
        created_at=utcnow(),
        last_version=0,
    )
    s.add(row)
    s.flush()
    return adapter_entity(row)


def get_adapter(s: Session, name: str) -> Adapter:
    return adapter_entity(adapter_row(s, name))


def list_adapters(s: Session, task: str | None, base_model: str | None) -> list[Adapter]:
    q = select(SqlAdapter).join(SqlAdapter.task).join(SqlAdapter.base_model)
    if task is not None:
        q = q.where(SqlTask.name == task)
    if base_model is not None:
        q = q.where(SqlBaseModel.name == base_model)
    return [adapter_entity(r) for r in s.scalars(q.order_by(SqlAdapter.name))]
