"""The results table: ``python -m pipelines.bench continual [options]``.

Runs every (adapter, strategy, seed) cell of a grid in-process, one after the other, each a
normal run of the main job (:func:`pipelines.continual.run`, its own run directory under
``--out``/runs; registry and MLflow off unless ``--registry on`` / ``--tracking on``), then prints
per stream one table: trainable parameters and ACC / BWT / FWT / forgetting as mean ± std over
the seeds, the chance and majority-answer rate of every task's test set under it, and a mark on
rows where a run's predictions collapsed onto one answer. Written as ``results.json`` and ``results.md`` too.

Science rules it follows: every cell gets the same budget (rows, epochs); learning rates are per
adapter (``--lr kron2x2=6e-3,lora8=2e-3``) or picked per (adapter, strategy) from ``--lr-grid``
by validation accuracy (mean over seeds of the selected epochs' validation accuracy) — never by
test accuracy. A finished cell is read back, not rerun, so an interrupted table continues.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pipelines.bench.results_table import Row, RunInfo, load_run, mean_std, stream_report, write_outputs

ADAPTERS = ("kron2x2", "kron4x4", "lora8", "lora16")
"""The table's adapters (the default ``--adapters``); any name :func:`adapter_overrides` parses
works too, e.g. ``--adapters kron2x2,kron4x4,kron8x8,kron2x4`` for the d_A ablation."""
ADAPTER_FORMS = "kron<a_out>x<a_in> (Kron-LoRA, A a_out x a_in, r=8; e.g. kron8x8, kron2x4), lora<r> (e.g. lora8)"
MODES = ("sequential", "per_task", "orthogonal")
PLUGINS = ("replay", "ewc", "lwf")
ALIASES = {p: f"sequential+{p}" for p in PLUGINS}
"""``replay`` = ``sequential+replay``, etc.; any ``mode+plugin[+plugin]`` is accepted too."""
LABELS = ("known", "unknown")
LABEL_MODES = ("per_task",)
"""Where task labels at test time change the answer: sequential uses one set for every task,
orthogonal sums all sets; only per_task must find a row's own set."""
QUICK = {"adapters": "kron2x2,lora8", "strategies": "sequential,per_task,replay", "seeds": "0,1",
         "max_train": 64, "max_test": 50, "epochs": 1, "labels": "known"}
log = logging.getLogger("kroncl.bench")


class BadInput(ValueError):
    pass


class Refused(Exception):
    """The project's config validation refuses this cell (e.g. strategy=per_task with ewc)."""


def adapter_overrides(name: str) -> list[str]:
    """``kron4x2`` -> Kron-LoRA with A 4x2 and r=8; ``lora16`` -> LoRA r=16 (Hydra overrides)."""
    if m := re.fullmatch(r"kron([1-9]\d*)x([1-9]\d*)", name):
        return ["adapter=kron", f"adapter.a_out={m[1]}", f"adapter.a_in={m[2]}", "adapter.r=8"]
    if m := re.fullmatch(r"lora([1-9]\d*)", name):
        return ["adapter=lora", f"adapter.r={m[1]}"]
    raise BadInput(f"unknown adapter {name!r}; choices: {', '.join(ADAPTERS)} or {ADAPTER_FORMS}")


def parse_adapters(text: str) -> list[str]:
    names = parse_list(text, None, "adapter")
    for name in names:
        adapter_overrides(name)
    return names


