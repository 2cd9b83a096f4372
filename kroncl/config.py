"""Typed run configuration, validated once at the boundary.

Hydra composes YAML from ``kroncl/configs/``; :func:`validate_config` turns the composed tree into
these dataclasses and reports *every* problem in one :class:`~kroncl.errors.ConfigError`, each
naming the command-line key to change (``train.lr=...``), so a bad run fails before any model
is loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from kroncl.errors import ConfigError
from kroncl.fields import check_types, shown
from kroncl.metrics.matrix import TASK_LABELS

ROUTERS = ("centroid", "entropy")
from kroncl.quant.scheme import DEFAULT_BLOCK_SIZE, SCHEME_NAMES, block_size_problem, keep_below_problem

STRATEGY_MODES = ("sequential", "per_task", "orthogonal")
PLUGINS = ("replay", "lwf", "ewc")
PER_TASK_MODES = ("per_task", "orthogonal")
# Why a plugin cannot change the result of a mode that trains one new set per task and freezes
# every earlier one: (mode, plugin) -> reason.
_EWC_FROZEN = ("EWC anchors the earlier sets' parameters, which this mode freezes anyway, so its "
               "penalty is exactly 0")
PLUGINS_THAT_CANNOT_ACT = {
    ("per_task", "replay"): "replayed rows of earlier tasks are routed to their own frozen sets, "
                            "so they get no gradient",
    ("per_task", "ewc"): _EWC_FROZEN,
    ("orthogonal", "ewc"): _EWC_FROZEN,
}
SCHEDULES = ("linear", "cosine", "constant")
DEVICES = ("cpu", "cuda", "auto")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SELECTIONS = ("best_val", "last")
DEFAULT_LR = {"kron": 3e-3, "lora": 3e-3}
"""``train.lr`` when the command line does not set it, per adapter method, so each method runs at
its own measured best rather than at one shared value (README, "Learning-rate defaults": the
sweep that chose these). The train config reads it as ``${kroncl_default_lr:${adapter.method}}``."""


def default_lr(method: str) -> float:
    # An unknown method gets LoRA's value here; AdapterConfig.validate then names the bad key.
    return DEFAULT_LR.get(method, DEFAULT_LR["lora"])


OmegaConf.register_new_resolver("kroncl_default_lr", default_lr, replace=True)


@dataclass
class TrainConfig:
    epochs: int = 3
    """Passes over each experience's training set."""
    batch_size: int = 16
    eval_batch_size: int = 64
    lr: float = DEFAULT_LR["kron"]
    """Peak learning rate. The Hydra config sets it per adapter method (``DEFAULT_LR``); a library
    caller training LoRA adapters passes ``lr=default_lr("lora")`` (or its own)."""
    weight_decay: float = 0.0
    schedule: str = "linear"
    """Learning-rate schedule after warmup: linear | cosine | constant (restarted per experience)."""
    warmup_ratio: float = 0.1
    grad_accum: int = 1
    """Mini-batches whose gradients are summed before one optimiser step."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip; 0 disables clipping."""
    device: str = "auto"
    precision: str = "auto"
    progress: bool = True
    select: str = "best_val"
    """Which epoch an experience ends with: best_val (best validation accuracy; the last epoch
    when there is no validation split) | last."""
    patience: int = 0
    """With select=best_val: stop after this many epochs without a better validation accuracy;
    0 trains every epoch."""
    threads: int = 0
    """torch's CPU threads in this process; 0 = auto (see :func:`kroncl.strategy.template.resolve_threads`)."""
    gradient_checkpointing: bool = False
    """Recompute the backbone's activations in backward instead of keeping them (non-reentrant,
    RNG preserved: the same numbers, less memory, about one more forward of compute)."""
    num_workers: int = 0
    """DataLoader worker processes for training batches (0 = in this process): the same batches
    in the same order, the same results."""
    pin_memory: bool = False
    """Page-locked training batches for faster host-to-GPU copies (used only on CUDA)."""
    dropout: float | None = None
    """Dropout probability of every dropout in the backbone while training; None keeps the
    model's own (0.1 in BERT-like encoders). 0 makes training deterministic given the batches,
    e.g. to compare a torchrun run with a single process exactly."""
    collective_timeout_s: float = 1800.0
    """Under torchrun: seconds a rank waits in a collective (gradient all-reduce, evaluation
    gather, rank 0's start message) before the job fails instead of hanging on a dead rank."""


