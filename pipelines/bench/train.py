"""Benchmark: a full training step of a whole model (``python -m pipelines.bench train``).

One step = forward over a batch of multiple-choice questions, cross-entropy over the choice
scores, backward, AdamW step over the adapter parameters only (the base frozen), on a real model
(MiniLM encoder, SmolLM2 decoder; ``tiny``/``tiny-llama`` for a quick look). Variants, each on
its own copy of the same base weights and the same batch, adapting the model's default targets:

    kron2x2      kroncl Kron-LoRA, A 2×2, r=8       lora8        kroncl LoRA, r=8
    kron4x4      kroncl Kron-LoRA, A 4×4, r=8       peft-lora8   PEFT LoRA, r=8, the same layers
    peft-lokr    PEFT LoKr with kron2x2's factor shapes (decompose_factor=2, r=8)

Rounds interleave the variants in a shuffled order, so drift in machine load hits all alike;
each variant reports its median step over rounds, and each ratio is the median of the per-round
ratios. With one torch thread (the default) steps are timed in process CPU time, which other
processes cannot inflate by taking the core. Targets (issue #16): Kron/LoRA-8 ≤ 1.00 end to end.
Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipelines.bench.adapters import machine_info

VARIANTS = ("kron2x2", "kron4x4", "lora8", "peft-lora8", "peft-lokr")
RATIOS = (("kron2x2", "lora8"), ("kron4x4", "lora8"), ("kron2x2", "peft-lora8"), ("peft-lokr", "kron2x2"))
R, ALPHA = 8, 16.0
DEFAULT_SHAPE = {"minilm": (8, 4, 128), "smollm2": (2, 4, 64)}
"""(questions, choices, tokens) per model: MiniLM at the issue's 8×4×128; SmolLM2 (6× the
compute per token) smaller so a round stays near a minute on one core."""


@dataclass
class Variant:
    name: str
    model: torch.nn.Module
    params: list[torch.nn.Parameter]

    @property
    def trainable(self) -> int:
        return sum(p.numel() for p in self.params)


def _model(name: str, seed: int, max_length: int):
    from kroncl.models import ModelConfig, build_model

    return build_model(ModelConfig.from_mapping({"name": name, "seed": seed, "max_length": max_length}))


def build_variants(model_name: str, names: Sequence[str], seed: int = 0, max_length: int = 128) -> list[Variant]:
    """Each variant on a fresh build of the same base (same seed: same weights); the PEFT ones
    adapt exactly the layers kroncl adapts (its resolved module paths, not a pattern)."""
    from peft import LoKrConfig, LoraConfig, inject_adapter_in_model

    from kroncl.adapters import AdapterConfig, inject_adapters

    out, paths = [], None
    for name in sorted(names, key=lambda n: n.startswith("peft")):  # kroncl first: its paths
        model = _model(model_name, seed, max_length)
        targets = list(model.default_targets)
        if not name.startswith("peft"):
            a = 4 if name == "kron4x4" else 2
            cfg = AdapterConfig(method="lora" if name == "lora8" else "kron", a_out=a, a_in=a, r=R, alpha=ALPHA,
                                targets=targets)
            paths = inject_adapters(model.backbone, cfg)
            params = [p for p in model.parameters() if p.requires_grad]
        else:
            if paths is None:
                paths = inject_adapters(_model(model_name, seed, max_length).backbone,
                                        AdapterConfig(method="lora", r=R, alpha=ALPHA, targets=targets))
            peft_cfg = (LoraConfig(r=R, lora_alpha=ALPHA, target_modules=list(paths)) if name == "peft-lora8" else
                        LoKrConfig(r=R, alpha=ALPHA, decompose_factor=2, decompose_both=False,
                                   target_modules=list(paths)))
            model.requires_grad_(False)
            inject_adapter_in_model(peft_cfg, model.backbone)
            params = [p for n, p in model.named_parameters() if "lora_" in n or "lokr_" in n]
            for p in params:
                p.requires_grad_(True)
        out.append(Variant(name, model.train(), params))
    order = {n: i for i, n in enumerate(names)}
    return sorted(out, key=lambda v: order[v.name])


def make_batch(model, rows: int, choices: int) -> dict[str, torch.Tensor]:
    """``rows`` questions long enough to fill ``max_length`` tokens, ``choices`` answers each."""
    from kroncl.data.example import MCExample

    words = " ".join(f"word{i}" for i in range(400))
    feats = [model.encode(MCExample(id=f"q{i}", question=f"Question {i}: {words}?",
                                    choices=tuple(f"answer {c} to question {i}" for c in range(choices)),
                                    label=i % choices))
             for i in range(rows)]
    return model.collate(feats)


def train_step(v: Variant, batch: dict[str, torch.Tensor], lr: float = 1e-3,
               autocast: torch.dtype | None = None) -> Callable[[], float]:
    """One real step of ``v``: returns a function doing it and returning its loss (``autocast``:
    the forward in that dtype on the batch's device, as ``train.precision=bf16`` does)."""
    opt = torch.optim.AdamW(v.params, lr=lr)
    device = batch["labels"].device.type

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=autocast, enabled=autocast is not None):
            scores = v.model(batch)
        loss = F.cross_entropy(scores.float(), batch["labels"])
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def time_variants(steps: dict[str, Callable[[], float]], rounds: int, warmup: int = 1,
                  seed: int = 0) -> dict[str, list[float]]:
    """Seconds per step, per variant and round (index-aligned across variants)."""
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    for step in steps.values():
        for _ in range(warmup):
            step()
    rng, times = random.Random(seed), {n: [] for n in steps}
    for _ in range(rounds):
        order = list(steps)
        rng.shuffle(order)
        for name in order:
            t0 = clock()
            steps[name]()
            times[name].append(clock() - t0)
    return times


