"""The task router of ``eval.task_labels=unknown``, fitted experience by experience.

:class:`RouterFitter` adds each trained experience's training rows to a
:class:`~kroncl.adapters.routing.TokenCentroidRouter` once the experience ends; at evaluation
the strategy asks the router which task a row belongs to and lets that task's set answer.
Checkpointable (:mod:`kroncl.strategy.plugin_state`): a centroid is a pure function of its
experience's training rows, so the checkpoint keeps only which experiences were fitted and a
resume refits them from the train stream.
"""

from __future__ import annotations

import torch
from avalanche.training.plugins import SupervisedPlugin
from torch.utils.data import DataLoader

from kroncl.adapters.routing import TokenCentroidRouter


class RouterFitter(SupervisedPlugin, supports_distributed=True):
    def __init__(self, router: TokenCentroidRouter, batch_size: int = 64) -> None:
        super().__init__()
        self.router = router
        self.batch_size = batch_size
        self.fitted: list[int] = []

    def fit(self, experience) -> None:
        ds = experience.dataset
        # Its own generator: a DataLoader draws its base seed from the global RNG otherwise.
        loader = DataLoader(ds, batch_size=self.batch_size, collate_fn=ds.collate_fn,
                            generator=torch.Generator())
        self.router.fit(int(experience.task_label), loader)
        self.fitted.append(int(experience.current_experience))

    def after_training_exp(self, strategy, **kwargs) -> None:
        self.fit(strategy.experience)

    def checkpoint_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        return {"experiences": list(self.fitted)}, {}

    def restore_checkpoint_state(self, state, tensors, *, strategy, train_stream) -> None:
        self.fitted = []
        experiences = list(train_stream)
        for index in state["experiences"]:
            self.fit(experiences[int(index)])


def build_router(task_labels: str, router: str, routes_by_task: bool) -> tuple[TokenCentroidRouter | None, list]:
    """(router for the strategy, [its fitting plugin]) when rows are routed by a centroid router;
    (None, []) when labels are known, the mode does not route by task, or the entropy router is chosen."""
    if task_labels != "unknown" or not routes_by_task or router != "centroid":
        return None, []
    centroids = TokenCentroidRouter()
    return centroids, [RouterFitter(centroids)]
