"""The adapters a run saved load back on CPU and reproduce what the run measured.

* fp32 folders, loaded into a model rebuilt from the run's config, reproduce the run's
  accuracy matrix exactly (the saved files are what was evaluated).
* int4 / int8 folders dequantize to exactly ``dequantize(quantize(fp32))``; as adapters they act
  like the dense ΔW they encode (adapter path == merged weights), and score close to fp32.
"""

from __future__ import annotations

import pytest
import torch

from kroncl.adapters import (
    load_adapter,
    merge_adapter,
    set_active_adapter,
    unmerge_adapters,
)
from kroncl.config import load_settings
from kroncl.data import build_stream
from kroncl.models import build_model
from kroncl.quant import (
    QuantScheme,
    dequantize_tensors,
    load_adapter_dequantized,
    load_adapter_dequantized_into,
    quantize_tensors,
)


class Evaluator:
    """A model rebuilt from a run's config plus the test examples of its stream."""

    def __init__(self, run) -> None:
        settings = load_settings(run.resolved)
        self.model = build_model(settings.model)
        self.batches = []
        for task in build_stream(settings.stream, settings.data_dir):
            # one batch per task, as the run's evaluation (eval_batch_size=64 > 24 rows)
            self.batches.append(self.model.collate([self.model.encode(ex) for ex in task.test]))

    def load(self, directory, name: str):
        loaded = load_adapter_dequantized_into(self.model.backbone, directory, name=name)
        self.model.eval()
        return loaded

    @torch.no_grad()
    def scores(self, name: str | None, task: int) -> torch.Tensor:
        set_active_adapter(self.model.backbone, name)
        return self.model(self.batches[task])

    def accuracy(self, name: str, task: int) -> float:
        predictions = self.scores(name, task).argmax(dim=-1)
        labels = self.batches[task]["labels"]
        return int((predictions == labels).sum()) / len(labels)  # as the run counts: correct / total


@pytest.fixture(scope="module")
def int4_eval(int4_run) -> Evaluator:
    ev = Evaluator(int4_run)
    for i, rec in enumerate(int4_run.result.artifacts):
        ev.load(rec["fp32_dir"], f"fp32-{i}")
        ev.load(rec["quant_dir"], f"int4-{i}")
    return ev


def test_fp32_adapters_reproduce_the_sequential_accuracy_matrix(int4_run, int4_eval):
    # sequential: the one adapter set after experience i answers every task in row i
    m = int4_run.result.matrix
    for i in range(len(m.task_names)):
        assert [int4_eval.accuracy(f"fp32-{i}", j) for j in range(len(m.task_names))] == m.rows[i]


def test_int4_files_dequantize_to_the_quantized_fp32_adapter(int4_run):
    scheme = QuantScheme.from_name("int4", block_size=int4_run.resolved["quant"]["block_size"])
    for rec in int4_run.result.artifacts:
        fp32 = load_adapter(rec["fp32_dir"])
        q = load_adapter_dequantized(rec["quant_dir"])
        assert q.meta["quantization"]["scheme"] == "int4" and fp32.meta["quantization"] is None
        assert q.config == fp32.config
        assert sorted(q.tensors) == sorted(fp32.tensors)
        expected = dequantize_tensors(*quantize_tensors(fp32.tensors, scheme), torch.float32)
        for key, tensor in q.tensors.items():
            assert tensor.dtype == torch.float32 and tensor.shape == fp32.tensors[key].shape
            assert torch.equal(tensor, expected[key]), key
        # 4-bit codes: close to, but not equal to, the trained weights
        changed = [k for k in q.tensors if not torch.equal(q.tensors[k], fp32.tensors[k])]
        assert changed
        for key in changed:
            err = (q.tensors[key] - fp32.tensors[key]).norm() / fp32.tensors[key].norm()
            assert err < 0.3, (key, float(err))


def test_quantized_versions_record_the_accuracy_of_what_is_stored(int4_run, int4_eval):
    """The int4 version's registered acc is measured on the int4 artifact, not copied from fp32."""
    from registry import RegistryStore

    store = RegistryStore(f"sqlite:///{int4_run.runs_root / 'registry.db'}", int4_run.runs_root / "registry_artifacts")
    try:
        for i, rec in enumerate(int4_run.result.artifacts):
            measured = int4_eval.accuracy(f"int4-{i}", i)  # an independent path: files -> fresh model
            assert store.get_version(rec["quant_ref"]).metrics["acc"] == pytest.approx(measured)
            assert rec["quant_acc"] == pytest.approx(measured)
            assert store.get_version(rec["fp32_ref"]).metrics["acc"] == pytest.approx(int4_eval.accuracy(f"fp32-{i}", i))
    finally:
        store.close()


def test_int4_adapter_acts_as_its_dequantized_weights(int4_eval):
    """Forward through the int4 adapter == forward with ΔW(dequantized) merged into W."""
    for i in range(2):
        name = f"int4-{i}"
        for task in range(2):
            through_adapter = int4_eval.scores(name, task)
            merge_adapter(int4_eval.model.backbone, name)
            try:
                merged = int4_eval.scores(name, task)
            finally:
                unmerge_adapters(int4_eval.model.backbone)
            torch.testing.assert_close(merged, through_adapter, rtol=1e-4, atol=1e-5)


def test_int4_adapter_scores_close_to_fp32(int4_run, int4_eval):
    m = int4_run.result.matrix
    n = len(int4_eval.batches[0]["labels"])
    for i in range(2):
        for task in range(2):
            fp32 = int4_eval.scores(f"fp32-{i}", task)
            q = int4_eval.scores(f"int4-{i}", task)
            base = int4_eval.scores(None, task)
            # the quantization error of the scores is far below what training changed
            assert (q - fp32).abs().max() < 0.5 * (fp32 - base).abs().max() + 1e-6
            agree = (q.argmax(-1) == fp32.argmax(-1)).float().mean().item()
            assert agree >= 0.9, (i, task, agree)
            assert abs(int4_eval.accuracy(f"int4-{i}", task) - m.rows[i][task]) <= 2 / n


def test_per_task_int8_adapters_reproduce_their_rows(offline_int8_run):
    """per_task: task j is answered by the set trained on j (or the newest before j is trained)."""
    ev = Evaluator(offline_int8_run)
    scheme = QuantScheme.from_name("int8")
    m = offline_int8_run.result.matrix
    for i, rec in enumerate(offline_int8_run.result.artifacts):
        assert rec["adapter_set"] == f"task{i}" and rec["quant_scheme"] == "int8"
        ev.load(rec["fp32_dir"], f"fp32-{i}")
        q = ev.load(rec["quant_dir"], f"int8-{i}")
        fp32 = load_adapter(rec["fp32_dir"]).tensors
        expected = dequantize_tensors(*quantize_tensors(fp32, scheme), torch.float32)
        assert all(torch.equal(q.tensors[k], expected[k]) for k in fp32)
    t = len(m.task_names)
    for i in range(t):
        for j in range(t):
            assert ev.accuracy(f"fp32-{min(i, j)}", j) == m.rows[i][j], (i, j)
            # int8 per-row codes: predictions of the quantized set match the fp32 set
            q_pred = ev.scores(f"int8-{min(i, j)}", j).argmax(-1)
            assert torch.equal(q_pred, ev.scores(f"fp32-{min(i, j)}", j).argmax(-1)), (i, j)
    # a per-task set is frozen once trained: accuracy on an earlier task never changes
    assert m.rows[1][0] == m.rows[0][0]
