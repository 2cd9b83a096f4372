"""8 processes register 50 versions each of one adapter: versions 1..400, no gaps, no duplicates.

The processes start together on an EMPTY database, so they also race to run the migration and to
get-or-create the base model, task and adapter.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from pathlib import Path

from registry import RegistryStore

sys.path.insert(0, str(Path(__file__).resolve().parent))  # spawned children inherit sys.path
import registry_concurrency_worker as worker  # noqa: E402

WORKERS = 8
PER_WORKER = 50


def test_concurrent_registration_allocates_contiguous_unique_numbers(
    backend_url: str, tmp_path: Path
) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    artifact_root = str(tmp_path / "artifacts")
    procs = [
        ctx.Process(
            target=worker.register_many,
            args=(
                backend_url,
                artifact_root,
                str(tmp_path / "scratch"),
                w,
                PER_WORKER,
                barrier,
                results,
            ),
        )
        for w in range(WORKERS)
    ]
    start = time.monotonic()
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=240) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    elapsed = time.monotonic() - start

    errors = {w: o for w, o in outcomes.items() if isinstance(o, str)}
    assert not errors, errors
    allocated = sorted(n for numbers in outcomes.values() for n in numbers)
    assert allocated == list(range(1, WORKERS * PER_WORKER + 1))
    for numbers in outcomes.values():
        assert numbers == sorted(numbers)  # each worker sees its own versions in order
    # The writers really overlapped: some worker's numbers are not one contiguous block.
    assert any(n[-1] - n[0] != PER_WORKER - 1 for n in outcomes.values())

    with RegistryStore(backend_url, artifact_root) as store:
        stored = store.list_versions("shared")
        assert [v.number for v in stored] == list(range(1, WORKERS * PER_WORKER + 1))
        assert store.get_adapter("shared").latest_version == WORKERS * PER_WORKER
        assert store.get_version("shared").number == WORKERS * PER_WORKER
        per_worker = {
            w: [v.number for v in stored if v.tags["worker"] == str(w)] for w in range(WORKERS)
        }
        assert per_worker == {w: outcomes[w] for w in range(WORKERS)}
        assert all(r.ok for r in store.verify())
    assert elapsed < 120, f"took {elapsed:.0f}s"
