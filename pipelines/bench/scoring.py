"""Benchmark: decoder scoring, prompt read once vs once per choice (``python -m pipelines.bench scoring``).

A decoder (default SmolLM2-135M, one random Kron-LoRA set 2×2, r=8 on every default target)
scores the first ``--questions`` ARC-Challenge test questions (``--data-dir``: the offline
copy, ``../shared/data``, see its README) in batches of ``--batch``, two ways over the same backbone:

    per_choice  ``model.shared_prompt=false``: one sequence per choice, prompt + choice
    shared      ``model.shared_prompt=true``: one packed sequence per question, the prompt once,
                each choice after it under a block attention mask

Timed: ``eval`` (a no-grad forward) and, with ``--train``, ``train`` (forward, loss and backward
to the adapter). Questions are encoded and collated once beforehand (not timed); modes are
interleaved round by round (order rotated) so machine load hits them alike. Printed: questions/s
(median over rounds), the shared/per_choice ratio, tokens fed per question (padding included)
and max |shared - per_choice| over the scores; ``--reference`` also scores each choice alone,
unpadded (the exact value both layouts approximate in float32), and prints each layout's max |Δ|
to it. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from kroncl.models import PAD_SCORE
from pipelines.bench.adapters import machine_info

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # ../shared/data of the checkout


def _max_abs(x: torch.Tensor) -> float:
    x = x[x.isfinite()]
    return x.abs().max().item() if x.numel() else float("nan")


def build_pair(model_name: str, seed: int = 0, max_length: int | None = None):
    """(shared, per_choice) models over one backbone carrying a random Kron-LoRA set ``t0``."""
    from kroncl.adapters import AdapterConfig, inject_adapters
    from kroncl.models import DecoderMultipleChoice, ModelConfig, build_model

    shared = build_model(ModelConfig.from_mapping({"name": model_name, "seed": seed, "shared_prompt": True,
                                                          "max_length": max_length}))
    if shared.kind != "decoder":
        raise SystemExit(f"model={model_name} is an {shared.kind}; the scoring benchmark needs a decoder")
    cfg = AdapterConfig(method="kron", a_out=2, a_in=2, r=8, alpha=16.0, targets=list(shared.default_targets))
    inject_adapters(shared.backbone, cfg, adapter_name="t0")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in shared.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    per_choice = DecoderMultipleChoice(shared.backbone, shared.tokenizer,
                                       dataclasses.replace(shared.config, shared_prompt=False),
                                       default_targets=shared.default_targets)
    return shared.eval(), per_choice.eval()


def batches(model, examples, batch_size: int) -> list[dict[str, torch.Tensor]]:
    feats = [model.encode(e) for e in examples]
    return [model.collate(feats[i:i + batch_size]) for i in range(0, len(feats), batch_size)]


def was_cut(model, example) -> bool:
    """Whether ``model.max_length`` cuts the prompt of ``example`` for its longest choice."""
    feats = model.encode(example)
    full = model.tokenizer(model.config.prompt_template.format(question=example.question))["input_ids"]
    return len(feats["prompt_ids"]) < len(full)


@torch.no_grad()
def alone(model, examples) -> torch.Tensor:
    """(Q, C) scores of every choice run alone, unpadded (NaN where a question has fewer choices)."""
    from kroncl.models.decoder import continuation_log_likelihood

    out = torch.full((len(examples), max(len(e.choices) for e in examples)), float("nan"))
    for i, e in enumerate(examples):
        f = model.encode(e)
        for c, (ids, n) in enumerate(zip(f["input_ids"], f["choice_lengths"], strict=True)):
            logits = model.backbone(input_ids=torch.tensor([ids])).logits[:, -(n + 1):-1]
            out[i, c] = continuation_log_likelihood(logits, torch.tensor([ids[-n:]]), torch.tensor([n]),
                                                    model.config.length_normalize)[0]
    return out


def eval_pass(model, data) -> Callable[[], list[torch.Tensor]]:
    def fn() -> list[torch.Tensor]:
        with torch.no_grad():
            return [model(b) for b in data]
    return fn


def score_grid(model, data, width: int) -> torch.Tensor:
    """(Q, width) scores of every question, NaN where a question has fewer choices."""
    out = [torch.nn.functional.pad(s, (0, width - s.shape[1]), value=PAD_SCORE) for s in eval_pass(model, data)()]
    grid = torch.cat(out)
    return grid.masked_fill(grid == PAD_SCORE, float("nan"))


def train_pass(model, data) -> Callable[[], None]:
    def fn() -> None:
        for b in data:
            model.zero_grad(set_to_none=True)
            model.loss(model(b), b["labels"]).backward()
    return fn


def time_modes(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, rounds interleaved (order rotated each round)."""
    for fn in fns.values():  # warm-up: allocator, lazy inits
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for i in range(repeats):
        for name in names[i % len(names):] + names[: i % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    from kroncl.data import read_jsonl

    ap = argparse.ArgumentParser(prog="python -m pipelines.bench scoring", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2", help="a decoder model config (default smollm2; tiny-llama for a smoke run)")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help=f"folder holding arc_challenge/test.jsonl (default {DEFAULT_DATA})")
    ap.add_argument("--questions", type=int, default=8, help="ARC-Challenge test questions scored per pass (default 8)")
    ap.add_argument("--batch", type=int, default=4, help="questions per batch (default 4)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--max-length", type=int, default=None, help="model.max_length (default: the model's)")
    ap.add_argument("--train", action="store_true", help="also time forward + backward to the adapter")
    ap.add_argument("--reference", action="store_true", help="also compare both layouts to each choice run alone, unpadded")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1; 0 = torch's choice)")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    examples = read_jsonl(args.data_dir / "arc_challenge" / "test.jsonl", "arc_challenge", "test")[: args.questions]
    shared, per_choice = build_pair(args.model, max_length=args.max_length)
    data = {"per_choice": batches(per_choice, examples, args.batch), "shared": batches(shared, examples, args.batch)}
    models = {"per_choice": per_choice, "shared": shared}
    print(f"kroncl decoder scoring benchmark: model={args.model} (+ Kron-LoRA 2x2 r=8), {len(examples)} ARC-Challenge "
          f"test questions, batches of {args.batch}, medians over {args.repeats} interleaved rounds")
    print(machine_info())
    tokens = {m: sum(int(b["input_ids"].numel()) for b in d) / len(examples) for m, d in data.items()}
    width = max(len(e.choices) for e in examples)
    scores = {m: score_grid(models[m], d, width) for m, d in data.items()}
    cut = torch.tensor([was_cut(shared, e) for e in examples])
    diff = _max_abs((scores["shared"] - scores["per_choice"])[~cut])
    print(f"tokens fed per question: per_choice {tokens['per_choice']:.0f}, shared {tokens['shared']:.0f}; "
          f"max |shared - per_choice| score {diff:.1e} over the {int((~cut).sum())} questions whose prompt fits "
          f"({int(cut.sum())} cut to max_length={shared.max_length}, per choice vs once: not compared)")
    if args.reference:
        ref = alone(per_choice, examples)
        ok = ~cut
        print("max |Δ| to each choice run alone, unpadded: " + ", ".join(
            f"{m} {_max_abs((scores[m] - ref)[ok]):.1e}" for m in ("per_choice", "shared")))
    phases = {"eval": eval_pass} | ({"train": train_pass} if args.train else {})
    print(f"{'phase':<7}{'per_choice q/s':>16}{'shared q/s':>12}{'shared/per_choice':>19}")
    for phase, make in phases.items():
        med = time_modes({m: make(models[m], d) for m, d in data.items()}, args.repeats)
        qps = {m: len(examples) / s for m, s in med.items()}
        print(f"{phase:<7}{qps['per_choice']:>16.2f}{qps['shared']:>12.2f}{qps['shared'] / qps['per_choice']:>19.2f}",
              flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0
