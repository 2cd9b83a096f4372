"""Type checks of config values against a dataclass's annotations, before any range check.

Hydra parses ``train.lr=abc`` as the string ``'abc'`` and ``train.epochs=1.5`` as a float and
hands both on unchanged; a dataclass does not check its annotations, so without this the first
fails later with a ``TypeError`` traceback and the second passes validation and breaks training.
Each problem becomes one line naming the override and a value of the right type to write.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

__all__ = ["check_types", "describe_type", "shown"]


def _allowed(annotation: Any) -> tuple[set[type], bool]:
    """(base types, whether None is allowed) of an annotation like ``int``, ``float | None``,
    ``list[str]``, ``bool | str``; an empty set means "not checked" (``Any``)."""
    is_union = isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
    args = typing.get_args(annotation) if is_union else (annotation,)
    bases = {typing.get_origin(a) or a for a in args if a is not type(None)}
    if typing.Any in bases:
        return set(), True
    return {b for b in bases if isinstance(b, type)}, type(None) in args


def _matches(value: Any, base: type) -> bool:
    """Whether ``value`` is acceptable for ``base``: a bool is never a number, and an int is
    a valid float (YAML and Hydra write ``1`` for ``1.0``)."""
    if base is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if base is float:
        return isinstance(value, (int, float))
    if base is list:
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    return isinstance(value, base)


def describe_type(bases: set[type], nullable: bool) -> str:
    """What to write, in the user's words (``a whole number``, ``true or false``...)."""
    words = {int: "a whole number", float: "a number", bool: "true or false", str: "a string",
             list: "a list of names"}
    parts = [words.get(b, b.__name__) for b in sorted(bases, key=lambda b: list(words).index(b)
                                                       if b in words else 99)]
    if nullable:
        parts.append("null")
    return " or ".join(parts)


def shown(value: Any) -> str:
    """A value as it is written in an override: ``true``/``null``, strings quoted."""
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else repr(value)


def _example(key: str, field: dataclasses.Field, value: Any) -> str:
    """``e.g. train.lr=0.003`` from the field's default, when it has a plain one (a lone
    name for a list field becomes ``[name]``)."""
    if isinstance(value, str) and field.default_factory is list:
        return f", e.g. {key}=[{value}]"
    default = field.default
    if default is dataclasses.MISSING or default is None:
        return ""
    if isinstance(default, str) and (not default or not default.isprintable()):
        return ""  # an empty or multi-line string is no readable example
    text = str(default).lower() if isinstance(default, bool) else str(default)
    return f", e.g. {key}={text}"


def check_types(cls: type, node: dict[str, Any], prefix: str, errors: list[str]) -> dict[str, Any]:
    """Check every value of ``node`` against ``cls``'s field annotations.

    Appends one message per bad value to ``errors`` and returns a copy of ``node`` where bad
    values are dropped (so the dataclass gets its default and the range checks that follow do
    not crash comparing ``'abc' <= 0``).
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for name, value in node.items():
        if name not in fields:
            out[name] = value
            continue
        bases, nullable = _allowed(hints[name])
        if not bases or (value is None and nullable) or any(_matches(value, b) for b in bases):
            out[name] = value  # an int stays an int: messages and saved configs show what was written
            continue
        key = f"{prefix}.{name}"
        what = describe_type(bases, nullable)
        errors.append(f"{key}={shown(value)} must be {what}{_example(key, fields[name], value)}")
    return out


def build_checked(cls: type, node: dict[str, Any], prefix: str) -> tuple[Any, list[str]]:
    """``cls(**node)`` with types checked first, and every problem: type errors, then the
    range checks of ``cls.problems()`` for the keys whose type was right (a value of the wrong
    type was dropped, so its range check would judge the default instead)."""
    type_errors: list[str] = []
    cfg = cls(**check_types(cls, node, prefix, type_errors))
    bad = {e.split("=", 1)[0] for e in type_errors}
    return cfg, type_errors + [e for e in cfg.problems() if e.split("=", 1)[0] not in bad]