SPEED_ONLY = ("progress", "threads", "gradient_checkpointing", "pin_memory", "num_workers", "collective_timeout_s")
"""train.* keys that change how fast a run goes, never its results (a resume may change them;
tests/pipeline/test_pipeline_speed_knobs.py)."""
ADDED_KEYS = {"quant": {"keep_below": 0}}
"""Keys newer than some runs, at the value that does what those runs did: out of the resume check."""


@dataclass
class StrategyConfig:
    mode: str = "sequential"
    plugins: list[str] = field(default_factory=list)
    replay_mem_size: int = 200
    lwf_alpha: float = 1.0
    lwf_temperature: float = 2.0
    ewc_lambda: float = 100.0
    orthogonal_lambda: float = 0.0


@dataclass
class EvalConfig:
    task_labels: str = "known"
    """known: each test row is answered by its own task's adapter set. unknown: the model is not
    told the task; in per_task/orthogonal modes ``router`` picks the set that answers each row.
    Sequential has one set either way."""
    router: str = "centroid"
    """With task_labels=unknown in per_task/orthogonal: centroid (each row goes to the task whose
    training rows' tokens are nearest, :class:`kroncl.adapters.routing.TokenCentroidRouter`) |
    entropy (every trained set scores the row; the most confident answers)."""


@dataclass
class QuantConfig:
    """Which quantized copy a run stores beside each fp32 adapter.

    The names and parameter rules live in :mod:`kroncl.quant.scheme` (torch-free); the run
    turns this into a ``QuantScheme`` with :meth:`to_scheme`.
    """

    scheme: str = "none"
    """One of ``kroncl.quant.scheme.SCHEME_NAMES`` ("none" stores no quantized copy)."""
    block_size: int = DEFAULT_BLOCK_SIZE
    """Values per scale for the 4-bit schemes (see ``QuantScheme.block_size``)."""
    keep_below: int = 0
    """Tensors with fewer values stay bf16, unquantized (65: Kron-LoRA's A factors); 0 = none."""

    def to_scheme(self):  # -> kroncl.quant.QuantScheme | None
        """The ``QuantScheme`` these settings name (None for "none")."""
        from kroncl.quant.scheme import QuantScheme

        return QuantScheme.from_name(self.scheme, block_size=self.block_size, keep_below=self.keep_below)


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str | None = None
    experiment: str = "kroncl"


@dataclass
class RegistryConfig:
    enabled: bool = True
    url: str | None = None
    artifacts: str | None = None
    """A folder, or ``s3://bucket/prefix`` for an S3-compatible object store."""
    s3_endpoint_url: str | None = None
    """The object store's S3 API address (None: ``$AWS_ENDPOINT_URL``, else AWS)."""


