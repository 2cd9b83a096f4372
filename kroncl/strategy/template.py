"""The Avalanche strategy that trains adapters over a stream of multiple-choice tasks.

One subclass of avalanche-lib's ``SupervisedTemplate``; everything method-specific (replay,
LwF, EWC, the orthogonality penalty, accuracy collection) is a plugin on its hooks.

What it changes in the template, and why:
- batches are dicts of tensors (``input_ids``, ``labels``, ``task_labels``, ...), so ``mb_x`` is
  the whole dict, ``mb_y`` its ``labels`` and ``mb_task_id`` its ``task_labels``;
- the optimizer holds only the trainable parameters of the current experience's adapter set
  (avalanche-lib 0.6.0's ``make_optimizer`` would put every parameter, frozen ones included,
  into it) and is rebuilt per experience, with a warmup schedule;
- the training epoch adds gradient accumulation, clipping, mixed precision and a progress bar;
- the training data order comes from a generator seeded by (seed, experience), so a resumed
  run sees exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Sequence

import numpy as np
import torch
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin
from avalanche.training.templates import SupervisedTemplate
from torch.utils.data import DataLoader
from tqdm import tqdm  # not tqdm.auto: see _progress

from kroncl.config import TrainConfig
from kroncl.distributed import SINGLE, World
from kroncl.errors import ConfigError
from kroncl.evaluate import batch_to_device
from kroncl.faults import fault_point
from kroncl.adapters.routing import TokenCentroidRouter, confident_forward, routed_forward
from kroncl.strategy.adapter_sets import AdapterSets
from kroncl.strategy.schedule import lr_multiplier


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible; use train.device=cpu")
    return torch.device(name)


def resolve_threads(requested: int) -> int:
    """torch's intra-op thread count for ``train.threads`` (0 = auto).

    Auto is this process's share of the CPUs it may run on: ``sched_getaffinity`` (which sees
    taskset and container CPU sets, unlike ``os.cpu_count``) divided by the processes on this
    machine (``LOCAL_WORLD_SIZE``, set by torchrun), at least 1. More threads than cores make
    OpenMP threads spin against each other: on a shared 2-core machine that cost several x.
    """
    if requested > 0:
        return requested
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    local_procs = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, cpus // local_procs)


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, or None for full fp32. ``auto`` = bf16 on CUDA GPUs that support it."""
    if name == "fp32":
        return None
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if device.type != "cuda":
        raise ConfigError(
            f"train.precision={name} needs a CUDA device (got {device.type}); use train.precision=fp32"
        )
    return torch.bfloat16 if name == "bf16" else torch.float16


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def experience_seed(seed: int, experience: int) -> int:
    """Seed of everything random inside one experience (data order, dropout, replay sampling)."""
    return seed * 1_000_003 + experience


def routing_hits(chosen: list[str], task_ids: torch.Tensor, by_task: dict[int, str]) -> tuple[int, int]:
    """(rows whose answering set is the one trained on their task, rows whose task has a set)."""
    hits = total = 0
    for name, label in zip(chosen, task_ids.tolist()):
        if int(label) in by_task:
            total += 1
            hits += name == by_task[int(label)]
    return hits, total


