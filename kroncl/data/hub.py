"""Reaching the Hugging Face Hub quickly, or failing quickly.

``datasets.load_dataset`` and ``from_pretrained`` retry for a long time when the network is
down. Before either touches the network we send one HEAD request to the hub endpoint with a
short timeout (``KRONCL_HUB_TIMEOUT`` seconds, default 5); when it fails the caller raises its
own clear error naming the local-folder fix. In offline mode (``HF_HUB_OFFLINE=1``) no request is
made: the libraries then read their local cache and fail fast on a miss.
"""

from __future__ import annotations

import functools
import os

__all__ = ["hub_endpoint", "hub_offline", "hub_unreachable_reason", "HUB_TIMEOUT_S"]

HUB_TIMEOUT_S = 5.0


def hub_endpoint() -> str:
    """The hub URL the HF libraries use (``HF_ENDPOINT``, read at call time)."""
    env = os.environ.get("HF_ENDPOINT")
    if env:
        return env.rstrip("/")
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def hub_offline() -> bool:
    """Whether the HF libraries are in offline mode (they then read only their local cache)."""
    import datasets.config
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE or datasets.config.HF_HUB_OFFLINE)


def _timeout() -> float:
    raw = os.environ.get("KRONCL_HUB_TIMEOUT")
    if not raw:
        return HUB_TIMEOUT_S
    try:
        return max(0.1, float(raw))
    except ValueError:
        return HUB_TIMEOUT_S


def hub_unreachable_reason(endpoint: str | None = None, timeout: float | None = None) -> str | None:
    """Why the hub cannot be reached, or None when it answers (any HTTP status counts).

    The answer is remembered per (endpoint, timeout) for the life of the process, so checking
    every task of a stream costs one request.

    Args:
        endpoint: URL to probe; default :func:`hub_endpoint`.
        timeout: seconds for connect and read; default ``KRONCL_HUB_TIMEOUT`` or 5.
    """
    return _probe(endpoint or hub_endpoint(), _timeout() if timeout is None else timeout)


@functools.lru_cache(maxsize=8)
def _probe(endpoint: str, timeout: float) -> str | None:
    import httpx  # a dependency of huggingface_hub; honours HTTPS_PROXY like the HF libraries

    try:
        httpx.head(endpoint, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        return f"{endpoint} unreachable ({type(exc).__name__}: {exc or 'no answer'}, timeout {timeout:g}s)"
    return None