def _check_choice(errors: list[str], key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        errors.append(f"{key}={value!r} is not one of {', '.join(choices)}")


def _check_positive(errors: list[str], key: str, value: float, allow_zero: bool = False) -> None:
    if allow_zero and value < 0 or not allow_zero and value <= 0:
        bound = ">= 0" if allow_zero else "> 0"
        errors.append(f"{key}={value!r} must be {bound}")


def validate_train(cfg: TrainConfig, errors: list[str]) -> None:
    for key in ("epochs", "batch_size", "eval_batch_size", "grad_accum"):
        _check_positive(errors, f"train.{key}", getattr(cfg, key))
    if cfg.threads < 0:
        errors.append(f"train.threads={cfg.threads!r} must be >= 0 (0 = one share of this "
                      "machine's CPUs per process, e.g. train.threads=0 or train.threads=4)")
    if cfg.num_workers < 0:
        errors.append(f"train.num_workers={cfg.num_workers!r} must be >= 0 (0 = load batches in the "
                      "training process, e.g. train.num_workers=2)")
    _check_positive(errors, "train.lr", cfg.lr)
    _check_positive(errors, "train.collective_timeout_s", cfg.collective_timeout_s)
    if cfg.dropout is not None and not 0.0 <= cfg.dropout < 1.0:
        errors.append(f"train.dropout={cfg.dropout!r} must be in [0, 1), or null to keep the model's own")
    for key in ("weight_decay", "max_grad_norm"):
        _check_positive(errors, f"train.{key}", getattr(cfg, key), allow_zero=True)
    if not 0.0 <= cfg.warmup_ratio < 1.0:
        errors.append(f"train.warmup_ratio={cfg.warmup_ratio!r} must be in [0, 1)")
    _check_choice(errors, "train.schedule", cfg.schedule, SCHEDULES)
    _check_choice(errors, "train.device", cfg.device, DEVICES)
    _check_choice(errors, "train.precision", cfg.precision, PRECISIONS)
    _check_choice(errors, "train.select", cfg.select, SELECTIONS)
    _check_positive(errors, "train.patience", cfg.patience, allow_zero=True)
    if cfg.patience > 0 and cfg.select != "best_val":
        errors.append(f"train.patience={cfg.patience} stops on validation accuracy, which "
                      f"train.select={cfg.select} does not use; set train.select=best_val or train.patience=0")


def validate_strategy(cfg: StrategyConfig, errors: list[str]) -> None:
    _check_choice(errors, "strategy", cfg.mode, STRATEGY_MODES)
    for name in cfg.plugins:
        if name not in PLUGINS:
            errors.append(
                f"strategy.plugins contains {name!r}; known plugins: {', '.join(PLUGINS)}"
            )
    if len(set(cfg.plugins)) != len(cfg.plugins):
        errors.append(f"strategy.plugins={cfg.plugins} lists a plugin twice")
    for key, allow_zero in (("replay_mem_size", False), ("lwf_temperature", False), ("lwf_alpha", True),
                            ("ewc_lambda", True), ("orthogonal_lambda", True)):
        _check_positive(errors, f"strategy.{key}", getattr(cfg, key), allow_zero=allow_zero)
    for name in cfg.plugins:
        why = PLUGINS_THAT_CANNOT_ACT.get((cfg.mode, name))
        if why:
            errors.append(f"strategy={cfg.mode} cannot use strategy.plugins=[{name}]: {why}; "
                          "drop it, or use it with strategy=sequential")
    if cfg.mode == "orthogonal" and cfg.orthogonal_lambda == 0:
        errors.append("strategy=orthogonal needs strategy.orthogonal_lambda > 0")


def validate_eval(cfg: EvalConfig, errors: list[str]) -> None:
    _check_choice(errors, "eval.task_labels", cfg.task_labels, TASK_LABELS)
    _check_choice(errors, "eval.router", cfg.router, ROUTERS)


def validate_quant(cfg: QuantConfig, errors: list[str]) -> None:
    _check_choice(errors, "quant", cfg.scheme, SCHEME_NAMES)
    for key, value, problem in (("block_size", cfg.block_size, block_size_problem(cfg.block_size)),
                                ("keep_below", cfg.keep_below, keep_below_problem(cfg.keep_below))):
        if problem:
            errors.append(f"quant.{key}={value!r}: {problem}")


def build_section(cls: type, node: Any, key: str, errors: list[str]) -> Any:
    """Build dataclass ``cls`` from a plain mapping, recording unknown keys as errors."""
    node = dict(node or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(node) - names)
    if unknown:
        errors.append(
            f"unknown key(s) {', '.join(f'{key}.{u}' for u in unknown)}; "
            f"known: {', '.join(sorted(names))}"
        )
    node = check_types(cls, node, key, errors)
    try:
        return cls(**{k: v for k, v in node.items() if k in names})
    except TypeError as exc:  # a required field is missing
        errors.append(f"{key}: {exc}")
        return cls()


def config_error(errors: list[str]) -> ConfigError:
    """One problem fits on the ``error:`` line; several are listed below it, one per line."""
    if len(errors) == 1:
        return ConfigError(f"invalid configuration: {errors[0]}")
    return ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))