class KronclStrategy(SupervisedTemplate):
    """Avalanche strategy for ``MultipleChoiceModel`` + resident adapter sets.

    Args:
        model: a ``MultipleChoiceModel`` whose backbone already has adapters injected under the
            name ``adapter_sets.name_for(0)``.
        adapter_sets: the mode's bookkeeping (which set trains, which set answers which task).
        train: training knobs (epochs, batch sizes, lr, schedule, accumulation, clipping...).
        plugins: avalanche plugins (replay, LwF, EWC, orthogonality, accuracy collection).
        evaluator: avalanche ``EvaluationPlugin`` for its own metrics and loggers.
        seed: base seed; experience ``i`` runs under ``experience_seed(seed, i)``.
    """

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        adapter_sets: AdapterSets,
        train: TrainConfig,
        plugins: Sequence[SupervisedPlugin] = (),
        evaluator: EvaluationPlugin | None = None,
        seed: int = 0,
        task_labels: str = "known",
        task_router: TokenCentroidRouter | None = None,
        world: World = SINGLE,
    ) -> None:
        device = resolve_device(train.device)
        self.world = world
        """The data-parallel processes (:mod:`kroncl.distributed`); each trains and evaluates
        its shard of every global batch."""
        self.mb_share = 1.0
        """This rank's share of the rows of the current global training batch."""
        self.train_cfg = train
        self.adapter_sets = adapter_sets
        self.seed = seed
        self.task_labels = task_labels
        self.task_router = task_router
        """With task labels unknown: guesses each row's task (None: the most confident set answers)."""
        self.mb_routing: tuple[int, int] | None = None
        """(rows routed to their own task's set, rows whose task has a set) of the last
        evaluation batch answered without task labels; None when labels were used."""
        self.amp_dtype = resolve_precision(train.precision, device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        trainable = [p for p in model.parameters() if p.requires_grad]
        # Placeholder until the first experience: make_optimizer builds the real one.
        optimizer = torch.optim.AdamW(trainable or [torch.nn.Parameter(torch.zeros(1))], lr=train.lr)
        super().__init__(
            model=model,
            optimizer=optimizer,
            criterion=model.loss,
            train_mb_size=train.batch_size,
            train_epochs=train.epochs,
            eval_mb_size=train.eval_batch_size,
            device=device,
            plugins=list(plugins),
            evaluator=evaluator if evaluator is not None else EvaluationPlugin(loggers=[]),
            # 0 = "evaluate after each experience" to avalanche (its forward-transfer metric
            # insists on it); the loop passes eval_streams=[] and evaluates the test stream itself.
            eval_every=0,
        )

    # ---- dict mini-batches -------------------------------------------------------------
    @property
    def mb_x(self) -> dict[str, torch.Tensor]:
        return self.mbatch

    @property
    def mb_y(self) -> torch.Tensor:
        return self.mbatch["labels"]

    @property
    def mb_task_id(self) -> torch.Tensor:
        return self.mbatch["task_labels"]

    def _unpack_minibatch(self) -> None:
        self.mbatch = batch_to_device(self.mbatch, self.device, non_blocking=True)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def forward(self) -> torch.Tensor:
        sets = self.adapter_sets
        self.mb_routing = None
        with self._autocast():
            if not self.is_training and self.task_labels == "unknown" and sets.routes_by_task:
                scores, chosen = self._answer_without_labels()
                self.mb_routing = routing_hits(chosen, self.mb_task_id, sets.by_task)
            else:
                scores = routed_forward(self.model, self.model, self.mbatch, self.mb_task_id, sets.route)
        return scores.float()

    def _answer_without_labels(self) -> tuple[torch.Tensor, list[str]]:
        """(scores, set that answered each row) of the batch, its task labels unused."""
        sets, router = self.adapter_sets, self.task_router
        if router is not None and router.labels:
            guessed = router.predict(self.mbatch)
            scores = routed_forward(self.model, self.model, self.mbatch, guessed, sets.route)
            return scores, [sets.route(int(t)) for t in guessed.tolist()]
        candidates = sets.answer_sets()
        scores, chosen = confident_forward(self.model, self.model, self.mbatch, candidates)
        return scores, [candidates[i] for i in chosen.tolist()]

    # ---- experience set-up ------------------------------------------------------------
    @property
    def experience_index(self) -> int:
        return int(self.experience.current_experience)

    def _before_training_exp(self, **kwargs) -> None:
        seed_everything(experience_seed(self.seed, self.experience_index))
        self.optimizer_steps = 0  # in this experience; names the train_step fault point
        super()._before_training_exp(**kwargs)
        # After the plugins ran: replay may have replaced the dataloader, which sets the length.
        self._make_scheduler()

    def check_model_and_optimizer(self, **kwargs) -> None:
        if self.is_training:
            self.adapter_sets.begin_experience(self.model, self.experience_index)
        self.model = self.model.to(self.device)
        self.make_optimizer()

    def model_adaptation(self, model=None):
        return (model or self.model).to(self.device)

    def make_optimizer(self, **kwargs) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError(
                f"adapter set {self.adapter_sets.current!r} has no trainable parameters"
            )
        self.optimizer = torch.optim.AdamW(
            params, lr=self.train_cfg.lr, weight_decay=self.train_cfg.weight_decay
        )

    def _make_scheduler(self) -> None:
        cfg = self.train_cfg
        steps_per_epoch = math.ceil(len(self.dataloader) / cfg.grad_accum)
        total = max(1, steps_per_epoch * cfg.epochs)
        warmup = int(cfg.warmup_ratio * total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_multiplier(step, total, warmup, cfg.schedule)
        )

    def make_train_dataloader(self, shuffle: bool = True, **kwargs) -> None:
        generator = torch.Generator()
        generator.manual_seed(experience_seed(self.seed, self.experience_index))
        self.dataloader = DataLoader(
            self.adapted_dataset,
            batch_size=self.train_mb_size,
            shuffle=shuffle,
            collate_fn=self.adapted_dataset.collate_fn,
            generator=generator,  # the order; workers only build the batches, so it is the same
            num_workers=self.train_cfg.num_workers,
            pin_memory=self.train_cfg.pin_memory and self.device.type == "cuda",
        )

    def make_eval_dataloader(self, **kwargs) -> None:
        # Global batches in order, as in one process: avalanche's loader would add a
        # DistributedSampler under torchrun, which pads the test set with repeated rows (counted
        # twice); eval_epoch keeps this rank's rows of each batch. Its own generator: no draw
        # from the global RNG.
        self.dataloader = DataLoader(self.adapted_dataset, batch_size=self.eval_mb_size, shuffle=False,
                                     collate_fn=self.adapted_dataset.collate_fn, generator=torch.Generator())

    # ---- loops ---------------------------------------------------------------------------
    def _progress(self, iterable, desc: str):
        # tqdm.auto's bar opens an iterator of its iterable at once and then iterates it again:
        # a DataLoader opened twice per epoch, whose discarded iterator took a draw from the
        # order's generator and, with workers, started a worker pool and drew the epoch's order.
        return tqdm(
            iterable, desc=desc, leave=False, dynamic_ncols=True,
            disable=not self.train_cfg.progress or not self.world.is_main,
        )

    def training_epoch(self, **kwargs) -> None:
        accum = self.train_cfg.grad_accum
        n_batches = len(self.dataloader)
        desc = f"train exp {self.experience_index} epoch {self.clock.train_exp_epochs + 1}"
        generator = getattr(self.dataloader, "generator", None)
        if isinstance(self.dataloader, DataLoader) and generator is not None:
            # The draw the discarded iterator of the old progress bar took (see _progress): kept,
            # so the batch order is the one runs had before, with or without loader workers.
            torch.empty((), dtype=torch.int64).random_(generator=generator)
        bar = self._progress(self.dataloader, desc)
        self.optimizer.zero_grad(set_to_none=True)
        for i, self.mbatch in enumerate(bar):
            if self._stop_training:
                break
            self.mbatch, self.mb_share = self.world.shard(self.mbatch)
            self._unpack_minibatch()
            self._before_training_iteration(**kwargs)
            self.loss = self._make_empty_loss()

            self._before_forward(**kwargs)
            self.mb_output = self.forward()
            self._after_forward(**kwargs)
            self.loss += self.criterion()

            self._before_backward(**kwargs)  # LwF / EWC / orthogonality add their terms here
            self.backward()
            self._after_backward(**kwargs)

            if (i + 1) % accum == 0 or i + 1 == n_batches:
                self._before_update(**kwargs)
                self.optimizer_step()
                self._after_update(**kwargs)
                self.optimizer.zero_grad(set_to_none=True)
                self.optimizer_steps += 1
                fault_point("train_step", exp=self.experience_index, step=self.optimizer_steps,
                            rank=self.world.rank)
            self._after_training_iteration(**kwargs)
            bar.set_postfix(loss=f"{self.loss.item():.4f}")

    def backward(self) -> None:
        # Scaled by this rank's share of the global batch: the all-reduced sum of the ranks'
        # gradients is then the gradient of the global batch's loss (1.0 in one process).
        loss = self.loss * self.mb_share / self.train_cfg.grad_accum
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def optimizer_step(self) -> None:
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.world.sum_gradients(params)  # before clipping and unscaling: every rank sees the same gradient
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.train_cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, self.train_cfg.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def eval_epoch(self, **kwargs) -> None:
        desc = f"eval exp {self.experience_index}"
        for self.mbatch in self._progress(self.dataloader, desc):
            self.mbatch, share = self.world.shard(self.mbatch)
            if share == 0:  # no row of this batch is this rank's; the collector sums over ranks
                continue
            self._unpack_minibatch()
            self._before_eval_iteration(**kwargs)
            self._before_eval_forward(**kwargs)
            self.mb_output = self.forward()
            self._after_eval_forward(**kwargs)
            self.loss = self.criterion()
            self._after_eval_iteration(**kwargs)
