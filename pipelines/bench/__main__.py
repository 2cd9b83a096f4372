"""``python -m pipelines.bench {adapters,quant,compose,mixed,scoring,gpu,train,ddp,continual,sweep} [options]``: dispatch to a benchmark's ``main(argv)``."""

from __future__ import annotations

import importlib
import sys

# Imported lazily so one benchmark's dependencies never slow down or break another.
COMMANDS = {
    "adapters": ("pipelines.bench.adapters", "time one adapted linear layer: base, LoRA, Kron-LoRA, PEFT LoKr"),
    "quant": ("pipelines.bench.quant", "int8/int4 adapter artifacts: bytes, ΔW error, accuracy drop (Kron vs LoRA)"),
    "compose": ("pipelines.bench.compose", "compose a per-task MiniLM model from the registry: lookup, fetch, load, merge"),
    "mixed": ("pipelines.bench.mixed", "mixed-task batches over resident adapters: one forward vs one per task"),
    "scoring": ("pipelines.bench.scoring", "decoder scoring: the prompt read once per question vs once per choice"),
    "gpu": ("pipelines.bench.gpu", "GPU check: Kron vs LoRA-8 bf16 train step, peak memory, merged inference vs base"),
    "train": ("pipelines.bench.train", "a full training step of a whole model: Kron-LoRA vs LoRA-8 vs PEFT LoRA/LoKr"),
    "ddp": ("pipelines.bench.ddp", "data-parallel training throughput: 2 processes under torchrun vs 1"),
    "continual": ("pipelines.bench.continual", "the results table: adapters x strategies, mean ± std over seeds"),
    "sweep": ("pipelines.bench.sweep", "table a finished Hydra multirun (or any folder of runs), seeds pooled"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<10}{help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: python -m pipelines.bench {" + ",".join(COMMANDS) + "} [options]\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"unknown benchmark {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
