"""Errors of ``kroncl.data``; each message names the task, the bad value and what to change."""

from __future__ import annotations

from kroncl.errors import KronclError


class DataError(KronclError, ValueError):
    """A task or stream cannot be loaded as configured (unreachable source, malformed file,
    rows rejected under ``strict=True``, unknown task name, ...)."""


class TaskUnavailableError(DataError):
    """No source of a task could be reached: no local folder and the hub is unreachable.

    Attributes:
        task: the task name as the user wrote it.
        reason: one line saying what was tried and why it failed.
    """

    def __init__(self, task: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.task = task
        self.reason = reason
