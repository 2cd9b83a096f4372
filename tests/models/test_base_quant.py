"""``model.base_quant``: a bitsandbytes-quantized frozen base, chosen by config and refused where it cannot run.

The quantized path itself needs a CUDA GPU (bitsandbytes' kernels) and is not run here; these
tests pin what a CPU machine does: a clear refusal before any model loads, bad values named,
and a merge into quantized base weights refused instead of adding ΔW to integer codes.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kroncl.adapters import AdapterConfig, inject_adapters, merge_adapter
from kroncl.errors import AdapterStateError
from kroncl.models import ModelConfig, build_model
from kroncl.models.errors import ModelConfigError


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_quantized_base_without_cuda_is_refused_with_the_key_to_change():
    with pytest.raises(ModelConfigError) as err:
        build_model(ModelConfig.from_mapping({"name": "smollm2", "base_quant": "nf4"}))
    assert str(err.value) == ("model.base_quant=nf4 needs a CUDA GPU (bitsandbytes' 8-/4-bit kernels) and none "
                              "is visible; use model.base_quant=null on this machine")


def test_a_tiny_model_cannot_be_loaded_quantized():
    with pytest.raises(ModelConfigError, match=r"model.base_quant=int8 .* model=tiny is built in code"):
        build_model(ModelConfig.from_mapping({"name": "tiny", "base_quant": "int8"}))


def test_an_unknown_format_is_named_with_the_choices():
    with pytest.raises(ModelConfigError, match=r"model.base_quant='fp4' must be one of \['int8', 'nf4'\]"):
        ModelConfig.from_mapping({"name": "minilm", "base_quant": "fp4"}).validate()


def test_merging_into_integer_base_weights_is_refused():
    model = nn.Sequential(nn.Linear(4, 4))
    inject_adapters(model, AdapterConfig(method="kron", a_out=2, a_in=2, r=2, alpha=2.0, targets=["0"]))
    layer = model[0]
    layer.base_layer.weight = nn.Parameter(torch.zeros(4, 4, dtype=torch.int8), requires_grad=False)
    with pytest.raises(AdapterStateError, match=r"the base weight is quantized \(torch.int8\); merge into the "
                                                r"unquantized base model \(model.base_quant=null\)"):
        merge_adapter(model, "default")
