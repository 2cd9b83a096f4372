"""A real registry with real trained adapters for the composition tests.

``trained`` (session scope) trains a tiny BERT for a few steps per task the way ``kroncl.run``
does in ``per_task`` mode (set ``task1`` warm-started from ``task0``) and registers the
adapters with the pipeline's own ``Registrar`` (fp32 ``continued_from`` the previous task, an
int8 version ``quantized_from`` its fp32 one) into a SQLite registry. The trained model stays
live, so tests compare what composition rebuilds from the registry with the model the adapters
were trained in. A LoRA adapter on the same base (``tiny-toy_smaller-lora``) exists for the
mixed-method cases.

(``tests`` is not importable as a package here, so shared helpers are fixtures.)
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from kroncl.adapters import (
    AdapterConfig,
    adapter_state_dict,
    add_adapter,
    inject_adapters,
    save_adapter,
    set_active_adapter,
    set_requires_grad,
)
from kroncl.data import load_task
from kroncl.models import ModelConfig, build_model
from kroncl.quant import quantize_tensors, save_quantized_adapter
from pipelines.registration import Registrar, base_model_identity
from registry import RegistryStore

TASKS = ("toy_larger", "toy_smaller")
RUN_ID = "compose-tests-run"
MODEL_NODE = {"name": "tiny", "seed": 0, "max_length": 64}
STREAM_NODE = {"name": "toy", "tasks": list(TASKS), "seed": 0, "max_train": 64, "max_test": 24,
               "validation_fraction": 0.1, "test_fraction": 0.3}
KRON = AdapterConfig(method="kron", a_out=2, a_in=2, r=4, alpha=8.0, targets=["query", "key", "value", "dense"],
                     head_targets=["classifier"])


@dataclass
class Trained:
    """The live model, its registry and what was registered."""

    model: object
    store: RegistryStore
    url: str
    artifacts: Path
    refs: dict[str, str] = field(default_factory=dict)
    """"<task>" -> fp32 ref, "<task>@int8" -> int8 ref, "lora" -> the LoRA adapter's ref."""
    sets: dict[str, str] = field(default_factory=dict)
    """task -> adapter set of the live model."""
    splits: dict = field(default_factory=dict)
    """task -> TaskSplits as registered (STREAM_NODE's settings)."""
    lora_model: object = None


def batch_of(model, examples, task_label: int) -> dict[str, torch.Tensor]:
    """Collated batch of ``examples`` with every row's ``task_labels`` set."""
    return model.collate([{**model.encode(ex), "task_labels": task_label} for ex in examples])


def _train(model, set_name: str, examples, steps: int = 6, lr: float = 2e-2) -> None:
    set_active_adapter(model.backbone, set_name)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    for step in range(steps):
        batch = batch_of(model, examples[(step * 16) % len(examples):][:16], 0)
        loss = model.loss(model(batch), batch["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@torch.no_grad()
def _acc(model, examples) -> float:
    batch = batch_of(model, examples, 0)
    return (model(batch).argmax(-1) == batch["labels"]).float().mean().item()


@contextmanager
def one_thread():
    """One torch thread: on a small shared CPU, more threads make these toy-size ops ~50x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    with one_thread():
        return _train_and_register(tmp_path_factory)


def _train_and_register(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("compose-registry")
    url = f"sqlite:///{root / 'registry.db'}"
    store = RegistryStore(url, root / "registry_artifacts")
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_mapping(MODEL_NODE))
    inject_adapters(model.backbone, KRON, adapter_name="task0")
    base_name, revision = base_model_identity(model)
    store.register_base_model(base_name, revision=revision)
    run_config = {"model": MODEL_NODE, "stream": STREAM_NODE, "strategy": {"mode": "per_task"}, "seed": 0}
    registrar = Registrar(store, url, base_name, revision, KRON, "tiny", None, run_config, run_id=RUN_ID)
    out = Trained(model=model, store=store, url=url, artifacts=root / "registry_artifacts")

    for i, task in enumerate(TASKS):
        name = f"task{i}"
        if i:
            add_adapter(model.backbone, name, init_from=f"task{i - 1}")
        for other in ("task0", "task1")[: i + 1]:
            set_requires_grad(model.backbone, other, other == name)
        splits = load_task(task, seed=0, max_train=64, max_test=24)
        out.splits[task] = splits
        _train(model, name, splits.train)
        out.sets[task] = name
        tensors = adapter_state_dict(model.backbone, name)
        folder = save_adapter(root / "out" / task / "fp32", tensors, KRON, base_model=base_name,
                              extra={"task": task, "experience": i, "adapter_set": name})
        metrics = {"acc": _acc(model, splits.test)}
        out.refs[task] = registrar.register(task, folder, bits=32, metrics=metrics, param_count=sum(t.numel() for t in tensors.values()), experience=i)
        packed, meta = quantize_tensors(tensors, "int8")
        q = save_quantized_adapter(root / "out" / task / "int8", packed, meta, KRON, base_model=base_name,
                                   extra={"task": task, "experience": i})
        out.refs[f"{task}@int8"] = registrar.register(task, q, bits=8, metrics=metrics, param_count=sum(t.numel() for t in tensors.values()),
                                                      experience=i, quantized_from=out.refs[task])

    # A LoRA adapter on the same base model (random non-zero factors: only its method matters).
    lora_cfg = AdapterConfig(method="lora", r=4, alpha=8.0, targets=list(KRON.targets),
                             head_targets=list(KRON.head_targets))
    lora_model = build_model(ModelConfig.from_mapping(MODEL_NODE))
    inject_adapters(lora_model.backbone, lora_cfg, adapter_name="lora")
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for p in lora_model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    assert base_model_identity(lora_model) == (base_name, revision)
    lora_registrar = Registrar(store, url, base_name, revision, lora_cfg, "tiny", None, run_config)
    lora_tensors = adapter_state_dict(lora_model.backbone, "lora")
    folder = save_adapter(root / "out" / "lora", lora_tensors, lora_cfg, base_model=base_name,
                          extra={"task": "toy_smaller"})
    out.refs["lora"] = lora_registrar.register("toy_smaller", folder, bits=32, metrics={}, param_count=sum(t.numel() for t in lora_tensors.values()),
                                               experience=1)
    out.lora_model = lora_model
    return out


@pytest.fixture
def live_scores(trained):
    """``live_scores(task_set, batch)``: the live trained model's scores with one set active."""

    @torch.no_grad()
    def score(set_name: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        set_active_adapter(trained.model.backbone, set_name)
        return trained.model(batch)

    return score


@pytest.fixture
def make_batch():
    return batch_of
