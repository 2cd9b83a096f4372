"""The main job: a continual stream of tasks, trained with adapters, tracked and registered.

Reads top to bottom as five stages; every reusable piece lives in ``kroncl`` or ``registry``:

    open the run directory (new, resumed, or finished)   -> :func:`run`
    prepare: stream, model, adapters, benchmark           -> :func:`prepare`
    restore what a checkpoint holds                       -> :func:`restore`
    train the stream; per experience save, quantize,
      register, log, checkpoint                           -> :func:`run_in`, :class:`ExperienceRecorder`
    finish: summary, MLflow run ended, run marked done    -> :func:`finish`

Crash safety: a run killed at any instant resumes (``resume=true`` or ``resume=<run dir>``) to
the same accuracy matrix and adapter tensors as an uninterrupted run. The resume continues the
same MLflow run (its id is in ``run.json``), finds registry versions it already made (they are
tagged with the run's id and experience), and restores every plugin's state from the checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from omegaconf import DictConfig, OmegaConf

import kroncl
from kroncl.adapters import (
    AdapterConfig,
    adapter_names,
    add_adapter,
    count_adapter_parameters,
    load_adapter_state_dict,
)
from kroncl.config import RunSettings, config_hash, load_settings
from kroncl.data import build_stream, make_benchmark
from kroncl.distributed import SINGLE, World, leave, world_from_env
from kroncl.errors import ConfigError, KronclError
from kroncl.faults import fault_point
from kroncl.fileio import atomic_write_text, remove_stale_temp_files
from kroncl.metrics import AccuracyMatrix
from kroncl.metrics.reference import ReferenceRates, reference_rates
from kroncl.models import build_model
from kroncl.strategy.adapter_sets import AdapterSets
from kroncl.strategy.checkpoint import (
    Checkpoint,
    check_same_config,
    load_checkpoint,
    refuse_config_change,
)
from kroncl.strategy.loop import run_stream
from kroncl.strategy.plugins import AccuracyCollector, TrainLossCollector, build_plugins
from kroncl.strategy.selection import build_selection
from kroncl.strategy.task_router import build_router
from kroncl.strategy.template import KronclStrategy, resolve_device, resolve_threads, seed_everything
from kroncl.tracking import Tracker, flatten_config
from kroncl.tracking.run_view import DESCRIPTION_TAG, run_description, run_name, strategy_label
from pipelines.data_parallel import StartSender, check_same_start, receive_start
from pipelines.experience import ExperienceRecorder, restore_strategy
from pipelines.registration import Registrar
from pipelines.run_dir import RunLock, RunRecord, attach_log_file, resolve_run_dir
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
    run_id: str = ""
    """The run's identity (``run.json``), tagged on every registry version it made."""
    already_finished: bool = False
    """True when a resume found the run finished and only reported it."""


def run(cfg: DictConfig | dict, run_dir: Path | None = None, hydra_dir: Path | None = None,
        overrides: list[str] | None = None) -> RunResult | None:
    """Run (or resume) the job described by a composed Hydra config. Returns what it produced.

    Under torchrun (``WORLD_SIZE`` > 1) every rank calls this: rank 0 does all of the below and
    returns the result; the other ranks train and evaluate their shards (:func:`run_worker`) and
    return None.

    Args:
        cfg: the composed config (``python -m kroncl.run``'s, or Hydra's compose API's).
        run_dir: write here (library use); default: ``run_dir=`` of the config, else
            ``hydra_dir``, else a new unique folder under ``<paths.runs>/<stream>/``.
        hydra_dir: Hydra's output directory when called from ``python -m kroncl.run``.
        overrides: the command line's overrides, saved as ``overrides.yaml`` of a new run.

    Raises:
        ConfigError: bad settings, a changed configuration on resume, or a run directory that
            holds another run or is in use by another process.
    """
    resolved = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    settings = load_settings(resolved)
    world = world_from_env(settings.train.collective_timeout_s, resolve_device(settings.train.device).type)
    ended_well = False
    try:
        if not world.is_main:
            result = run_worker(settings, world)
        else:
            start = StartSender(world)
            try:
                result = run_main(settings, resolved, world, start, run_dir, hydra_dir, overrides)
            except BaseException as exc:
                start.stop(f"{type(exc).__name__}: {exc}")  # the others must not wait for a start
                raise
            finally:
                start.stop()  # a finished run: nothing to train
        ended_well = True
        return result
    finally:
        leave(world, together=ended_well)  # all ranks leave at once, unless one failed