def config_hash(resolved: dict[str, Any], ignore: tuple[str, ...] = ()) -> str:
    """Stable short hash of the parts of a resolved config that change results."""
    pruned = {k: v for k, v in resolved.items() if k not in ignore}
    blob = json.dumps(pruned, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def diff_configs(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """List of ``key: old -> new`` lines for every leaf that differs (for resume errors)."""
    lines: list[str] = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key, "<missing>"), new.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            lines.extend(diff_configs(a, b, prefix=f"{path}."))
        elif a != b:
            lines.append(f"{path}: {a!r} -> {b!r}")
    return lines


def runs_root_problem(root: Path) -> str | None:
    """Why run directories, the MLflow store and the registry cannot be written under ``root``
    (None when they can), found now rather than by the first write after training.

    Writing is tried for real (a probe file in the nearest existing folder): permission bits say
    nothing for root, and only a write sees a read-only mount.
    """
    existing = root
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        if existing == root:
            return f"{root} is a file, not a folder"
        return f"{existing} is a file, so no folder can be made under it"
    try:
        fd, probe = tempfile.mkstemp(prefix=".kroncl-write-probe-", dir=existing)
    except OSError as exc:
        return f"cannot create files in {existing} ({exc.strerror or exc})"
    os.close(fd)
    os.unlink(probe)
    return None


def runs_root_error(value: object) -> str | None:
    """The ``paths.runs=...`` message for an unusable runs root (None when usable)."""
    why = runs_root_problem(Path(str(value)).expanduser())
    if why is None:
        return None
    return (f"paths.runs={str(value)!r} cannot hold runs: {why}; set paths.runs to a folder you can "
            "write, e.g. paths.runs=runs or paths.runs=$HOME/kroncl-runs")


def resolve_path(value: str | Path | None, default: Path) -> Path:
    return Path(value).expanduser() if value else default


@dataclass
class RunSettings:
    """Every section of a run, typed and validated. ``resolved`` is the plain composed config."""

    seed: int
    stream: Any  # kroncl.data.StreamConfig
    model: Any  # kroncl.models.ModelConfig
    adapter: dict[str, Any]
    """Adapter node; targets/head_targets of null are filled from the model once it is built."""
    strategy: StrategyConfig
    train: TrainConfig
    quant: QuantConfig
    eval: EvalConfig
    tracking: TrackingConfig
    registry: RegistryConfig
    data_dir: Path | None
    strict: bool
    cache_dir: Path
    runs_root: Path
    resume: bool | str
    run_dir: Path | None
    resolved: dict[str, Any]

    @property
    def result_config(self) -> dict[str, Any]:
        """The parts of the config that change results (what a resumed run must match)."""
        skip = {"resume", "run_dir", "paths", "tracking", "registry"}
        out = {k: v for k, v in self.resolved.items() if k not in skip}
        # How fast, not what: a resume may show no progress bar or use other threads, pinning or
        # checkpointing (each gives the same numbers: tests/pipeline/test_pipeline_speed_knobs.py).
        out["train"] = {k: v for k, v in out.get("train", {}).items() if k not in SPEED_ONLY}
        out["data"] = {k: v for k, v in out.get("data", {}).items() if k != "cache_dir"}
        for section, neutral in ADDED_KEYS.items():  # absent from runs written before they existed
            out[section] = {k: v for k, v in out.get(section, {}).items() if k not in neutral or neutral[k] != v}
        return out


def _without_echo(node: Any, seed: Any, seed_ok: bool) -> dict[str, Any]:
    """``stream.seed`` and ``model.seed`` are ``${seed}``: a bad top-level seed is reported
    once, as ``seed=...``, not again for each section that copies it."""
    node = dict(node or {})
    if not seed_ok and "seed" in node and node["seed"] == seed and type(node["seed"]) is type(seed):
        del node["seed"]
    return node


def load_settings(resolved: dict[str, Any]) -> RunSettings:
    """Validate a composed, resolved config (``OmegaConf.to_container(cfg, resolve=True)``).

    Raises:
        ConfigError: listing every problem, each with the key to change.
    """
    from kroncl.adapters import AdapterConfig
    from kroncl.data import StreamConfig
    from kroncl.errors import KronclError
    from kroncl.models import ModelConfig

    errors: list[str] = []
    train = build_section(TrainConfig, resolved.get("train"), "train", errors)
    strategy = build_section(StrategyConfig, resolved.get("strategy"), "strategy", errors)
    quant = build_section(QuantConfig, resolved.get("quant"), "quant", errors)
    evaluation = build_section(EvalConfig, resolved.get("eval"), "eval", errors)
    tracking = build_section(TrackingConfig, resolved.get("tracking"), "tracking", errors)
    registry = build_section(RegistryConfig, resolved.get("registry"), "registry", errors)
    validate_train(train, errors)
    validate_strategy(strategy, errors)
    validate_quant(quant, errors)
    validate_eval(evaluation, errors)

    seed = resolved.get("seed", 0)
    seed_ok = isinstance(seed, int) and not isinstance(seed, bool)
    if not seed_ok:
        errors.append(f"seed={shown(seed)} must be a whole number, e.g. seed=0")
    stream = model = None
    try:
        stream = StreamConfig.from_mapping(_without_echo(resolved.get("stream"), seed, seed_ok))
    except KronclError as exc:
        errors.append(str(exc))
    try:
        model = ModelConfig.from_mapping(_without_echo(resolved.get("model"), seed, seed_ok))
    except KronclError as exc:
        errors.append(str(exc))
    adapter = dict(resolved.get("adapter") or {})
    try:  # targets are checked against the real model later; here every other field
        probe = {**adapter, "targets": adapter.get("targets") or ["probe"]}
        probe["head_targets"] = adapter.get("head_targets") or []
        AdapterConfig.from_dict(probe)
    except KronclError as exc:
        errors.append(str(exc))

    data = dict(resolved.get("data") or {})
    paths = dict(resolved.get("paths") or {})
    resume = resolved.get("resume", False)
    if not isinstance(resume, (bool, str)):
        errors.append(f"resume={resume!r} must be true/false or a run directory")
    data_dir = Path(data["dir"]).expanduser() if data.get("dir") else None
    if data_dir is not None and not data_dir.is_dir():
        errors.append(f"data.dir={str(data_dir)!r} is not a directory; point it at a folder "
                      "with <task>/{train,validation,test}.jsonl, or drop it to use the hub")
    runs_problem = runs_root_error(paths.get("runs") or "runs")
    if runs_problem is not None:
        errors.append(runs_problem)
    if errors:
        raise config_error(errors)
    runs_root = Path(paths.get("runs") or "runs")
    return RunSettings(
        seed=seed,
        stream=stream,
        model=model,
        adapter=adapter,
        strategy=strategy,
        train=train,
        quant=quant,
        eval=evaluation,
        tracking=tracking,
        registry=registry,
        data_dir=data_dir,
        strict=bool(data.get("strict", False)),
        cache_dir=Path(data.get("cache_dir") or runs_root / ".cache" / "tokenized"),
        runs_root=runs_root,
        resume=resume,
        run_dir=Path(resolved["run_dir"]) if resolved.get("run_dir") else None,
        resolved=resolved,
    )
