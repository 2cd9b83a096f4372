"""What the main job does after each experience: save, quantize, measure, register, log, checkpoint.

Every step is safe to repeat after a crash (see :class:`ExperienceRecorder`); the fault points
``after_save``, ``registry_publish``, ``after_register`` and ``before_checkpoint`` sit between
them, so the crash tests can stop a run between any two.
"""

from __future__ import annotations

from typing import Any

from kroncl.adapters import adapter_names, adapter_state_dict, save_adapter
from kroncl.evaluate import evaluate_accuracy, swapped_adapter
from kroncl.faults import fault_point
from kroncl.metrics import AccuracyMatrix
from kroncl.metrics.reference import top_prediction
from kroncl.quant import (
    artifact_bytes,
    dequantize_tensors,
    quantization_error,
    quantize_tensors,
    save_quantized_adapter,
)
from kroncl.strategy.checkpoint import Checkpoint, save_checkpoint
from kroncl.strategy.plugin_state import plugins_checkpoint_state, restore_plugins_state
from kroncl.strategy.plugins import AccuracyCollector, TrainLossCollector
from kroncl.strategy.selection import EpochSelection
from pipelines.mlflow_mirror import mirror_run_versions

CLOCK_FIELDS = ("train_iterations", "train_exp_counter", "train_exp_epochs", "train_exp_iterations",
                "train_epoch_iterations", "total_iterations")
"""avalanche's clock: the steps its metrics are logged at, so a resumed run logs at the same ones."""


def restore_strategy(strategy, checkpoint: Checkpoint, train_stream) -> None:
    """The strategy's clock and every plugin's state as ``checkpoint`` saved them (on every
    rank under torchrun; the adapters are restored by the pipeline)."""
    state = checkpoint.state
    for key, value in state.get("clock", {"train_exp_counter": checkpoint.next_experience}).items():
        setattr(strategy.clock, key, value)
    restore_plugins_state(strategy.plugins, state.get("plugins", {}), checkpoint.tensors,
                          strategy=strategy, train_stream=train_stream)


