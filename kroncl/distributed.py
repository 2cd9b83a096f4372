"""Data-parallel training over ``torch.distributed``, as launched by ``torchrun``.

One :class:`World` says which process this is and does the few collectives kroncl needs:

- :meth:`World.shard` — this rank's rows of a *global* mini-batch (rows ``rank::size``) and
  their share of it. Every rank iterates the same global batches, in the order a single process
  would (the same seeded DataLoader, replay's loader included), and keeps its own rows: the
  shards of a batch are disjoint and together are the whole batch, and
  ``train.batch_size`` / ``train.eval_batch_size`` stay the *global* sizes.
- :meth:`World.sum_gradients` — one all-reduce of the trainable adapter parameters' gradients
  (nothing else has any). Each rank scales its loss by its share, so the sum is the gradient of
  the global batch's mean loss, also for an uneven last batch; a rank with no row of a batch
  runs a placeholder row at share 0, so every rank makes the same collective calls.
- :meth:`World.sum`, :meth:`World.gather`, :meth:`World.broadcast` — evaluation counts, the
  predicted-answer tallies, and rank 0's start message.

Why not ``torch.nn.parallel.DistributedDataParallel`` or avalanche-lib's helpers: the trainable
parameters change every experience (a new adapter set), plugins run extra forwards (LwF's
teacher, EWC's importance pass), and weighting by rows needs the shares; DDP would be rebuilt
per experience and needs ``find_unused_parameters`` (avalanche hard-codes it to True, which
breaks with gradient checkpointing). Adapter gradients are small, so one flat all-reduce per
optimizer step costs little, and gradient checkpointing is unaffected.

Why not ``DistributedSampler``: it pads the last batch with repeated rows and reshuffles by
``seed + epoch``, so its global batches are not a single process's; sharding the global batch
keeps a 2-process run equal to a 1-process run with the same ``train.batch_size`` (up to float
summation order). The cost: every rank collates the whole global batch (cheap next to the
forward: rows are tokenized once and cached).

Every collective times out after ``train.collective_timeout_s``: a rank that died or hangs
makes the others fail with :class:`DistributedError` instead of waiting for ever (``torchrun``
also stops the job when a rank exits with an error).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from kroncl.errors import KronclError

T = TypeVar("T")


class DistributedError(KronclError, RuntimeError):
    """A collective failed or timed out: another rank died, hangs, or cannot be reached."""


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    timeout_s: float = 1800.0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, registry versions, MLflow, summaries."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    # ---- batches --------------------------------------------------------------------------
    def shard(self, batch: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """(this rank's rows of the global ``batch``, their share of its rows).

        Rows ``rank, rank + size, ...``; every tensor or list whose first dimension is the
        batch's row count is cut, other values are kept. A rank with no row gets the batch's
        first row and share 0.0 (its loss is multiplied by 0, its collectives still happen).
        """
        rows = len(batch["labels"])
        if not self.distributed:
            return batch, 1.0
        mine = list(range(self.rank, rows, self.size))
        share = len(mine) / rows if rows else 0.0
        index = mine or [0]
        return {key: _take_rows(value, index, rows) for key, value in batch.items()}, share

    # ---- collectives ----------------------------------------------------------------------
    def sum_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Replace every parameter's gradient by the sum over ranks (one flat all-reduce).

        A parameter without a gradient on every rank keeps ``grad=None`` (the optimizer skips
        it, as it would in one process); one with a gradient on some rank gets the sum, zeros
        counted for the others.
        """
        if not self.distributed or not params:
            return
        grads = [p.grad for p in params]
        flat = torch.cat([
            *(g.detach().reshape(-1).float() if g is not None else torch.zeros(p.numel(), device=p.device)
              for p, g in zip(params, grads)),
            torch.tensor([float(g is not None) for g in grads], device=params[0].device),
        ])
        self._collective("the gradient all-reduce", torch.distributed.all_reduce, flat)
        offset = 0
        present = flat[-len(params):]
        for i, p in enumerate(params):
            n = p.numel()
            if present[i] > 0:
                summed = flat[offset: offset + n].view(p.shape).to(p.dtype)
                if p.grad is None:
                    p.grad = summed.clone()
                else:
                    p.grad.copy_(summed)
            offset += n

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks of ``values`` (float64)."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self._device())
        self._collective("a sum over ranks", torch.distributed.all_reduce, tensor)
        return tensor.tolist()

    def gather(self, obj: T) -> list[T]:
        """``obj`` of every rank, in rank order (picklable objects)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.size
        self._collective("a gather of results", torch.distributed.all_gather_object, out, obj)
        return out

    def broadcast(self, obj: T | None = None) -> T:
        """Rank 0's ``obj`` on every rank (the others pass nothing)."""
        if not self.distributed:
            return obj  # type: ignore[return-value]
        box = [obj if self.is_main else None]
        self._collective("rank 0's broadcast", torch.distributed.broadcast_object_list, box, src=0)
        return box[0]

    def _device(self) -> torch.device:
        backend = torch.distributed.get_backend()
        return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")

    def _collective(self, what: str, op: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            op(*args, **kwargs)
        except (RuntimeError, ValueError) as exc:  # DistBackendError is a RuntimeError
            raise DistributedError(
                f"rank {self.rank} of {self.size}: {what} failed ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}). Another rank died or hangs (see its "
                f"log above), or did not answer within train.collective_timeout_s={self.timeout_s:g}; "
                "a run stopped this way resumes with resume=<run dir>"
            ) from exc


def _take_rows(value: Any, index: list[int], rows: int) -> Any:
    if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == rows:
        return value[index]
    if isinstance(value, list) and len(value) == rows:
        return [value[i] for i in index]
    return value


SINGLE = World()
"""The world of a process that is not part of a torchrun job."""


def world_from_env(timeout_s: float = 1800.0, device_type: str = "cpu") -> World:
    """The world torchrun describes in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT``), its process group initialised (gloo on CPU, nccl on CUDA,
    with ``timeout_s`` on every collective); :data:`SINGLE` without torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return SINGLE
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise DistributedError(
            f"WORLD_SIZE={size} but {', '.join(missing)} is not set: launch with "
            "`torchrun --nproc_per_node=N -m kroncl.run ...`, which sets them all"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if not torch.distributed.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        try:
            torch.distributed.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError) as exc:
            raise DistributedError(
                f"rank {os.environ['RANK']} of {size}: could not join the process group at "
                f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} ({exc}); check that every "
                "node runs torchrun with the same --rdzv-endpoint and --nnodes"
            ) from exc
    return World(torch.distributed.get_rank(), torch.distributed.get_world_size(), local_rank, timeout_s)


def leave(world: World, *, together: bool = True) -> None:
    """Destroy the process group ``world`` joined (no-op for :data:`SINGLE`).

    ``together`` (a normal end) first waits at a barrier for every rank: a rank destroying its
    gloo group while a peer still holds the connection could abort the process at exit
    ("terminate called without an active exception"). After an error there is no barrier: the
    peers may be dead, and waiting would only add a second timeout.
    """
    if not (world.distributed and torch.distributed.is_initialized()):
        return
    if together:
        try:
            torch.distributed.barrier()
        except (RuntimeError, ValueError):
            pass  # a peer is gone: leave anyway
    torch.distributed.destroy_process_group()