def ratio(times: dict[str, list[float]], name: str, ref: str) -> float:
    return statistics.median(t / r for t, r in zip(times[name], times[ref]))


def run(model_name: str, names: Sequence[str], rows: int, choices: int, max_length: int, rounds: int,
        seed: int = 0) -> dict:
    variants = build_variants(model_name, names, seed, max_length)
    batch = make_batch(variants[0].model, rows, choices)
    times = time_variants({v.name: train_step(v, batch) for v in variants}, rounds, seed=seed)
    return {
        "model": model_name, "rows": rows, "choices": choices, "tokens": int(batch["input_ids"].shape[-1]),
        "rounds": rounds, "trainable": {v.name: v.trainable for v in variants},
        "median_s": {n: statistics.median(t) for n, t in times.items()},
        "ratios": {f"{a}/{b}": ratio(times, a, b) for a, b in RATIOS if a in times and b in times},
    }


def format_result(res: dict) -> str:
    n = res["rows"]
    lines = [f"{res['model']}: {n} questions x {res['choices']} choices x {res['tokens']} tokens, "
             f"{res['rounds']} rounds",
             f"  {'variant':<12}{'trainable':>11}{'step s':>9}{'questions/s':>13}"]
    for name, s in res["median_s"].items():
        lines.append(f"  {name:<12}{res['trainable'][name]:>11,}{s:>9.3f}{n / s:>13.2f}")
    lines += [f"  {k:<22}{v:.3f}" for k, v in res["ratios"].items()]
    return "\n".join(lines)


def _choices(text: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"{what} {bad or text!r}: choose from {', '.join(allowed)}")
    return items


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.bench train", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="minilm,smollm2",
                   type=lambda t: _choices(t, ("minilm", "smollm2", "tiny", "tiny-llama"), "--models"))
    p.add_argument("--variants", default=",".join(VARIANTS), type=lambda t: _choices(t, VARIANTS, "--variants"))
    p.add_argument("--rows", type=int, help="questions per batch (default per model: " +
                   ", ".join(f"{m} {s[0]}" for m, s in DEFAULT_SHAPE.items()) + ", else 8)")
    p.add_argument("--choices", type=int, default=4)
    p.add_argument("--max-length", type=int, help="tokens per sequence (default per model, else 128)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: timed in process CPU time)")
    p.add_argument("--loop", action="store_true",
                   help="also time kroncl's strategy loop against a bare PyTorch loop (pipelines/bench/train_loop.py)")
    p.add_argument("--stream", default="toy", help="--loop: the stream whose first experience is trained")
    p.add_argument("--max-train", type=int, default=64, help="--loop: training rows of that experience")
    p.add_argument("--data-dir", help="--loop: data.dir= for a real stream (default: the config's)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.choices < 2 or (args.rows is not None and args.rows < 1):
        p.error(f"--rounds {args.rounds} must be >= 1, --choices {args.choices} >= 2, --rows >= 1")
    torch.set_num_threads(args.threads)
    print(machine_info())
    for model_name in args.models:
        rows, _, length = DEFAULT_SHAPE.get(model_name, (8, 4, 128))
        res = run(model_name, args.variants, args.rows or rows, args.choices, args.max_length or length, args.rounds)
        print(format_result(res), flush=True)
        if args.loop:
            from pipelines.bench.train_loop import format_overhead, loop_overhead

            overrides = [f"model={model_name}", f"stream={args.stream}", f"stream.max_train={args.max_train}",
                         f"model.max_length={args.max_length or length}", f"train.batch_size={args.rows or rows}",
                         f"train.threads={args.threads}", *([f"data.dir={args.data_dir}"] if args.data_dir else [])]
            print(format_overhead(loop_overhead(overrides, args.rounds)), flush=True)
    return 0
