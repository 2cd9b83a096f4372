"""Errors of ``kroncl.models``; each message names the bad value and the config key to change."""

from __future__ import annotations

from kroncl.errors import KronclError


class ModelLoadError(KronclError, OSError):
    """A base model or tokenizer cannot be loaded (hub unreachable, missing folder or package)."""


class ModelConfigError(KronclError, ValueError):
    """A ``model.*`` config value is invalid."""
