"""How the main job's processes agree under torchrun: rank 0 decides, the others follow.

Rank 0 alone opens the run directory (lock, ``run.json``, resume), the registry and MLflow, and
reads the checkpoint; then it sends one :class:`StartMessage` to the other ranks: train from this
checkpoint (``None``: from the start), or stop (the run is finished, or rank 0 failed before
training, with its reason). The others never read or write the run directory, so they need no
shared filesystem with rank 0 and cannot race it. Every rank then checks that it starts from
the same weights (:func:`check_same_start`) before the first collective of training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from kroncl.distributed import DistributedError, World


@dataclass
class StartMessage:
    """What rank 0 tells the other ranks before training."""

    train: bool
    checkpoint: Any = None
    """The checkpoint to resume from (``kroncl.strategy.checkpoint.Checkpoint``) or None."""
    reason: str = ""
    """Why not to train: empty for a finished run, else rank 0's error."""


class StartSender:
    """Rank 0's side: sends exactly one :class:`StartMessage` (nothing in one process)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.sent = False

    def send(self, message: StartMessage) -> None:
        if self.world.distributed and not self.sent:
            self.sent = True
            self.world.broadcast(message)

    def train(self, checkpoint) -> None:
        self.send(StartMessage(True, checkpoint))

    def stop(self, reason: str = "") -> None:
        """Tell the others not to train (no-op once a message went out)."""
        self.send(StartMessage(False, reason=reason))


def receive_start(world: World) -> StartMessage:
    """The other ranks' side: rank 0's message; raises when rank 0 failed before training."""
    message: StartMessage = world.broadcast()
    if not message.train and message.reason:
        raise DistributedError(f"rank {world.rank}: rank 0 stopped before training: {message.reason}")
    return message


@torch.no_grad()
def weights_fingerprint(model: torch.nn.Module) -> list[float]:
    """(sum, sum of squares) over every parameter, float64: equal on every rank that built the
    same base model and adapters from the same seed."""
    total = squares = 0.0
    for p in model.parameters():
        x = p.detach().double()
        total += float(x.sum())
        squares += float((x * x).sum())
    return [total, squares]


def check_same_start(world: World, model: torch.nn.Module) -> None:
    """Refuse to train when a rank's weights differ from rank 0's (a different model file or
    seed on one node): data-parallel ranks must start equal or their gradients mean nothing."""
    if not world.distributed:
        return
    prints = world.gather(weights_fingerprint(model))
    differ = [rank for rank, fp in enumerate(prints) if fp != prints[0]]
    if differ:
        raise DistributedError(
            f"ranks {differ} built other weights than rank 0 (parameter sums {[prints[r] for r in differ]} vs "
            f"{prints[0]}): every node must load the same model files with the same model.seed"
        )
