"""Name rules and version references.

Names end up in SQL rows, CLI arguments and log lines, so each kind has one strict rule, checked
at the boundary (the store's public methods). None of them admits a path separator, ``..`` or a
leading dot, so no name can ever escape a directory it is joined onto.

A *version reference* is the string form used by the CLI and accepted by the store:

    ``ADAPTER``            the adapter's latest version
    ``ADAPTER:NUMBER``     one version by number, e.g. ``arc-easy:3``
    ``ADAPTER@ALIAS``      the version an alias points to, e.g. ``arc-easy@production``
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from registry.errors import InvalidName

NAME_RULE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""Adapters, tasks, aliases, tag keys: 1-128 chars, letters/digits/``._-``, first a letter/digit."""

BASE_MODEL_RULE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127})?$"
"""Base models may carry one ``org/`` prefix, as Hugging Face hub ids do."""

RELATION_RULE = r"^[a-z][a-z0-9_]{0,63}$"
"""Lineage relations are lower_snake_case words, e.g. ``continued_from``."""

_NAME_RE = re.compile(NAME_RULE)
_BASE_MODEL_RE = re.compile(BASE_MODEL_RULE)
_RELATION_RE = re.compile(RELATION_RULE)

MAX_VERSION_NUMBER = 2**31 - 1
"""Largest version number: the ``number`` column is a 32-bit INTEGER on PostgreSQL, and a larger
Python int would overflow SQLite's driver (``OverflowError``) instead of simply not matching."""

_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also accepts '²' and '٣'

LATEST = "latest"
"""Reserved alias that always resolves to the adapter's highest version number."""


def _check(value: object, pattern: re.Pattern[str], rule: str, kind: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidName(f"invalid {kind} {value!r}: must match {rule}")
    return value


def validate_name(value: object, kind: str = "name") -> str:
    """Check an adapter, task, alias or tag-key name.

    Args:
        value: the candidate name.
        kind: what the name is for, used in the error message (e.g. ``"adapter name"``).

    Returns:
        ``value`` unchanged.

    Raises:
        InvalidName: naming the value and :data:`NAME_RULE`.

    >>> validate_name("arc-easy_v2")
    'arc-easy_v2'
    """
    return _check(value, _NAME_RE, NAME_RULE, kind)


def validate_base_model_name(value: object) -> str:
    """Check a base model name (``name`` or ``org/name``); raises InvalidName otherwise."""
    return _check(value, _BASE_MODEL_RE, BASE_MODEL_RULE, "base model name")


def validate_relation(value: object) -> str:
    """Check a lineage relation name; raises InvalidName otherwise."""
    return _check(value, _RELATION_RE, RELATION_RULE, "lineage relation")


@dataclass(frozen=True)
class VersionRef:
    """A parsed version reference: exactly one of ``number`` / ``alias`` is set.

    ``ADAPTER`` alone parses to ``alias="latest"``.
    """

    adapter: str
    number: int | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        """Reject numbers no version can have, so no query is ever sent with them."""
        n = self.number
        if n is None:
            return
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_VERSION_NUMBER:
            raise InvalidName(
                f"invalid version number {n!r} for adapter {self.adapter!r}: "
                f"expected an integer in 1..{MAX_VERSION_NUMBER}"
            )

    def __str__(self) -> str:
        if self.number is not None:
            return f"{self.adapter}:{self.number}"
        return f"{self.adapter}@{self.alias}"


def parse_ref(text: str) -> VersionRef:
    """Parse ``ADAPTER``, ``ADAPTER:NUMBER`` or ``ADAPTER@ALIAS``.

    Args:
        text: the reference string.

    Returns:
        The parsed reference, names validated.

    Raises:
        InvalidName: when a part breaks its rule or the number is not a positive integer.

    >>> parse_ref("arc-easy:3")
    VersionRef(adapter='arc-easy', number=3, alias=None)
    >>> parse_ref("arc-easy")
    VersionRef(adapter='arc-easy', number=None, alias='latest')
    """
    if not isinstance(text, str):
        raise InvalidName(f"invalid version reference {text!r}: expected a string")
    if ":" in text:
        adapter, _, number = text.partition(":")
        if (
            not _DIGITS.fullmatch(number)
            or len(number) > len(str(MAX_VERSION_NUMBER))
            or not 1 <= int(number) <= MAX_VERSION_NUMBER
        ):
            raise InvalidName(
                f"invalid version reference {text!r}: the part after ':' must be a version "
                f"number in 1..{MAX_VERSION_NUMBER} in ASCII digits "
                "(use ADAPTER:NUMBER or ADAPTER@ALIAS)"
            )
        return VersionRef(validate_name(adapter, "adapter name"), number=int(number))
    if "@" in text:
        adapter, _, alias = text.partition("@")
        return VersionRef(
            validate_name(adapter, "adapter name"), alias=validate_name(alias, "alias")
        )
    return VersionRef(validate_name(text, "adapter name"), alias=LATEST)


RUN_TAG = "kroncl.run"
"""Version tag holding the id of the training run that made it (the pipeline sets it)."""
