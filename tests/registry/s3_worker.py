"""Writers for the object-store tests (a plain module: spawned processes and ``python FILE``
subprocesses import it). Each opens its own :class:`S3ArtifactStore` with its own cache folder,
as a writer on another machine would: nothing but the bucket is shared."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def write_artifact(src: Path, content: str) -> Path:
    """An adapter-like folder: two files, the weights holding ``content``."""
    src.mkdir(parents=True, exist_ok=True)
    (src / "adapter.safetensors").write_bytes(content.encode() * 64)
    (src / "adapter_config.json").write_text('{"r": 4}')
    return src


def put(uri: str, endpoint: str, cache: str, src: str) -> dict[str, Any]:
    from registry.s3store import S3ArtifactStore

    store = S3ArtifactStore(uri, endpoint_url=endpoint, cache_dir=cache, sweep=False)
    stored = store.put(src)
    return {"sha256": stored.sha256, "location": stored.location, "created": stored.created}


def racing_put(
    uri: str, endpoint: str, cache: str, src: str, worker: int, barrier: Any, results: Any
) -> None:
    """Wait for every writer, then publish; put ``(worker, result)`` or ``(worker, error)``."""
    try:
        barrier.wait(timeout=120)
        results.put((worker, put(uri, endpoint, cache, src)))
    except BaseException as e:  # reported to the test, which fails naming it
        results.put((worker, f"{type(e).__name__}: {e}"))


if __name__ == "__main__":  # python s3_worker.py URI ENDPOINT CACHE SRC  (prints the result)
    print(json.dumps(put(*sys.argv[1:5])))
