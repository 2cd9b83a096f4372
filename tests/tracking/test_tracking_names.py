"""Names, config flattening and scalar extraction for MLflow."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from kroncl.tracking import flatten_config, sanitize_name, scalar_value
from kroncl.tracking.names import MAX_KEY_LENGTH, MAX_PARAM_VALUE_LENGTH


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp000", "Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp000"),
        ("acc/arc:easy", "acc/arc_easy"),
        ("loss (train)", "loss _train_"),
        ("/a//b/../c/", "a/b/_/c"),
        ("", "_"),
        ("a" * 300, "a" * MAX_KEY_LENGTH),
    ],
)
def test_sanitize_name(raw, clean):
    assert sanitize_name(raw) == clean


def test_sanitized_names_pass_mlflow_validation():
    from mlflow.utils.validation import _validate_metric_name

    for raw in ["acc/arc:easy", "/a//b/../c/", "x\ny", "é/ü?*", "./.."]:
        _validate_metric_name(sanitize_name(raw))  # raises MlflowException when invalid


@dataclass
class _Train:
    lr: float = 1e-3
    epochs: int = 3


@dataclass
class _Run:
    train: _Train = field(default_factory=_Train)
    targets: list[str] = field(default_factory=lambda: ["query", "value"])


def test_flatten_config_nested_mappings_dataclasses_and_lists():
    flat = flatten_config({
        "run": _Run(),
        "strategy": {"plugins": [{"name": "ewc", "lambda": 0.5}], "mode": "sequential"},
        "seed": 0,
        "data_dir": None,
        "long": "x" * (MAX_PARAM_VALUE_LENGTH + 10),
    })
    assert flat["run.train.lr"] == "0.001"
    assert flat["run.train.epochs"] == "3"
    assert flat["run.targets"] == '["query", "value"]'
    assert flat["strategy.plugins.0.name"] == "ewc"
    assert flat["strategy.plugins.0.lambda"] == "0.5"
    assert flat["strategy.mode"] == "sequential"
    assert flat["seed"] == "0" and flat["data_dir"] == "None"
    assert len(flat["long"]) == MAX_PARAM_VALUE_LENGTH and flat["long"].endswith("...")


def test_flatten_config_rejects_non_mappings():
    with pytest.raises(TypeError, match="got list"):
        flatten_config([1, 2])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.5, 0.5),
        (3, 3.0),
        (True, 1.0),
        (np.float32(0.25), 0.25),
        (np.array([2.0]), 2.0),
        (torch.tensor(1.5), 1.5),
        (torch.tensor([[4.0]]), 4.0),
        (torch.zeros(3), None),
        (np.zeros((2, 2)), None),
        ("0.5", None),
        (None, None),
        ({"a": 1.0}, None),
    ],
)
def test_scalar_value(value, expected):
    assert scalar_value(value) == expected


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://bob:s3cret@mlflow:5000", "http://bob:***@mlflow:5000"),
        ("postgresql+psycopg://u:p%40ss@db/mlflow", "postgresql+psycopg://u:***@db/mlflow"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:////tmp/runs/mlflow.db", "sqlite:////tmp/runs/mlflow.db"),
    ],
)
def test_redact_uri(uri, shown):
    from kroncl.tracking.names import redact_uri

    assert redact_uri(uri) == shown
