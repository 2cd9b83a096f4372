"""Worker for the concurrency tests (a plain module, so spawned processes can import it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def register_many(
    url: str, artifact_root: str, scratch: str, worker: int, count: int, barrier: Any, results: Any
) -> None:
    """Open the registry (racing the others to migrate and create the records), then register
    ``count`` versions of the shared adapter; put ``(worker, numbers)`` or ``(worker, error)``."""
    try:
        from registry import RegistryStore

        barrier.wait(timeout=120)
        store = RegistryStore(url, artifact_root)
        store.register_base_model("org/tiny-bert")
        store.register_task("arc-easy")
        store.register_adapter("shared", "arc-easy", "org/tiny-bert")
        numbers = []
        for i in range(count):
            d = Path(scratch) / f"w{worker}-{i}"
            d.mkdir(parents=True)
            # Every 10th artifact has the same bytes in all workers: concurrent dedup of one hash.
            payload = b"common" if i % 10 == 0 else f"worker {worker} item {i}".encode()
            (d / "adapter.safetensors").write_bytes(payload)
            v = store.register_version(
                "shared",
                d,
                method="kron",
                bits=8,
                metrics={"acc": i / count},
                tags={"worker": str(worker)},
            )
            numbers.append(v.number)
        store.close()
        results.put((worker, numbers))
    except BaseException as e:  # report, don't hang the parent
        results.put((worker, f"{type(e).__name__}: {e}"))