def run_main(settings: RunSettings, resolved: dict[str, Any], world: World, start: StartSender,
             run_dir: Path | None, hydra_dir: Path | None, overrides: list[str] | None) -> RunResult:
    """Rank 0's (or the only process's) part of :func:`run`: everything that writes."""
    run_dir, resuming = resolve_run_dir(settings, run_dir, hydra_dir)
    created = not run_dir.exists() or not any(run_dir.iterdir())
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):  # refused before anything is read or written when another run holds it
        try:
            record = open_record(run_dir, settings, resuming, overrides)
            if record.is_finished:
                return report_finished(run_dir, record)
            handler = attach_log_file(run_dir)
            try:
                return run_in(run_dir, settings, resolved, record, world, start)
            finally:
                # Detached so a later run in this process does not also write into this run's run.log.
                if handler is not None:
                    logging.getLogger("kroncl").removeHandler(handler)
                    handler.close()
        except KronclError:
            if created and not started_anything(run_dir):
                shutil.rmtree(run_dir, ignore_errors=True)  # a user error must not leave an empty run
            raise


def open_record(run_dir: Path, settings: RunSettings, resuming: bool, overrides: list[str] | None) -> RunRecord:
    """This run's record: read back on resume (config checked), or new (config.yaml and the
    command line's overrides.yaml written)."""
    result_cfg = settings.result_config
    cfg_hash = config_hash(result_cfg)
    record = RunRecord.load(run_dir)
    if record is not None and not resuming:
        raise ConfigError(
            f"run directory {run_dir} already holds run {record.run_id} ({record.status}); resume it "
            f"with resume={run_dir}, or start a new run in another directory"
        )
    if record is None:  # a new run, or a run written before run.json existed (checkpoint only)
        record = RunRecord.new(result_cfg, cfg_hash)
    refuse_config_change({"config": record.config, "config_hash": record.config_hash},
                         result_cfg, cfg_hash, run_dir)
    if not (run_dir / "config.yaml").exists():
        atomic_write_text(run_dir / "config.yaml",
                          OmegaConf.to_yaml(OmegaConf.create(settings.resolved)))
        if overrides is not None:
            atomic_write_text(run_dir / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(overrides)))
    record.save(run_dir)
    return record


def started_anything(run_dir: Path) -> bool:
    """Whether a failed run already made something worth keeping (a checkpoint or an MLflow run)."""
    record = RunRecord.load(run_dir) if (run_dir / "run.json").exists() else None
    return (run_dir / "checkpoints").exists() or bool(record and record.mlflow_run_id)


@dataclass
class Prepared:
    """What a run builds before training: stream, model with adapters, benchmark."""

    task_names: list[str]
    model: Any
    adapter_cfg: AdapterConfig
    sets: AdapterSets
    benchmark: Any
    param_counts: dict[str, int]
    dropped_rows: dict[str, dict[str, int]]
    """task -> split -> rows dropped as invalid (data.strict=false), for the summary files."""
    reference: dict[str, ReferenceRates]
    """task -> chance and majority-answer accuracy of its test set (what R's numbers mean)."""

    @property
    def chance(self) -> dict[str, float]:
        """task -> chance level of its test set (the dotted lines of the forgetting curves)."""
        return {task: rates.chance for task, rates in self.reference.items()}