def parse_list(text: str, choices: Sequence[str] | None, what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise BadInput(f"{what}: empty list {text!r}")
    for item in items:
        if choices is not None and item not in choices:
            raise BadInput(f"unknown {what} {item!r}; choices: {', '.join(choices)}")
    return items


def parse_strategy(name: str) -> tuple[str, list[str]]:
    """``sequential`` / ``replay`` / ``per_task+lwf`` -> (mode, plugins)."""
    spec = ALIASES.get(name, name)
    mode, *plugins = spec.split("+")
    if mode not in MODES or any(p not in PLUGINS for p in plugins):
        raise BadInput(f"unknown strategy {name!r}; choices: {', '.join((*MODES, *PLUGINS))} "
                       f"or MODE+PLUGIN (modes {', '.join(MODES)}; plugins {', '.join(PLUGINS)})")
    return mode, plugins


def parse_seeds(text: str) -> list[int]:
    out = []
    for s in parse_list(text, None, "seeds"):
        try:
            out.append(int(s))
        except ValueError:
            raise BadInput(f"--seeds: {s!r} is not an integer (e.g. --seeds 0,1,2)") from None
    return out


def parse_float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"{what}: {text!r} is not a number") from None
    if not value > 0:
        raise BadInput(f"{what}: {text!r} must be > 0")
    return value


