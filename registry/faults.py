"""Fault injection for the registry: named points at which a test makes the process SIGKILL itself.

The registry imports nothing from ``kroncl`` (tests/test_layering.py), so it has its own hook, in
the format of :mod:`kroncl.faults` but read from its own variable (a spec meant for one never
trips the other's check of point names)::

    KRONCL_REGISTRY_FAULT="s3_upload:file=adapter_config.json"   # after that file's upload
    KRONCL_REGISTRY_FAULT="s3_publish:nth=2"                    # 2nd artifact, before its manifest

``POINT[:KEY=VALUE...]``: the process kills itself the first time code reaches
:func:`fault_point` ``POINT`` with every ``KEY`` equal (as text) to what the call site passes;
``nth=N`` waits for the N-th such hit. Unset (every real run), :func:`fault_point` returns after
one environment read.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "KRONCL_REGISTRY_FAULT"

POINTS: dict[str, str] = {
    "s3_upload": "after file `file` of an artifact is uploaded to its temporary key",
    "s3_publish": "after an artifact's files are copied to their objects/ keys, before its manifest",
}
"""Every fault point: name -> where it fires and which context keys it passes."""

_hits: dict[str, int] = {}


def fault_point(point: str, **context: object) -> None:
    """Kill this process with SIGKILL if ``$KRONCL_REGISTRY_FAULT`` names this point and context.

    Raises:
        ValueError: only while fault injection is on: an unknown point (here or in the spec) or
            a malformed ``KEY=VALUE`` / ``nth``.
    """
    text = os.environ.get(ENV_VAR)
    if not text:
        return
    if point not in POINTS:
        raise ValueError(f"fault_point({point!r}) is not listed in registry.faults.POINTS")
    name, *pairs = text.strip().split(":")
    if name not in POINTS:
        raise ValueError(f"{ENV_VAR}={text!r}: unknown point {name!r}; known: {', '.join(POINTS)}")
    match, nth = {}, 1
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or (key == "nth" and not value.isdigit()):
            raise ValueError(f"{ENV_VAR}={text!r}: {pair!r} is not KEY=VALUE (nth=a positive integer)")
        if key == "nth":
            nth = int(value)
        else:
            match[key] = value
    if name != point or any(str(context.get(k, object())) != v for k, v in match.items()):
        return
    _hits[text] = _hits.get(text, 0) + 1
    if _hits[text] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