def prepare(settings: RunSettings) -> Prepared:
    """Stream (every task checked before anything is trained), model, adapters, benchmark."""
    seed_everything(settings.seed)
    threads = resolve_threads(settings.train.threads)
    torch.set_num_threads(threads)
    log.info("torch: %d CPU thread(s) (train.threads=%d%s)", threads, settings.train.threads,
             ", auto" if settings.train.threads == 0 else "")
    tasks = build_stream(settings.stream, settings.data_dir)
    task_names = [t.name for t in tasks]
    log.info("stream %s: %s", settings.stream.name, " -> ".join(task_names))
    model = build_model(settings.model)
    if settings.train.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if settings.train.dropout is not None:  # before injection: adapter.dropout is the adapters' own
        model.set_dropout(settings.train.dropout)
    adapter_cfg = complete_adapter_config(settings.adapter, model)
    sets = AdapterSets(settings.strategy.mode)
    replaced = sets.inject(model.backbone, adapter_cfg)
    param_counts = {
        "base": sum(p.numel() for p in model.parameters() if not p.requires_grad),
        "adapter_set": count_adapter_parameters(model.backbone, sets.current),
        "adapted_layers": len(replaced),
    }
    log.info("adapters: %s on %d layers, %d trainable parameters per set",
             adapter_cfg.method, len(replaced), param_counts["adapter_set"])
    benchmark = make_benchmark(tasks, model, cache_dir=settings.cache_dir)
    dropped = {t.name: {split: len(ids) for split, ids in t.dropped.items() if ids} for t in tasks}
    reference = {t.name: reference_rates(t.test) for t in tasks}
    return Prepared(task_names, model, adapter_cfg, sets, benchmark, param_counts, dropped, reference)


def restore(prep: Prepared, checkpoint: Checkpoint) -> AccuracyMatrix:
    """Put the adapter sets and their bookkeeping back as the checkpoint saved them."""
    prep.sets = AdapterSets.from_state_dict(checkpoint.state["adapter_sets"])
    backbone = prep.model.backbone
    for name, tensors in checkpoint.adapters.items():
        if name not in adapter_names(backbone):
            add_adapter(backbone, name)
        load_adapter_state_dict(backbone, tensors, name)
    return AccuracyMatrix.from_dict(checkpoint.state["accuracy_matrix"])


def run_in(run_dir: Path, settings: RunSettings, resolved: dict[str, Any], record: RunRecord,
           world: World, start: StartSender) -> RunResult:
    """The job proper, in a prepared and locked run directory (see :func:`run`)."""
    log.info("run directory: %s", run_dir)
    remove_stale_temp_files(run_dir)  # left by a writer killed mid-write; the lock says it is dead
    prep = prepare(settings)
    checkpoint = load_checkpoint(run_dir)
    matrix = AccuracyMatrix(prep.task_names, task_labels=settings.eval.task_labels)
    if checkpoint is not None:
        check_same_config(checkpoint, settings.result_config, record.config_hash)
        matrix = restore(prep, checkpoint)
        log.info("resuming %s at experience %d of %d", run_dir, checkpoint.next_experience,
                 len(prep.task_names))
    elif record.mlflow_run_id is not None:
        log.info("resuming %s from its start (killed before the first checkpoint)", run_dir)

    # The registry first: a base model it cannot take is a user error, before any MLflow run.
    registrar = Registrar.from_config(settings, prep.model, prep.adapter_cfg, record.mlflow_run_id,
                                      run_id=record.run_id)
    tracker = open_tracking(settings, run_dir, record, resolved, prep.param_counts, prep.task_names)
    tracker.set_tags({"kroncl.world_size": world.size})
    registrar.mlflow_run_id = record.mlflow_run_id
    started = time.perf_counter()
    try:
        strategy = build_strategy(settings, prep, tracker, world)
        recorder = ExperienceRecorder(run_dir, settings, prep, strategy, tracker, registrar, record)
        if checkpoint is not None:
            recorder.restore(checkpoint)
        if world.distributed:
            log.info("data-parallel: %d processes, %s backend; rank 0 writes", world.size,
                     torch.distributed.get_backend())
        start.train(checkpoint)
        check_same_start(world, prep.model)
        run_stream(strategy, prep.benchmark, matrix, start=checkpoint.next_experience if checkpoint else 0,
                   on_experience_end=recorder, log=log.info)
    except KeyboardInterrupt:
        tracker.end("KILLED")
        raise
    except Exception:
        # Finished experiences are already saved, registered and checkpointed: resume=true.
        tracker.end("FAILED")
        raise
    fault_point("before_finish")
    return finish(run_dir, settings, prep, matrix, tracker, registrar, recorder.produced, record,
                  time.perf_counter() - started)


