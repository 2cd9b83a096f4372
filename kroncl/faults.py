"""Fault injection: named points at which a test can make the process SIGKILL itself.

A crash test sets one environment variable and gets a crash at exactly the same place on every
machine, however fast or loaded it is (a test that kills "0.3 s after a log line" does not)::

    KRONCL_FAULT="train_step:exp=1:step=3"      # 3rd optimizer step of experience 1
    KRONCL_FAULT="during_atomic_write:file=adapter.safetensors:nth=3"
    KRONCL_FAULT="registry_publish:exp=0:bits=8"

The spec is ``POINT[:KEY=VALUE...]``: the process kills itself the first time code reaches
:func:`fault_point` ``POINT`` with every ``KEY`` equal (as text) to the value the call site
passes; ``nth=N`` waits for the N-th such hit instead. The points and the values each passes
are listed in :data:`POINTS`.

With ``KRONCL_FAULT`` unset (every real run), :func:`fault_point` returns at its first line: one
global read, no parsing, no allocation. This module imports nothing but the standard library,
so any layer can call it.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "KRONCL_FAULT"

POINTS: dict[str, str] = {
    "train_step": "after optimizer step `step` (1-based, counted per experience) of experience `exp`, on `rank` (0 in one process)",
    "after_save": "after experience `exp`'s fp32 adapter files are written, before registering",
    "registry_publish": "after the registry published the artifact of (`exp`, `bits`), before its row commits",
    "after_register": "after the registry committed the version of (`exp`, `bits`)",
    "before_checkpoint": "after experience `exp` was saved, registered and logged, before its checkpoint",
    "during_checkpoint": "after experience `exp`'s checkpoint is written under its temporary name, before the rename",
    "after_checkpoint": "after experience `exp`'s checkpoint is complete (LATEST points at it)",
    "during_atomic_write": "after a temporary file for `file` (a file name) is written, before it replaces the target",
    "before_finish": "after the last checkpoint, before the summary is written and the MLflow run ends",
}
"""Every fault point: name -> where it fires and which context keys it passes."""


class FaultSpecError(ValueError):
    """``KRONCL_FAULT`` names no known point or is not ``POINT[:KEY=VALUE...]``."""


class _Spec:
    def __init__(self, text: str) -> None:
        point, *pairs = text.strip().split(":")
        if point not in POINTS:
            raise FaultSpecError(
                f"{ENV_VAR}={text!r}: unknown fault point {point!r}; known points: {', '.join(POINTS)}"
            )
        self.point = point
        self.match: dict[str, str] = {}
        self.nth = 1
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise FaultSpecError(f"{ENV_VAR}={text!r}: {pair!r} is not KEY=VALUE")
            if key == "nth":
                if not value.isdigit() or int(value) < 1:
                    raise FaultSpecError(f"{ENV_VAR}={text!r}: nth={value!r} must be a positive integer")
                self.nth = int(value)
            else:
                self.match[key] = value
        self.hits = 0

    def matches(self, point: str, context: dict[str, object]) -> bool:
        if point != self.point:
            return False
        return all(key in context and str(context[key]) == value for key, value in self.match.items())


def _parse(text: str | None) -> _Spec | None:
    return _Spec(text) if text else None


_spec: _Spec | None = _parse(os.environ.get(ENV_VAR))


def fault_point(point: str, **context: object) -> None:
    """Kill this process with SIGKILL if ``KRONCL_FAULT`` names this point and context.

    Args:
        point: one of :data:`POINTS` (a call site naming an unknown point is a bug: it raises
            only while fault injection is on, so tests catch it).
        context: the values the spec's ``KEY=VALUE`` pairs are compared with.
    """
    spec = _spec
    if spec is None:
        return
    if point not in POINTS:
        raise FaultSpecError(f"fault_point({point!r}) is not listed in kroncl.faults.POINTS")
    if not spec.matches(point, context):
        return
    spec.hits += 1
    if spec.hits == spec.nth:
        os.kill(os.getpid(), signal.SIGKILL)


def configure(text: str | None) -> None:
    """Set (or with ``None`` clear) the fault spec of this process; tests of this module use it."""
    global _spec
    _spec = _parse(text)
