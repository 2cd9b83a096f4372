"""Benchmark: forward+backward time of one adapted linear layer (``python -m pipelines.bench adapters``).

Variants per shape d_in→d_out, all timed in one process on the same input (2048 tokens):
frozen base alone, LoRA r=8, Kron-LoRA (A 2×2 and 4×4, r=8), and PEFT's LoKr layer with the same
factor shapes (``decompose_factor`` = 2 / 4, r=8), which builds kron(w1, w2) every call.

Rounds interleave the variants in a shuffled order, so drift in machine load hits all of them
alike; each variant reports the median over rounds. "Overhead" is the median over rounds of
(variant − base) measured in the same round; the Kron/LoRA ratio is likewise the median of
per-round ratios. When the budget is short, the slow PEFT variants join only some rounds
(at least 3) so the tight Kron/LoRA comparison keeps more. With one torch thread (the default)
steps are timed in process CPU time, which other processes on a shared machine cannot inflate
by taking the core. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from kroncl.adapters.layers import KronLoRALinear, LoRALinear
from kroncl.adapters.math import kron_factors, kron_param_count, lora_param_count

DEFAULT_SHAPES = ((384, 384), (384, 1536), (768, 3072), (4096, 4096))
R = 8
BASE = "base (frozen)"


@dataclass
class Variant:
    """One layer to time: its module, trainable parameters and the count the formula predicts."""

    name: str
    module: nn.Module
    params: list[nn.Parameter]
    expected_params: int


def _peft_lokr(base: nn.Linear, a: int) -> nn.Module:
    from peft import LoKrConfig
    from peft.tuners.lokr.layer import Linear as LoKrLinear

    cfg = LoKrConfig(r=R, alpha=R, decompose_factor=a, decompose_both=False, rank_dropout=0.0, module_dropout=0.0)
    layer = LoKrLinear(base, "default", cfg, r=R, alpha=R)
    with torch.no_grad():  # non-zero w1 so the timed update is a real one
        for p in layer.lokr_w1.values():
            p.normal_()
    return layer


def build_variants(d_in: int, d_out: int, seed: int = 0) -> list[Variant]:
    """The layers compared at one shape; every one wraps its own copy of the same base weight."""
    torch.manual_seed(seed)
    base = nn.Linear(d_in, d_out)
    base.requires_grad_(False)

    def fresh() -> nn.Linear:
        b = nn.Linear(d_in, d_out)
        b.load_state_dict(base.state_dict())
        return b

    out = [Variant(BASE, base, [], 0)]
    lora = LoRALinear(fresh(), r=R, alpha=2 * R)
    out.append(Variant(f"LoRA r={R}", lora, list(lora.adapter_parameters("default").values()),
                       lora_param_count(d_out, d_in, R)))
    for a in (2, 4):
        k = KronLoRALinear(fresh(), a, a, r=R, alpha=2 * R)
        with torch.no_grad():
            k.adapters["default"].B1.normal_()
        out.append(Variant(f"Kron {a}x{a} r={R}", k, list(k.adapter_parameters("default").values()),
                           kron_param_count(kron_factors(d_out, d_in, a, a), R)))
    for a in (2, 4):
        p = _peft_lokr(fresh(), a)
        params = [q for n, q in p.named_parameters() if "lokr_" in n]
        out.append(Variant(f"PEFT LoKr {a}x{a} r={R}", p, params, kron_param_count(kron_factors(d_out, d_in, a, a), R)))
    return out


def _step_fn(
    v: Variant, x: torch.Tensor, grad_out: torch.Tensor, clock: Callable[[], float]
) -> Callable[[], float]:
    def step() -> float:
        for p in v.params:
            p.grad = None
        x.grad = None
        t0 = clock()
        y = v.module(x)
        y.backward(grad_out)  # grads of the adapter factors and of x (as inside a network)
        return clock() - t0

    return step



@dataclass
class ShapeResult:
    """Per variant: round index -> seconds of one forward+backward step."""

    d_in: int
    d_out: int
    times: dict[str, dict[int, float]]
    counted: dict[str, int]
    expected: dict[str, int]

    def rounds(self, name: str) -> int:
        return len(self.times[name])

    def median(self, name: str) -> float:
        return statistics.median(self.times[name].values())

    def _paired(self, name: str, ref: str) -> list[tuple[float, float]]:
        t, r = self.times[name], self.times[ref]
        return [(t[i], r[i]) for i in t if i in r]

    def overhead(self, name: str, base: str = BASE) -> float:
        """Median over rounds of (variant − base) timed in the same round."""
        return statistics.median(t - b for t, b in self._paired(name, base))

    def ratio(self, name: str, ref: str) -> float:
        """Median over rounds of variant / ref timed in the same round (robust to load drift)."""
        return statistics.median(t / b for t, b in self._paired(name, ref))


def plan_rounds(cheap_s: float, slow_s: float, repeats: int, budget_s: float) -> tuple[int, int]:
    """Rounds for the cheap variants and for the slow (PEFT) ones within ``budget_s``.

    Every variant runs at least 3 rounds. When all of them cannot run ``repeats`` rounds, the
    slow ones run fewer (their margin is large) so the cheap ones, whose Kron/LoRA ratio is
    the tight comparison, keep as many rounds as the budget allows.

    Example:
        >>> plan_rounds(1.0, 1.0, 15, 100.0)
        (15, 15)
        >>> plan_rounds(7.0, 11.0, 15, 100.0)
        (9, 3)
        >>> plan_rounds(1.4, 1.7, 15, 40.0)
        (15, 6)
    """
    full = int(budget_s // max(cheap_s + slow_s, 1e-9))
    if full >= repeats:
        return repeats, repeats
    slow = max(3, full // 2)
    cheap = min(repeats, max(slow, int((budget_s - slow * slow_s) // max(cheap_s, 1e-9))))
    return cheap, slow


def time_shape(
    d_in: int,
    d_out: int,
    tokens: int,
    repeats: int,
    budget_s: float,
    seed: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> ShapeResult:
    """Time every variant at one shape with interleaved, shuffled rounds.

    Up to ``repeats`` rounds, fewer when a round would not fit ``budget_s`` of wall time (see
    :func:`plan_rounds`); PEFT variants then join an evenly spread subset of the rounds.
    ``clock`` measures each step (``time.perf_counter``: wall, ``time.process_time``: CPU).
    """
    variants = build_variants(d_in, d_out, seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, d_in, generator=g).requires_grad_(True)
    grad_out = torch.randn(tokens, d_out, generator=g)
    steps = {v.name: _step_fn(v, x, grad_out, clock) for v in variants}
    warm: dict[str, float] = {}
    for name, step in steps.items():  # warm-up: allocator, oneDNN/MKL kernel selection
        t0 = time.perf_counter()
        step()
        warm[name] = time.perf_counter() - t0
    slow_names = [n for n in steps if n.startswith("PEFT")]
    cheap_s = sum(t for n, t in warm.items() if n not in slow_names)
    slow_s = sum(warm[n] for n in slow_names)
    n_cheap, n_slow = plan_rounds(cheap_s, slow_s, repeats, max(budget_s - cheap_s - slow_s, 0.0))
    slow_rounds = {round(i * (n_cheap - 1) / max(n_slow - 1, 1)) for i in range(n_slow)}
    rng = random.Random(seed)
    times: dict[str, dict[int, float]] = {n: {} for n in steps}
    for i in range(n_cheap):
        order = [n for n in steps if n not in slow_names or i in slow_rounds]
        rng.shuffle(order)
        for name in order:
            times[name][i] = steps[name]()
    counted = {v.name: sum(p.numel() for p in v.params) for v in variants}
    expected = {v.name: v.expected_params for v in variants}
    return ShapeResult(d_in, d_out, times, counted, expected)


def machine_info() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import peft

    return (
        f"CPU: {cpu}; logical cores: {os.cpu_count()}; torch threads: {torch.get_num_threads()}; "
        f"torch {torch.__version__}; peft {peft.__version__}; python {platform.python_version()}"
    )


def format_shape(res: ShapeResult) -> str:
    lines = [f"\n{res.d_in}→{res.d_out}  (medians over interleaved rounds)"]
    lines.append(f"  {'variant':<22}{'params':>10}{'formula':>10}{'rounds':>8}{'layer ms':>11}{'overhead ms':>13}")
    for name in res.times:
        ok = "" if res.counted[name] == res.expected[name] else "  MISMATCH"
        ovh = " " * 13 if name == BASE else f"{res.overhead(name) * 1e3:13.2f}"
        lines.append(
            f"  {name:<22}{res.counted[name]:>10}{res.expected[name]:>10}{res.rounds(name):>8}"
            f"{res.median(name) * 1e3:11.2f}{ovh}{ok}"
        )
    lora = f"LoRA r={R}"
    for a in (2, 4):
        kron, peft_ = f"Kron {a}x{a} r={R}", f"PEFT LoKr {a}x{a} r={R}"
        whole = res.ratio(kron, lora)
        k_ovh, p_ovh = res.overhead(kron), res.overhead(peft_)
        ovh_ratio = f"{p_ovh / k_ovh:.1f}" if k_ovh > 0 else "inf (Kron overhead below timer noise)"
        lines.append(
            f"  A {a}x{a}: whole layer Kron/LoRA-8 = {whole:.3f} (target <= 1.05)   "
            f"overhead PEFT-LoKr/Kron = {ovh_ratio}"
        )
    return "\n".join(lines)


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """``"384x384,768x3072"`` -> [(384, 384), (768, 3072)] as (d_in, d_out)."""
    out = []
    for item in text.split(","):
        try:
            d_in, d_out = (int(v) for v in item.lower().replace("→", "x").split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad shape {item!r}; write d_in x d_out, e.g. 768x3072") from None
        out.append((d_in, d_out))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.bench adapters", description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", type=parse_shapes, default=list(DEFAULT_SHAPES),
                    help="comma-separated d_in x d_out list (default: 384x384,384x1536,768x3072,4096x4096)")
    ap.add_argument("--repeats", type=int, default=15, help="interleaved rounds per shape (default 15)")
    ap.add_argument("--budget", type=float, default=120.0,
                    help="wall-clock seconds for the whole run, shared out over the shapes in order; "
                         "slow shapes get fewer rounds (>= 3); wall time grows with machine load (default 120)")
    ap.add_argument("--tokens", type=int, default=2048, help="tokens per step (default 2048)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1; 0 = torch's own choice). On a shared machine "
                         "multi-threaded GEMM times swing by several x when another process takes a core, "
                         "so one thread gives the steadiest comparison")
    ap.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto",
                    help="cpu: process CPU time, immune to other processes taking the core (only "
                         "meaningful with --threads 1); wall: perf_counter; auto (default): cpu when "
                         "--threads is 1, else wall")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    use_cpu = args.clock == "cpu" or (args.clock == "auto" and torch.get_num_threads() == 1)
    clock = time.process_time if use_cpu else time.perf_counter
    print("kroncl adapter benchmark: forward+backward of one linear layer, grads for adapter and input")
    print(machine_info())
    print(f"tokens per step: {args.tokens}; LoRA/Kron scale alpha/r = 2; times in ms of "
          f"{'process CPU time' if use_cpu else 'wall time'}")
    t0 = time.perf_counter()
    for k, (d_in, d_out) in enumerate(args.shapes):
        left = args.budget - (time.perf_counter() - t0)
        share = max(left, 0.0) / (len(args.shapes) - k)
        res = time_shape(d_in, d_out, args.tokens, args.repeats, share, args.seed, clock)
        print(format_shape(res), flush=True)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0