def open_tracking(settings: RunSettings, run_dir: Path, record: RunRecord, resolved: dict[str, Any],
                  param_counts: dict[str, int], task_names: list[str]) -> Tracker:
    """A new MLflow run, or the same run again when resuming (its id is in run.json), named
    ``"<stream> · <adapter> · <strategy> · seed <n>"`` with a description of what to open."""
    tracker = Tracker.from_config(settings.tracking, run_dir, runs_root=settings.runs_root)
    what = {"stream": settings.stream.name, "adapter": str(settings.adapter.get("method")),
            "strategy": strategy_label(settings.strategy.mode, settings.strategy.plugins),
            "seed": settings.seed}
    tags = {"kroncl.stream": settings.stream.name, "kroncl.run_dir": str(run_dir),
            "kroncl.run_dir_name": run_dir.name, "kroncl.run": record.run_id, "kroncl.version": kroncl.__version__,
            **{f"kroncl.{k}": v for k, v in what.items() if k != "stream"}}
    name = run_name(**what)  # the run directory's (timestamped) name stays the tag kroncl.run_dir_name
    if record.mlflow_run_id is not None:
        run_id = tracker.resume(record.mlflow_run_id, tags=tags, run_name=name)
    else:
        run_id = tracker.start(run_name=name, tags=tags)
    if run_id is not None:  # the description embeds the forgetting chart by the run's id
        tracker.set_tags({DESCRIPTION_TAG: run_description(tasks=task_names, run_dir=str(run_dir),
                                                           run_id=run_id, **what)})
    if run_id != record.mlflow_run_id:
        record.mlflow_run_id = run_id
        record.save(run_dir)
    tracker.log_params(flatten_config(resolved))
    tracker.log_params({f"params.{k}": v for k, v in param_counts.items()})
    return tracker


def run_worker(settings: RunSettings, world: World) -> None:
    """A rank other than 0 under torchrun: the same model, strategy and stream as rank 0, its
    shard of every batch; no run directory, registry, MLflow or file of any kind."""
    logging.getLogger("kroncl").setLevel(logging.WARNING)  # rank 0 reports progress
    os.environ["TQDM_DISABLE"] = "1"  # and shows the progress bars
    datasets.disable_progress_bars()
    message = receive_start(world)
    if not message.train:
        return None
    checkpoint = message.checkpoint
    prep = prepare(settings)
    matrix = AccuracyMatrix(prep.task_names, task_labels=settings.eval.task_labels)
    if checkpoint is not None:
        matrix = restore(prep, checkpoint)
    tracker = Tracker(None, settings.tracking.experiment, False, ".")  # disabled: writes nothing
    strategy = build_strategy(settings, prep, tracker, world)
    if checkpoint is not None:
        restore_strategy(strategy, checkpoint, prep.benchmark.train_stream)
    check_same_start(world, prep.model)
    run_stream(strategy, prep.benchmark, matrix, start=checkpoint.next_experience if checkpoint else 0,
               log=log.debug)
    return None


def build_strategy(settings: RunSettings, prep: Prepared, tracker: Tracker,
                   world: World = SINGLE) -> KronclStrategy:
    """The Avalanche strategy with the configured plugins and an evaluator logging to MLflow.

    The evaluator carries only avalanche metrics without memory across experiences (accuracy,
    loss): its forgetting/BWT/forward-transfer metrics keep their history in the process and
    would restart from the wrong row after a resume; those values are computed from the accuracy
    matrix instead (``stream/avalanche_*``, :mod:`kroncl.metrics.avalanche_compat`).
    """
    from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
    from avalanche.training.plugins import EvaluationPlugin

    from kroncl.tracking import MLflowLogger

    evaluator = EvaluationPlugin(
        accuracy_metrics(epoch=True, experience=True, stream=True),
        loss_metrics(epoch=True),
        # Rank 0's shard only under torchrun (avalanche refuses loggers on the other ranks).
        loggers=[MLflowLogger(tracker, prefix="avalanche/")] if world.is_main else [],
    )
    router, fitter = build_router(settings.eval.task_labels, settings.eval.router, prep.sets.routes_by_task)
    return KronclStrategy(
        model=prep.model,
        adapter_sets=prep.sets,
        train=settings.train,
        # Selection first: it puts the best epoch back before EWC/LwF take their snapshots.
        plugins=[*build_selection(settings.train.select, settings.train.patience, prep.benchmark, log.info),
                 *build_plugins(settings.strategy, prep.sets, seed=settings.seed), *fitter,
                 AccuracyCollector(), TrainLossCollector()],
        evaluator=evaluator,
        seed=settings.seed,
        task_labels=settings.eval.task_labels,
        task_router=router,
        world=world,
    )


