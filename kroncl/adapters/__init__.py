"""Kron-LoRA / LoRA adapters: math, layers, injection, adapter files, PEFT interop.

Typical use::

    cfg = AdapterConfig(method="kron", a_out=2, a_in=2, r=8, alpha=16,
                        targets=["query", "value"], head_targets=["classifier"])
    paths = inject_adapters(model, cfg)               # base frozen, set "default" active
    ...train...
    save_adapter(out, adapter_state_dict(model, "default"), cfg, base_model="...")
    add_adapter(model, "task1", init_from="default")  # warm start for the next task
    set_active_adapter(model, "task1")                # per-batch routing, no reload
"""

from kroncl.adapters.config import METHODS, AdapterConfig
from kroncl.adapters.inject import (
    LoadResult,
    adapter_layers,
    adapter_names,
    adapter_parameters,
    adapter_state_dict,
    add_adapter,
    count_adapter_parameters,
    delete_adapter,
    inject_adapters,
    load_adapter_state_dict,
    match_target,
    merge_adapter,
    set_active_adapter,
    set_requires_grad,
    set_stacked_adapters,
    unmerge_adapters,
)
from kroncl.adapters.io import (
    LoadedAdapter,
    attach_adapter,
    checked_adapter,
    load_adapter,
    load_adapter_into,
    read_adapter,
    save_adapter,
)
from kroncl.adapters.routing import routed_forward, row_adapters
from kroncl.adapters.layers import AdapterLinear, DenseDeltaLinear, KronLoRALinear, LoRALinear
from kroncl.adapters.math import (
    KronShape,
    kron_apply,
    kron_delta,
    kron_factors,
    kron_param_count,
    lora_apply,
    lora_delta,
    lora_param_count,
)
from kroncl.adapters.peft_interop import export_peft_lokr, import_peft_lokr, read_peft_lokr
from kroncl.adapters.peft_lora import LoRAExport, export_peft_lora

__all__ = [
    "routed_forward",
    "row_adapters",
    "METHODS",
    "AdapterConfig",
    "LoadResult",
    "adapter_layers",
    "adapter_names",
    "adapter_parameters",
    "adapter_state_dict",
    "add_adapter",
    "count_adapter_parameters",
    "delete_adapter",
    "inject_adapters",
    "load_adapter_state_dict",
    "match_target",
    "merge_adapter",
    "set_active_adapter",
    "set_requires_grad",
    "set_stacked_adapters",
    "unmerge_adapters",
    "LoadedAdapter",
    "attach_adapter",
    "checked_adapter",
    "load_adapter",
    "load_adapter_into",
    "read_adapter",
    "save_adapter",
    "AdapterLinear",
    "DenseDeltaLinear",
    "KronLoRALinear",
    "LoRALinear",
    "KronShape",
    "kron_apply",
    "kron_delta",
    "kron_factors",
    "kron_param_count",
    "lora_apply",
    "lora_delta",
    "lora_param_count",
    "export_peft_lokr",
    "import_peft_lokr",
    "read_peft_lokr",
    "LoRAExport",
    "export_peft_lora",
]
