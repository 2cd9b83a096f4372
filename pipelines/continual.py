"""The main job: a continual stream of tasks, trained with adapters, tracked and registered.

Reads top to bottom; every reusable piece lives in ``kroncl`` or ``registry``:

    settings -> run directory -> stream -> model -> adapters -> benchmark -> tracking
    -> strategy (+ resume) -> train the stream -> per experience: save, quantize, register,
    checkpoint, log -> summary
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kroncl.adapters import (
    AdapterConfig,
    adapter_names,
    adapter_state_dict,
    add_adapter,
    count_adapter_parameters,
    load_adapter_state_dict,
    save_adapter,
)
from kroncl.config import RunSettings, config_hash, load_settings
from kroncl.data import build_stream, make_benchmark
from kroncl.errors import ConfigError
from kroncl.metrics import AccuracyMatrix
from kroncl.models import build_model
from kroncl.quant import QuantScheme, artifact_bytes, quantize_tensors
from kroncl.quant.measure import quantization_error
from kroncl.strategy.adapter_sets import AdapterSets
from kroncl.strategy.checkpoint import check_same_config, load_checkpoint, save_checkpoint
from kroncl.strategy.loop import run_stream
from kroncl.strategy.plugins import AccuracyCollector, build_plugins
from kroncl.strategy.template import KronclStrategy, seed_everything
from kroncl.tracking import Tracker, flatten_config
from pipelines.registration import Registrar
from pipelines.summary import format_summary

log = logging.getLogger("kroncl.pipeline")


@dataclass
class RunResult:
    run_dir: Path
    matrix: AccuracyMatrix
    summary: dict[str, Any]
    mlflow_run_id: str | None
    registry_refs: list[str] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)


def run(cfg: DictConfig | dict, run_dir: Path | None = None) -> RunResult:
    """Run the job described by a composed Hydra config. Returns what it produced."""
    resolved = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    settings = load_settings(resolved)

    # -- run directory: a new one, or the one being resumed --------------------------------
    run_dir = resolve_run_dir(settings, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
    handler = attach_log_file(run_dir)
    try:
        return run_in(run_dir, settings, resolved)
    finally:
        # Detached so a later run in this process does not also write into this run's run.log.
        if handler is not None:
            logging.getLogger("kroncl").removeHandler(handler)
            handler.close()


def run_in(run_dir: Path, settings: RunSettings, resolved: dict[str, Any]) -> RunResult:
    """The job proper, in a prepared run directory (see :func:`run`)."""
    log.info("run directory: %s", run_dir)
    seed_everything(settings.seed)

    # -- stream: every task checked before anything is trained -----------------------------
    tasks = build_stream(settings.stream, settings.data_dir)
    task_names = [t.name for t in tasks]
    log.info("stream %s: %s", settings.stream.name, " -> ".join(task_names))

    # -- model and adapters ----------------------------------------------------------------
    model = build_model(settings.model)
    adapter_cfg = complete_adapter_config(settings.adapter, model)
    sets = AdapterSets(settings.strategy.mode)
    replaced = sets.inject(model.backbone, adapter_cfg)
    first = sets.current
    param_counts = {
        "base": sum(p.numel() for p in model.parameters() if not p.requires_grad),
        "adapter_set": count_adapter_parameters(model.backbone, first),
        "adapted_layers": len(replaced),
    }
    log.info("adapters: %s on %d layers, %d trainable parameters per set",
             adapter_cfg.method, len(replaced), param_counts["adapter_set"])

    # -- benchmark (tokenised once, cached) --------------------------------------------------
    benchmark = make_benchmark(tasks, model, cache_dir=settings.cache_dir)

    # -- resume -------------------------------------------------------------------------------
    result_cfg = settings.result_config
    cfg_hash = config_hash(result_cfg)
    matrix = AccuracyMatrix(task_names)
    start = 0
    checkpoint = load_checkpoint(run_dir) if settings.resume else None
    if checkpoint is not None:
        check_same_config(checkpoint, result_cfg, cfg_hash)
        sets = AdapterSets.from_state_dict(checkpoint.state["adapter_sets"])
        for name, tensors in checkpoint.adapters.items():
            if name not in adapter_names(model.backbone):
                add_adapter(model.backbone, name)
            load_adapter_state_dict(model.backbone, tensors, name)
        matrix = AccuracyMatrix.from_dict(checkpoint.state["accuracy_matrix"])
        start = checkpoint.next_experience
        log.info("resuming %s at experience %d of %d", run_dir, start, len(tasks))

    # -- tracking -------------------------------------------------------------------------------
    tracker = Tracker.from_config(settings.tracking, run_dir, runs_root=settings.runs_root)
    mlflow_run_id = tracker.start(
        run_name=run_dir.name,
        tags={"kroncl.stream": settings.stream.name, "kroncl.run_dir": str(run_dir)},
    )
    tracker.log_params(flatten_config(resolved))
    tracker.log_params({f"params.{k}": v for k, v in param_counts.items()})

    # -- strategy -------------------------------------------------------------------------------
    from avalanche.evaluation.metrics import (
        accuracy_metrics,
        bwt_metrics,
        forgetting_metrics,
        forward_transfer_metrics,
        loss_metrics,
    )
    from avalanche.training.plugins import EvaluationPlugin

    from kroncl.tracking import MLflowLogger

    evaluator = EvaluationPlugin(
        accuracy_metrics(epoch=True, experience=True, stream=True),
        loss_metrics(epoch=True),
        forgetting_metrics(experience=True, stream=True),
        bwt_metrics(experience=True, stream=True),
        forward_transfer_metrics(experience=True, stream=True),
        loggers=[MLflowLogger(tracker, prefix="avalanche/")],
    )
    collector = AccuracyCollector()
    strategy = KronclStrategy(
        model=model,
        adapter_sets=sets,
        train=settings.train,
        plugins=[*build_plugins(settings.strategy, sets), collector],
        evaluator=evaluator,
        seed=settings.seed,
    )
    if start:
        strategy.clock.train_exp_counter = start

    # -- per experience: save, quantize, register, checkpoint, log ------------------------------
    registrar = Registrar.from_config(settings, model, adapter_cfg, mlflow_run_id)
    scheme = QuantScheme.from_name(settings.quant.scheme, block_size=settings.quant.block_size)
    produced: list[dict[str, Any]] = []
    if checkpoint is not None:
        produced = list(checkpoint.state.get("artifacts", []))
        registrar.restore(checkpoint.state.get("registry", {}))

    def on_experience_end(index: int, experience, matrix: AccuracyMatrix) -> None:
        task = task_names[index]
        name = sets.current
        tensors = adapter_state_dict(model.backbone, name)
        out = run_dir / "adapters" / f"exp{index}-{task}"
        fp32_dir = save_adapter(out / "fp32", tensors, adapter_cfg, base_model=registrar.base_model,
                                extra={"task": task, "experience": index, "adapter_set": name})
        record: dict[str, Any] = {
            "experience": index, "task": task, "adapter_set": name,
            "fp32_dir": str(fp32_dir), "fp32_bytes": artifact_bytes(tensors),
        }
        metrics = {"acc": matrix.get(index, index)}
        record["fp32_ref"] = registrar.register(task, fp32_dir, bits=32, metrics=metrics,
                                                param_count=param_counts["adapter_set"], experience=index)
        if scheme is not None:
            packed, meta = quantize_tensors(tensors, scheme)
            q_dir = save_adapter(out / settings.quant.scheme, packed, adapter_cfg,
                                 base_model=registrar.base_model,
                                 extra={"quantization": meta, "task": task, "experience": index})
            report = quantization_error(model.backbone, name, packed, meta)
            record.update({
                "quant_dir": str(q_dir), "quant_bytes": artifact_bytes(packed),
                "quant_scheme": settings.quant.scheme, "delta_rel_error": report.summary(),
            })
            record["quant_ref"] = registrar.register(
                task, q_dir, bits=scheme.bits, metrics={**metrics, **report.summary()},
                param_count=param_counts["adapter_set"], experience=index, quantized_from=record["fp32_ref"])
            tracker.log_metrics({f"quant/{task}/delta_rel_error_mean": report.mean,
                                 f"quant/{task}/bytes_ratio": record["quant_bytes"] / record["fp32_bytes"]},
                                step=index)
        produced.append(record)
        matrix.save(run_dir / "metrics")
        tracker.log_accuracy_matrix(matrix)
        ref = record.get("quant_ref") or record["fp32_ref"]
        if ref is not None:  # registry=off registers nothing: no tag rather than the text "None"
            tracker.set_tags({f"registry.{task}": ref})
        save_checkpoint(
            run_dir,
            index + 1,
            {n: tensors if n == name else adapter_state_dict(model.backbone, n)
             for n in adapter_names(model.backbone)},
            {
                "config": result_cfg,
                "config_hash": cfg_hash,
                "accuracy_matrix": matrix.to_dict(),
                "adapter_sets": sets.state_dict(),
                "artifacts": produced,
                "registry": registrar.state(),
            },
        )

    started = time.perf_counter()
    try:
        run_stream(strategy, benchmark, matrix, start=start,
                   on_experience_end=on_experience_end, log=log.info)
    except KeyboardInterrupt:
        tracker.end("KILLED")
        raise
    except Exception:
        # Finished experiences are already saved, registered and checkpointed: resume=true.
        tracker.end("FAILED")
        raise
    elapsed = time.perf_counter() - started

    # -- summary --------------------------------------------------------------------------------
    summary = matrix.summary()
    matrix.save(run_dir / "metrics")
    tracker.log_accuracy_matrix(matrix)  # idempotent per step; covers resuming a finished run
    # Tracker.log_accuracy_matrix already logged final/{acc,bwt,fwt,forgetting} when the matrix
    # became complete; logging them again would put two points at the same step in MLflow.
    tracker.log_metrics({f"final/{k}": v for k, v in summary.items()
                         if isinstance(v, (int, float)) and k not in ("acc", "bwt", "fwt", "forgetting")},
                        step=len(task_names) - 1)
    tracker.log_artifact(run_dir / "config.yaml")
    tracker.end("FINISHED")
    result = RunResult(run_dir, matrix, summary, mlflow_run_id,
                       [r.get("quant_ref") or r["fp32_ref"] for r in produced if r.get("fp32_ref")],
                       produced)
    text = format_summary(
        result, settings=settings, param_counts=param_counts, tracker=tracker,
        registry_url=registrar.url, elapsed=elapsed,
        registry_artifacts=str(registrar.store.artifacts.root) if registrar.store is not None else None,
    )
    (run_dir / "summary.txt").write_text(text)
    (run_dir / "summary.json").write_text(json.dumps(
        {"summary": summary, "artifacts": produced, "param_counts": param_counts,
         "mlflow_run_id": mlflow_run_id, "tracking_failures": len(tracker.failures)},
        indent=2, default=str))
    print(text)
    return result


def resolve_run_dir(settings: RunSettings, explicit: Path | None) -> Path:
    """The resumed run's directory, or a fresh one (Hydra's output directory by default)."""
    if isinstance(settings.resume, str) and settings.resume not in ("true", "false"):
        path = Path(settings.resume).expanduser()
        if not (path / "checkpoints" / "LATEST").exists():
            raise ConfigError(f"resume={settings.resume!r} has no checkpoints/LATEST; "
                              "point resume= at a run directory written by kroncl")
        return path
    if settings.resume is True:
        stream_root = settings.runs_root / settings.stream.name
        candidates = sorted(p.parent.parent for p in stream_root.glob("*/checkpoints/LATEST"))
        if not candidates:
            raise ConfigError(f"resume=true but no run of stream {settings.stream.name!r} under "
                              f"{stream_root} has a checkpoint; start without resume")
        return candidates[-1]
    if explicit is not None:
        return Path(explicit)
    if settings.run_dir is not None:
        return settings.run_dir
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not under @hydra.main (library use): a timestamped folder
        return settings.runs_root / settings.stream.name / time.strftime("%Y-%m-%d_%H-%M-%S")


def complete_adapter_config(node: dict[str, Any], model) -> AdapterConfig:
    """Fill null targets with the model's defaults and its head modules, then validate."""
    node = dict(node)
    node["targets"] = list(node.get("targets") or model.default_targets)
    node["head_targets"] = list(node["head_targets"]) if node.get("head_targets") is not None \
        else list(model.head_modules)
    return AdapterConfig.from_dict(node)


def attach_log_file(run_dir: Path) -> logging.FileHandler | None:
    """Mirror the kroncl loggers into <run_dir>/run.log (Hydra also writes its own log).

    Returns:
        The handler added (the caller removes it when the run ends), or None when one for
        this file was already attached.
    """
    root = logging.getLogger("kroncl")
    root.setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    path = os.path.abspath(run_dir / "run.log")  # as FileHandler.baseFilename
    if any(isinstance(h, logging.FileHandler) and h.baseFilename == path for h in root.handlers):
        return None
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    return handler

