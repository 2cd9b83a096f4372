"""The task catalogue: where each known task lives on the hub and how its rows map to ours.

A task is picked by name (``stream.tasks=[piqa,arc_easy]``). Each :class:`TaskSpec` names either a
hub dataset with a per-row mapper from :mod:`kroncl.data.hub_schemas`, or a generator (the toy
tasks). Tasks not listed here load from a folder of JSONL files (see :mod:`kroncl.data.jsonl`).

Hub split use (``hub_splits``: our split <- hub split). The PIQA, HellaSwag and WinoGrande test
splits carry no labels, so their hub ``validation`` split serves as our test and our
validation is carved from train.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from kroncl.data import hub_schemas
from kroncl.data.example import MCExample
from kroncl.data.toy import toy_splits

__all__ = ["TaskSpec", "TASKS", "register_task", "task_names"]

RowMapper = Callable[[Mapping[str, Any], str], MCExample]
Generator = Callable[[int], dict[str, list[MCExample]]]


@dataclass(frozen=True)
class TaskSpec:
    """How to get one task.

    Attributes:
        name: catalogue name (also the folder name under ``data_dir``).
        hub_path: ``datasets.load_dataset`` path, e.g. ``allenai/ai2_arc``.
        hub_config: dataset config name, e.g. ``ARC-Challenge``; None for the default.
        hub_revision: git revision on the hub (``refs/convert/parquet`` for script datasets).
        hub_splits: our split -> hub split; splits not listed are carved.
        row_mapper: pure ``(hub_row, row_id) -> MCExample``.
        generator: ``seed -> {split: examples}`` for generated tasks (no hub, no files).
        description: one line for listings.
    """

    name: str
    hub_path: str | None = None
    hub_config: str | None = None
    hub_revision: str | None = None
    hub_splits: Mapping[str, str] = field(default_factory=dict)
    row_mapper: RowMapper | None = None
    generator: Generator | None = None
    description: str = ""

    @property
    def hub_label(self) -> str:
        return "/".join(p for p in (self.hub_path, self.hub_config) if p)


TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add ``spec`` to the catalogue.

    Raises:
        ValueError: the name is taken, or the spec has neither a hub source nor a generator.
    """
    if spec.name in TASKS:
        raise ValueError(f"task {spec.name!r} is already registered ({TASKS[spec.name].description})")
    if spec.generator is None and (spec.hub_path is None or spec.row_mapper is None or not spec.hub_splits):
        raise ValueError(f"task {spec.name!r} needs a generator, or hub_path + hub_splits + row_mapper")
    TASKS[spec.name] = spec
    return spec


def task_names() -> list[str]:
    """Catalogue task names, sorted."""
    return sorted(TASKS)


_ALL = {"train": "train", "validation": "validation", "test": "test"}
_DEV_AS_TEST = {"train": "train", "test": "validation"}

for _name, _config in (("arc_challenge", "ARC-Challenge"), ("arc_easy", "ARC-Easy")):
    register_task(TaskSpec(
        name=_name, hub_path="allenai/ai2_arc", hub_config=_config, hub_splits=_ALL,
        row_mapper=hub_schemas.arc_row, description=f"AI2 Reasoning Challenge ({_config}), 3-5 choices",
    ))
register_task(TaskSpec(
    name="openbookqa", hub_path="allenai/openbookqa", hub_config="main", hub_splits=_ALL,
    row_mapper=hub_schemas.openbookqa_row, description="OpenBookQA, 4 choices",
))
register_task(TaskSpec(
    # The default revision is a loading script, which datasets>=4 refuses; the hub's parquet
    # conversion names the config "default".
    name="piqa", hub_path="ybisk/piqa", hub_config="default", hub_revision="refs/convert/parquet",
    hub_splits=_DEV_AS_TEST, row_mapper=hub_schemas.piqa_row, description="PIQA physical commonsense, 2 choices",
))
register_task(TaskSpec(
    name="hellaswag", hub_path="Rowan/hellaswag", hub_splits=_DEV_AS_TEST,
    row_mapper=hub_schemas.hellaswag_row, description="HellaSwag sentence completion, 4 choices",
))
register_task(TaskSpec(
    # winogrande_xl: the full 40k-row training set; stream limits subsample it.
    name="winogrande", hub_path="allenai/winogrande", hub_config="winogrande_xl", hub_splits=_DEV_AS_TEST,
    row_mapper=hub_schemas.winogrande_row, description="WinoGrande pronoun resolution, 2 choices",
))
for _rule in ("larger", "smaller"):
    register_task(TaskSpec(
        name=f"toy_{_rule}", generator=partial(toy_splits, _rule),
        description=f"generated: 'Pick one: a or b', the {_rule} number is right",
    ))