def finish(run_dir: Path, settings: RunSettings, prep: Prepared, matrix: AccuracyMatrix, tracker: Tracker,
           registrar: Registrar, produced: list[dict[str, Any]], record: RunRecord, elapsed: float) -> RunResult:
    """Summary files, final metrics, the MLflow run ended and the run marked finished."""
    summary = matrix.summary()
    matrix.save(run_dir / "metrics")
    tracker.log_accuracy_matrix(matrix, chance=prep.chance)  # idempotent per step; covers resuming after the last checkpoint
    # Tracker.log_accuracy_matrix already logged final/{acc,bwt,fwt,forgetting} when the matrix
    # became complete; logging them again would put two points at the same step in MLflow.
    tracker.log_metrics({f"final/{k}": v for k, v in summary.items()
                         if isinstance(v, (int, float)) and k not in ("acc", "bwt", "fwt", "forgetting")},
                        step=len(prep.task_names) - 1)
    tracker.log_metrics({f"reference/{task}/{k}": getattr(rates, k) for task, rates in prep.reference.items()
                         for k in ("chance", "majority")}, step=0)
    tracker.log_artifact(run_dir / "config.yaml")
    result = RunResult(run_dir, matrix, summary, record.mlflow_run_id,
                       [r.get("quant_ref") or r["fp32_ref"] for r in produced if r.get("fp32_ref")],
                       produced, run_id=record.run_id)
    text = format_summary(
        result, settings=settings, param_counts=prep.param_counts, dropped_rows=prep.dropped_rows,
        reference=prep.reference, tracker=tracker,
        registry_url=registrar.url, elapsed=elapsed,
        registry_artifacts=str(registrar.store.artifacts.root) if registrar.store is not None else None,
    )
    atomic_write_text(run_dir / "summary.txt", text)
    atomic_write_text(run_dir / "summary.json", json.dumps(
        {"summary": summary, "artifacts": produced, "param_counts": prep.param_counts,
         "dropped_rows": prep.dropped_rows,
         "reference": {task: rates.to_dict() for task, rates in prep.reference.items()},
         "mlflow_run_id": record.mlflow_run_id, "tracking_failures": len(tracker.failures),
         "kroncl_version": kroncl.__version__},
        indent=2, default=str))
    tracker.end("FINISHED")
    record.mark_finished(run_dir)
    print(text)
    return result


def report_finished(run_dir: Path, record: RunRecord) -> RunResult:
    """A resume of a finished run: print its summary again; nothing is trained or logged."""
    data = json.loads((run_dir / "summary.json").read_text())
    matrix = AccuracyMatrix.load(run_dir / "metrics")
    produced = data["artifacts"]
    print(f"run {run_dir} finished on {record.finished}; nothing to resume. Its summary:")
    print((run_dir / "summary.txt").read_text())
    return RunResult(run_dir, matrix, data["summary"], record.mlflow_run_id,
                     [r.get("quant_ref") or r["fp32_ref"] for r in produced if r.get("fp32_ref")],
                     produced, run_id=record.run_id, already_finished=True)


def complete_adapter_config(node: dict[str, Any], model) -> AdapterConfig:
    """Fill null targets with the model's defaults and its head modules, then validate."""
    node = dict(node)
    node["targets"] = list(node.get("targets") or model.default_targets)
    node["head_targets"] = list(node["head_targets"]) if node.get("head_targets") is not None \
        else list(model.head_modules)
    return AdapterConfig.from_dict(node)
