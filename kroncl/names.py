"""The name rule of registered things (tasks, adapters), checked before a run trains.

Every task of a stream is registered at the end of its experience under its name; a name the
registry rejects would fail only then, after the training was done. So the stream config checks
task names up front with the same rule.

This is a copy of ``NAME_RULE`` in ``registry/names.py`` (``validate_name``): kroncl must not
import the registry package. ``tests/data/test_task_names.py`` checks that both accept and
reject the same names; change them together.
"""

from __future__ import annotations

import re

__all__ = ["NAME_RULE", "name_problem"]

NAME_RULE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""Same as ``registry.names.NAME_RULE``: 1-128 chars of letters, digits, ``._-``; first a letter or digit."""

_NAME_RE = re.compile(NAME_RULE)


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a registered name, in words (None when it can).

    Stricter than the registry in one way: ``..`` is refused too, so a name joined onto a folder
    can never step out of it.
    """
    if not isinstance(name, str) or not name:
        return "a name must be a non-empty string"
    if "/" in name or "\\" in name or ".." in name:
        return "a name cannot contain '/', '\\' or '..'"
    if len(name) > 128:
        return f"a name has at most 128 characters ({len(name)} given)"
    if not _NAME_RE.fullmatch(name):
        return "a name uses only letters, digits, '.', '_' and '-', and starts with a letter or digit"
    return None