class ExperienceRecorder:
    """What happens after each experience: save, quantize, register, log, checkpoint.

    Called by :func:`kroncl.strategy.loop.run_stream` as ``recorder(index, experience, matrix)``.
    Every step is safe to repeat after a crash: files are replaced atomically, registration
    finds the version a killed run already made, MLflow skips steps it already has.
    """

    def __init__(self, run_dir, settings, prep, strategy, tracker, registrar, record) -> None:
        self.run_dir = run_dir
        self.settings = settings
        self.prep = prep
        self.strategy = strategy
        self.tracker = tracker
        self.registrar = registrar
        self.record = record
        self.scheme = settings.quant.to_scheme()
        self.produced: list[dict[str, Any]] = []

    def restore(self, checkpoint: Checkpoint) -> None:
        state = checkpoint.state
        self.produced = list(state.get("artifacts", []))
        self.registrar.restore(state.get("registry", {}))
        restore_strategy(self.strategy, checkpoint, self.prep.benchmark.train_stream)

    def __call__(self, index: int, experience, matrix: AccuracyMatrix) -> None:
        task = self.prep.task_names[index]
        backbone = self.prep.model.backbone
        name = self.prep.sets.current
        tensors = adapter_state_dict(backbone, name)
        selection = self.log_selection(index, task)
        record = self.save_and_register(index, task, name, tensors, matrix, selection)
        record["top_choice"] = self.top_choices(index)
        record["train_loss"] = self.train_loss(index, task, matrix)
        record["routing_acc"] = self.routing_accuracy(index)
        self.produced.append(record)
        matrix.save(self.run_dir / "metrics")
        self.tracker.log_accuracy_matrix(matrix, chance=self.prep.chance)
        ref = record.get("quant_ref") or record["fp32_ref"]
        if ref is not None:  # registry=off registers nothing: no tag rather than the text "None"
            self.tracker.set_tags({f"registry.{task}": ref})
        mirror_run_versions(self.tracker, self.registrar)  # after the registry commit: it cannot lose one
        fault_point("before_checkpoint", exp=index)
        self.checkpoint(index, name, tensors, matrix)

    def top_choices(self, index: int) -> dict[str, list]:
        """task -> [most predicted answer position, its share] in the evaluation after
        experience ``index`` (the collapse check), logged as ``predictions/<task>/top_choice_share``."""
        collector = next(p for p in self.strategy.plugins if isinstance(p, AccuracyCollector))
        top = {task: list(top_prediction(collector.predicted.get(j, {})))
               for j, task in enumerate(self.prep.task_names)}
        self.tracker.log_metrics({f"predictions/{task}/top_choice_share": share
                                  for task, (_, share) in top.items()}, step=index)
        return top

    def train_loss(self, index: int, task: str, matrix: AccuracyMatrix) -> dict[str, Any] | None:
        """What the learnt-nothing check reads (:func:`kroncl.metrics.reference.learnt_nothing`)
        for experience ``index``: ``epochs`` (mean training loss per epoch), ``chance`` (mean
        ln(choices), the loss of uniform scores), ``acc`` (its own test accuracy after training)
        and ``test_rows``; ``reference/<task>/chance_loss`` in MLflow."""
        collector = next((p for p in self.strategy.plugins if isinstance(p, TrainLossCollector)), None)
        if collector is None or not collector.epochs.get(index):
            return None
        chance = collector.chance[index]
        # step 0 like every reference/ metric: a constant of the task's rows, not of the experience
        self.tracker.log_metrics({f"reference/{task}/chance_loss": chance}, step=0)
        return {"epochs": collector.epochs[index], "chance": chance, "acc": matrix.get(index, index),
                "test_rows": len(self.prep.benchmark.test_stream[index].dataset)}

    def routing_accuracy(self, index: int) -> dict[str, float] | None:
        """task -> share of its test rows answered by its own set, after experience ``index``,
        when answering without task labels (None with labels); ``routing/<task>/acc`` in MLflow."""
        collector = next(p for p in self.strategy.plugins if isinstance(p, AccuracyCollector))
        if not collector.routing:
            return None
        acc = {self.prep.task_names[j]: hits / rows
               for j, (hits, rows) in sorted(collector.routing.items()) if rows}
        self.tracker.log_metrics({f"routing/{task}/acc": a for task, a in acc.items()}, step=index)
        return acc

    def log_selection(self, index: int, task: str) -> dict[str, Any] | None:
        """The experience's epoch choice (None without model selection), logged to MLflow:
        ``val/<task>/acc`` per epoch (step = epoch) and ``select/<task>/epoch`` (step = experience)."""
        selector = next((p for p in self.strategy.plugins if isinstance(p, EpochSelection)), None)
        if selector is None:
            return None
        sel = selector.last
        for epoch, acc in enumerate(sel.val_acc, start=1):
            self.tracker.log_metrics({f"val/{task}/acc": acc}, step=epoch)
        self.tracker.log_metrics({f"select/{task}/epoch": sel.epoch}, step=index)
        return sel.to_dict()

    def save_and_register(self, index: int, task: str, name: str, tensors, matrix,
                          selection: dict[str, Any] | None = None) -> dict[str, Any]:
        cfg, registrar, counts = self.prep.adapter_cfg, self.registrar, self.prep.param_counts
        out = self.run_dir / "adapters" / f"exp{index}-{task}"
        fp32_dir = save_adapter(out / "fp32", tensors, cfg, base_model=registrar.base_model,
                                extra={"task": task, "experience": index, "adapter_set": name})
        fault_point("after_save", exp=index)
        record: dict[str, Any] = {
            "experience": index, "task": task, "adapter_set": name,
            "fp32_dir": str(fp32_dir), "fp32_bytes": artifact_bytes(tensors), "selection": selection,
        }
        metrics = {"acc": matrix.get(index, index)}
        if selection is not None:  # measured on the stored (selected) tensors, like acc
            metrics["val_acc"] = selection["val_acc"][selection["selected_epoch"] - 1]
        record["fp32_ref"] = registrar.register(task, fp32_dir, bits=32, metrics=metrics,
                                                param_count=counts["adapter_set"], experience=index)
        if self.scheme is None:
            return record
        scheme_name = self.settings.quant.scheme
        packed, meta = quantize_tensors(tensors, self.scheme)
        q_dir = save_quantized_adapter(out / scheme_name, packed, meta, cfg, base_model=registrar.base_model,
                                       extra={"task": task, "experience": index})
        report = quantization_error(tensors, packed, meta, cfg)
        quant_acc = self.measure_stored(index, name, dequantize_tensors(packed, meta))
        record.update({
            "quant_dir": str(q_dir), "quant_bytes": artifact_bytes(packed),
            "quant_scheme": scheme_name, "delta_rel_error": report.summary(), "quant_acc": quant_acc,
        })
        record["quant_ref"] = registrar.register(
            task, q_dir, bits=self.scheme.bits, metrics={"acc": quant_acc, **report.summary()},
            param_count=counts["adapter_set"], experience=index, quantized_from=record["fp32_ref"])
        self.tracker.log_metrics({f"quant/{task}/delta_rel_error_mean": report.mean,
                                  f"quant/{task}/bytes_ratio": record["quant_bytes"] / record["fp32_bytes"],
                                  f"quant/{task}/acc": quant_acc},
                                 step=index)
        return record

    def measure_stored(self, index: int, name: str, tensors) -> float:
        """Test accuracy on experience ``index``'s task with set ``name`` holding ``tensors``
        (the dequantized artifact): the number its registry version records is measured on
        what is stored, not copied from the fp32 adapter. The set is restored afterwards."""
        strategy = self.strategy
        with swapped_adapter(self.prep.model.backbone, name, tensors):
            return evaluate_accuracy(
                self.prep.model, self.prep.benchmark.test_stream[index].dataset, self.prep.sets.route,
                batch_size=self.settings.train.eval_batch_size, device=strategy.device,
                autocast=strategy._autocast)

    def checkpoint(self, index: int, name: str, tensors, matrix: AccuracyMatrix) -> None:
        backbone = self.prep.model.backbone
        plugin_json, plugin_tensors = plugins_checkpoint_state(self.strategy.plugins)
        save_checkpoint(
            self.run_dir,
            index + 1,
            {n: tensors if n == name else adapter_state_dict(backbone, n) for n in adapter_names(backbone)},
            {
                "config": self.record.config,
                "config_hash": self.record.config_hash,
                "accuracy_matrix": matrix.to_dict(),
                "adapter_sets": self.prep.sets.state_dict(),
                "artifacts": self.produced,
                "registry": self.registrar.state(),
                "clock": {k: int(getattr(self.strategy.clock, k)) for k in CLOCK_FIELDS},
                "plugins": plugin_json,
            },
            plugin_tensors,
        )
