"""Task names are checked before training with the registry's name rule (kroncl.names).

kroncl may not import the registry, so it keeps a copy of the rule; this test holds the two
together on a sample of names: what one accepts, the other accepts.
"""

from __future__ import annotations

import pytest

from kroncl.data import DataError, StreamConfig
from kroncl.names import NAME_RULE, name_problem

SAMPLE = [
    "arc_easy", "toy-larger", "piqa", "A", "9lives", "v1.2", "a" * 128, "a" * 129, "my task", "", " ",
    ".hidden", "-dash", "_under", "a/b", "a\\b", "naïve", "tab\there", "x@y", "ok:3", "end.", "a..b",
    "..", ".", "UPPER_lower-0.9",
]


def test_the_rule_is_the_registry_rule():
    from registry.names import NAME_RULE as REGISTRY_RULE

    assert NAME_RULE == REGISTRY_RULE


@pytest.mark.parametrize("name", SAMPLE)
def test_kroncl_and_the_registry_agree(name):
    from registry.errors import InvalidName
    from registry.names import validate_name

    try:
        validate_name(name)
        registry_ok = True
    except InvalidName:
        registry_ok = False
    kroncl_ok = name_problem(name) is None
    if ".." in name:  # kroncl is stricter: '..' is never a name (no stepping out of a folder)
        assert not kroncl_ok
    else:
        assert kroncl_ok == registry_ok, (name, name_problem(name))


def test_a_bad_task_name_fails_at_validation_naming_task_and_rule():
    with pytest.raises(DataError) as info:
        StreamConfig.from_mapping({"name": "s", "tasks": ["arc_easy", "my task"]})
    assert str(info.value) == (
        "invalid stream config: stream.tasks: task 'my task' cannot be registered: a name uses only letters, "
        f"digits, '.', '_' and '-', and starts with a letter or digit (rule {NAME_RULE}); rename it, e.g. 'my_task'")


@pytest.mark.parametrize(("task", "why"), [
    ("a..b", "a name cannot contain '/', '\\' or '..'"),
    ("x" * 129, "a name has at most 128 characters (129 given)"),
    ("-dash", "starts with a letter or digit"),
])
def test_each_rule_is_named(task, why):
    with pytest.raises(DataError, match="stream.tasks: task") as info:
        StreamConfig(name="s", tasks=[task]).validate()
    assert why in str(info.value)


def test_a_task_folder_path_is_judged_by_its_folder_name(tmp_path):
    """A path task is registered under its folder's name: that name must follow the rule."""
    StreamConfig(name="s", tasks=[str(tmp_path / "mytask"), "../data/arc_easy"]).validate()
    with pytest.raises(DataError) as info:
        StreamConfig(name="s", tasks=[str(tmp_path / "my task"), "data/.."]).validate()
    msg = str(info.value)
    assert f"task '{tmp_path / 'my task'}' (folder name 'my task') cannot be registered" in msg
    assert "rename the folder, e.g. 'my_task'" in msg
    assert "task 'data/..' (folder name '..') cannot be registered: a name cannot contain" in msg