def parse_lr(text: str | None, adapters: Sequence[str]) -> dict[str, float]:
    """``6e-3`` (every adapter) or ``kron2x2=6e-3,lora8=2e-3`` (the rest keep train.lr)."""
    if not text:
        return {}
    if "=" not in text:
        value = parse_float(text, "--lr")
        return {a: value for a in adapters}
    out = {}
    for part in parse_list(text, None, "--lr"):
        name, sep, value = part.partition("=")
        if not sep or name not in adapters:
            raise BadInput(f"--lr: unknown method {name!r} in {part!r}; the --adapters are: {', '.join(adapters)}")
        out[name] = parse_float(value, f"--lr {name}")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.bench continual", description=__doc__.split("\n\n")[0])
    p.add_argument("--stream", default="arc", help="comma list of streams (kroncl/configs/stream): toy, arc, commonsense")
    p.add_argument("--model", default="minilm", help="model config (tiny, minilm, ...)")
    p.add_argument("--adapters", default=",".join(ADAPTERS), help=f"comma list of {', '.join(ADAPTERS)} or {ADAPTER_FORMS}")
    p.add_argument("--strategies", default="sequential,per_task,orthogonal,replay,ewc,lwf",
                   help="comma list: sequential, per_task, orthogonal, replay, ewc, lwf (= sequential+X), MODE+PLUGIN")
    p.add_argument("--labels", default="known,unknown",
                   help="task labels at test time; unknown adds rows only where it matters (per_task)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--lr", default=None, help="one lr for all, or per adapter: kron2x2=6e-3,lora8=2e-3")
    p.add_argument("--lr-grid", default=None, help="e.g. 1e-3,3e-3,1e-2: per (adapter, strategy), the lr "
                   "with the best mean validation accuracy over seeds is reported (never chosen on test)")
    p.add_argument("--max-train", type=int, default=None, help="train rows per task (same for every cell)")
    p.add_argument("--max-test", type=int, default=None, help="test rows per task (validation rows too)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--data-dir", default=None, help="offline data folder (data.dir), e.g. ../shared/data")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any further Hydra override for every cell, e.g. --set train.batch_size=8")
    p.add_argument("--quick", action="store_true",
                   help="minutes, not hours: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()) + " (explicit options win)")
    p.add_argument("--out", default="runs/bench-continual", help="run directories and results.{json,md}")
    p.add_argument("--registry", choices=("on", "off"), default="off")
    p.add_argument("--tracking", choices=("on", "off"), default="off")
    return p


def compose(overrides: Sequence[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from kroncl.preflight import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


class Cell:
    """One (stream, adapter, strategy, labels) row: its runs over seeds (and lrs when a grid)."""

    def __init__(self, stream: str, adapter: str, strategy: str, labels: str) -> None:
        self.stream, self.adapter, self.strategy, self.labels = stream, adapter, strategy, labels
        self.runs: dict[float | None, list[RunInfo]] = {}
        self.note = ""

    def refusal(self) -> str | None:
        """Why the project refuses this strategy combination (kroncl.config), or None."""
        from kroncl.config import PLUGINS_THAT_CANNOT_ACT

        mode, plugins = parse_strategy(self.strategy)
        why = [f"strategy={mode} cannot use {p}: {PLUGINS_THAT_CANNOT_ACT[(mode, p)]}"
               for p in plugins if (mode, p) in PLUGINS_THAT_CANNOT_ACT]
        return "; ".join(why) or None

    def overrides(self) -> list[str]:
        mode, plugins = parse_strategy(self.strategy)
        return [f"stream={self.stream}", *adapter_overrides(self.adapter), f"strategy={mode}",
                f"strategy.plugins=[{','.join(plugins)}]", f"eval.task_labels={self.labels}"]

    def name(self, lr: float | None, seed: int) -> str:
        return f"{self.adapter}-{self.strategy}-{self.labels}" + (f"-lr{lr:g}" if lr else "") + f"-s{seed}"

    def chosen(self) -> tuple[float | None, list[RunInfo]]:
        """The lr reported: the only one, or the grid's best by mean validation accuracy."""
        if len(self.runs) == 1:
            return next(iter(self.runs.items()))
        scored = {}
        for lr, runs in self.runs.items():
            mean, _, n = mean_std(r.val_acc for r in runs)
            if n:
                scored[lr] = mean
        if not scored:
            raise BadInput("--lr-grid needs validation accuracies (train.select=best_val)")
        lr = max(scored, key=lambda k: (scored[k], -k))
        self.note = (self.note + f" lr by val {scored[lr]:.3f}").strip()
        return lr, self.runs[lr]

    def row(self) -> Row:
        lr, runs = self.chosen() if self.runs else (None, [])
        if lr is None and runs:  # the method's default (kroncl.config.DEFAULT_LR), as the runs used it
            lr = runs[0].config["train"]["lr"]
        labels = self.labels if parse_strategy(self.strategy)[0] in LABEL_MODES else "-"
        return Row({"adapter": self.adapter, "strategy": self.strategy, "labels": labels,
                    "lr": f"{lr:g}" if lr else "-"}, runs, self.note)


def run_one(overrides: list[str], run_dir: Path) -> tuple[RunInfo, bool]:
    """One run of the main job in ``run_dir``, and whether it was read back (finished there before)."""
    from omegaconf import OmegaConf

    from kroncl.config import config_hash, load_settings
    from pipelines.continual import run
    from pipelines.run_dir import RunRecord

    record = RunRecord.load(run_dir) if run_dir.exists() else None
    cfg = compose(overrides)
    settings = load_settings(OmegaConf.to_container(cfg, resolve=True))  # any other bad setting: an error
    if record is not None:
        if record.config_hash != config_hash(settings.result_config):
            raise BadInput(f"{run_dir} holds a run of another configuration; use another --out")
        if record.is_finished:
            return load_run(run_dir), True
        cfg = compose([*overrides, f"resume={run_dir}"])
    # What a run prints (its summary, data-loading progress bars) is in its summary.txt/run.log;
    # the console gets one line per run. Shown after all when the run fails.
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            run(cfg, run_dir=run_dir)
    except Exception:
        sys.stderr.write(buffer.getvalue()[-4000:])
        raise
    return load_run(run_dir), False


def quiet_logging() -> None:
    """kroncl logs INFO into each run's run.log; the console gets warnings only."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
        root.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    from kroncl.errors import KronclError

    parser = build_parser()
    args = parser.parse_args(argv)
    argv_given = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        for key, value in QUICK.items():
            if not any(a.startswith("--" + key.replace("_", "-")) for a in argv_given):
                setattr(args, key, value)
    try:
        streams = parse_list(args.stream, None, "stream")
        adapters = parse_adapters(args.adapters)
        strategies = parse_list(args.strategies, None, "strategy")
        for s in strategies:
            parse_strategy(s)
        labels = parse_list(args.labels, LABELS, "labels")
        seeds = parse_seeds(args.seeds)
        lrs = parse_lr(args.lr, adapters)
        grid = [parse_float(v, "--lr-grid") for v in parse_list(args.lr_grid, None, "--lr-grid")] if args.lr_grid else []
        if grid and lrs:
            raise BadInput("--lr and --lr-grid exclude each other")
    except BadInput as exc:
        parser.error(str(exc))
    out = Path(args.out)
    common = [f"model={args.model}", f"paths.runs={out / 'runs'}", "train.progress=false",
              f"tracking={'local' if args.tracking == 'on' else 'off'}",
              f"registry={'local' if args.registry == 'on' else 'off'}"]
    if args.max_train is not None:
        common.append(f"stream.max_train={args.max_train}")
    if args.max_test is not None:
        common += [f"stream.max_test={args.max_test}", f"stream.max_validation={args.max_test}"]
    if args.epochs is not None:
        common.append(f"train.epochs={args.epochs}")
    if args.data_dir:
        common.append(f"data.dir={Path(args.data_dir).resolve()}")
    common += args.set
    cells = [Cell(st, a, s, lab) for st in streams for a in adapters for s in strategies for lab in labels
             if lab == "known" or parse_strategy(s)[0] in LABEL_MODES]
    jobs = [(c, lr, seed) for c in cells for lr in (grid or [lrs.get(c.adapter)]) for seed in seeds]
    quiet_logging()
    started, read_back = time.perf_counter(), 0
    print(f"{len(jobs)} runs ({len(cells)} cells x {len(seeds)} seeds" + (f" x {len(grid)} lrs" if grid else "")
          + f"), run directories under {out / 'runs'}", flush=True)
    for i, (cell, lr, seed) in enumerate(jobs, 1):
        if cell.note.startswith("refused"):
            continue
        overrides = [*common, *cell.overrides(), f"seed={seed}"] + ([f"train.lr={lr}"] if lr else [])
        t0 = time.perf_counter()
        try:
            if cell.refusal():
                raise Refused(cell.refusal())
            info, was_done = run_one(overrides, out / "runs" / cell.stream / cell.name(lr, seed))
        except Refused as exc:  # a combination the project refuses: marked, not a crash
            cell.note = f"refused: {exc}"
            print(f"[{i}/{len(jobs)}] {cell.stream} {cell.adapter} {cell.strategy}: refused ({exc})", flush=True)
            continue
        except BadInput as exc:  # --out holds another configuration's run under this cell's name
            parser.error(str(exc))
        except KronclError as exc:  # data or model not found, ...: its message says what to change
            print(f"error: {cell.name(lr, seed)}: {exc}", file=sys.stderr)
            return 2
        cell.runs.setdefault(lr, []).append(info)
        read_back += was_done
        acc = info.metric("acc")
        print(f"[{i}/{len(jobs)}] {cell.stream} {cell.adapter} {cell.strategy} labels={cell.labels}"
              + (f" lr={lr:g}" if lr else "") + f" seed={seed}: ACC "
              + ("n/a" if acc is None else f"{acc:.3f}") + f" ({time.perf_counter() - t0:.0f}s)", flush=True)
    wall = time.perf_counter() - started
    try:
        tables = {st: [c.row() for c in cells if c.stream == st] for st in streams}
    except BadInput as exc:
        parser.error(str(exc))
    keys = ["adapter", "strategy", "labels", "lr"]
    for st, rows in tables.items():
        print()
        print(stream_report(st, rows, keys))
    from pipelines.bench.adapters import machine_info

    meta = {"command": "python -m pipelines.bench continual " + " ".join(argv_given),
            "machine": machine_info(), "wall_s": round(wall, 1), "read_back": read_back, "budget": common}
    json_path, md_path = write_outputs(out, tables, keys, meta)
    done = f" ({read_back} read back from an earlier invocation)" if read_back else ""
    print(f"\n{len(jobs)} runs{done}, wall time {wall:.0f}s; {meta['machine']}\ntables: {json_path}, {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
