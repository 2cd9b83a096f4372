"""quantization_error works on tensors: same numbers as the old probe-set measurement, model untouched."""

import pytest
import torch
from torch import nn

from kroncl.adapters import (
    AdapterConfig,
    adapter_layers,
    adapter_names,
    adapter_parameters,
    adapter_state_dict,
    add_adapter,
    delete_adapter,
    inject_adapters,
    load_adapter_state_dict,
)
from kroncl.quant import (
    delta_error_report,
    dequantize_tensors,
    layer_deltas,
    quantization_error,
    quantize_tensors,
)

KRON = AdapterConfig(method="kron", a_out=2, a_in=2, r=2, alpha=4.0, targets=["query", "value"],
                     head_targets=["classifier"])
LORA = AdapterConfig(method="lora", r=2, alpha=8.0, targets=["query", "value"], head_targets=["classifier"])


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.query, self.value, self.classifier = nn.Linear(16, 8), nn.Linear(8, 8), nn.Linear(8, 3)


def _trained(cfg: AdapterConfig) -> nn.Module:
    model = Tiny()
    inject_adapters(model, cfg, adapter_name="task0")
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in adapter_parameters(model, "task0").values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    add_adapter(model, "task1", init_from="task0")  # a second resident set, as in a continual run
    return model


@torch.no_grad()
def _probe_report(model, name, packed, meta):
    """The old measurement: a temporary adapter set of the dequantized tensors beside ``name``."""
    add_adapter(model, "__probe__")
    try:
        load_adapter_state_dict(model, dequantize_tensors(packed, meta, dtype=torch.float32), "__probe__")
        pairs = {p: (m.delta_weight(name).float(), m.delta_weight("__probe__").float())
                 for p, m in adapter_layers(model).items()}
    finally:
        delete_adapter(model, "__probe__")
    return delta_error_report(pairs)


@pytest.mark.parametrize("cfg", [KRON, LORA], ids=["kron", "lora"])
@pytest.mark.parametrize("scheme", ["int8", "int4", "nf4"])
def test_tensor_errors_equal_the_probe_errors_and_leave_the_model_alone(cfg, scheme):
    model = _trained(cfg)
    tensors = adapter_state_dict(model, "task0")
    packed, meta = quantize_tensors(tensors, scheme)
    names = adapter_names(model)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}

    report = quantization_error(tensors, packed, meta, cfg)

    assert adapter_names(model) == names
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    probe = _probe_report(model, "task0", packed, meta)
    assert set(report.per_layer) == set(probe.per_layer) == {"query", "value", "classifier"}
    for layer, err in probe.per_layer.items():
        assert report.per_layer[layer] == pytest.approx(err, rel=1e-6, abs=1e-9)
    for key, value in probe.summary().items():
        assert report.summary()[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert set(report.summary()) >= {"quant_rel_err_mean", "quant_rel_err_max", "quant_rel_err_global"}
    assert report.max_layer == probe.max_layer and 0 < report.mean < 1


@pytest.mark.parametrize("cfg", [KRON, LORA], ids=["kron", "lora"])
def test_layer_deltas_are_the_layers_delta_weight(cfg):
    model = _trained(cfg)
    deltas = layer_deltas(adapter_state_dict(model, "task0"), cfg)
    for path, layer in adapter_layers(model).items():
        assert torch.allclose(deltas[path], layer.delta_weight("task0").float(), rtol=1e-6, atol=1e-7), path


def test_unknown_layout_and_wrong_method_are_named():
    with pytest.raises(ValueError, match="'l'.*not a Kron-LoRA"):
        layer_deltas({"l.A": torch.ones(2, 2), "l.C": torch.ones(2, 2)})
    with pytest.raises(ValueError, match="method='kron'"):
        layer_deltas({"l.A": torch.ones(2, 4), "l.B": torch.ones(4, 2)}, KRON)
