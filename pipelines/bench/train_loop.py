"""kroncl's strategy loop against a bare PyTorch loop over the same batches
(``python -m pipelines.bench train --loop``): the framework's own overhead per training epoch.

Both train the first experience of a real stream, prepared exactly as the main job prepares it
(``pipelines.continual.prepare``: data, model, adapters, benchmark), one epoch per round:

    strategy  ``KronclStrategy.train(experience)`` as ``run_stream`` calls it: avalanche's
              template, its callbacks and plugins, the evaluator's metrics, the warmup schedule
    bare      the same dataset, batch size and collate function in a plain ``DataLoader``; per
              batch forward, the model's loss, backward, gradient clipping, AdamW step

Model selection is off (``train.select=last``): evaluating a validation split after each epoch is
work, not overhead. Rounds alternate which loop goes first; the ratio is the median of the
per-round ratios. Target (issue #16): strategy ≤ 1.05× bare.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader


def _settings(overrides: Sequence[str]):
    from kroncl.config import load_settings
    from pipelines.bench.continual import compose

    return load_settings(OmegaConf.to_container(compose(overrides), resolve=True))


def _bare_epoch(model, dataset, batch_size: int, lr: float, max_grad_norm: float, seed: int) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=dataset.collate_fn,
                        generator=torch.Generator().manual_seed(seed))
    model.train()
    for batch in loader:
        opt.zero_grad(set_to_none=True)
        loss = model.loss(model(batch), batch["labels"])
        loss.backward()
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()


def loop_overhead(overrides: Sequence[str], rounds: int = 3) -> dict:
    """Seconds per epoch of both loops on the first experience of the configured stream."""
    from kroncl.tracking import Tracker
    from pipelines.continual import build_strategy, prepare

    with tempfile.TemporaryDirectory() as tmp:  # paths.runs: the tokenised cache, nothing else is written
        settings = _settings([*overrides, "train.epochs=1", "train.select=last", "train.progress=false",
                              "tracking=off", "registry=off", "stream.max_test=16", f"paths.runs={tmp}"])
        prep = prepare(settings)
        experience = prep.benchmark.train_stream[0]
        strategy = build_strategy(settings, prep, Tracker(None, "bench", False, tmp))
        tc = settings.train
        clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
        loops = {
            "strategy": lambda: strategy.train(experience, eval_streams=[]),
            "bare": lambda: _bare_epoch(prep.model, experience.dataset, tc.batch_size, tc.lr, tc.max_grad_norm,
                                        settings.seed),
        }
        times: dict[str, list[float]] = {n: [] for n in loops}
        for i in range(rounds + 1):  # round 0 warms both up and is not counted
            for name in (("strategy", "bare") if i % 2 else ("bare", "strategy")):
                t0 = clock()
                loops[name]()
                if i:
                    times[name].append(clock() - t0)
    rows = len(experience.dataset)
    return {"task": prep.task_names[0], "rows": rows, "batch_size": settings.train.batch_size,
            "rounds": rounds, "median_s": {n: statistics.median(t) for n, t in times.items()},
            "ratio": statistics.median(s / b for s, b in zip(times["strategy"], times["bare"]))}


def format_overhead(res: dict) -> str:
    s, b = res["median_s"]["strategy"], res["median_s"]["bare"]
    return (f"  loop ({res['task']}: {res['rows']} rows, batch {res['batch_size']}, {res['rounds']} rounds): "
            f"strategy {s:.2f} s/epoch, bare {b:.2f} s/epoch, strategy/bare {res['ratio']:.3f}")
