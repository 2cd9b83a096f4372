"""``build_model(cfg)``: load the tokenizer and backbone a :class:`ModelConfig` names.

Loading never hangs on a missing network: a hub id is probed first
(:func:`kroncl.data.hub.hub_unreachable_reason`, a few seconds at most) and an unreachable hub
is one :class:`ModelLoadError` saying to set ``model.name_or_path`` to a local folder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kroncl.models.base import MultipleChoiceModel
from kroncl.models.config import DTYPES, TINY_MODELS, ModelConfig, default_targets_for
from kroncl.models.decoder import DecoderMultipleChoice
from kroncl.models.encoder import EncoderMultipleChoice
from kroncl.models.errors import ModelConfigError, ModelLoadError

log = logging.getLogger("kroncl.models")

__all__ = ["build_model", "load_tokenizer", "head_modules_from_missing", "MODEL_CLASSES"]

MODEL_CLASSES: dict[str, type[MultipleChoiceModel]] = {
    "encoder": EncoderMultipleChoice,
    "decoder": DecoderMultipleChoice,
}


def head_modules_from_missing(missing_keys: Iterable[str], model: nn.Module) -> list[str]:
    """Module paths whose parameters were missing from the checkpoint (newly initialised).

    >>> from torch import nn
    >>> m = nn.Sequential(nn.Linear(2, 2)); head_modules_from_missing(["0.weight", "0.bias"], m)
    ['0']
    """
    names = dict(model.named_modules())
    out: list[str] = []
    for key in sorted(missing_keys):
        path = key.rsplit(".", 1)[0] if "." in key else ""
        if path in names and path not in out:
            out.append(path)
    return out


def _check_reachable(cfg: ModelConfig) -> None:
    """Fail fast when ``name_or_path`` is neither a local folder nor a reachable hub id."""
    from kroncl.data.hub import hub_offline, hub_unreachable_reason

    assert cfg.name_or_path is not None
    if Path(cfg.name_or_path).expanduser().exists():
        return
    if cfg.name_or_path.startswith(("/", ".", "~")):
        raise ModelLoadError(f"model.name_or_path={cfg.name_or_path!r} does not exist; point it at a model folder")
    if hub_offline():
        return  # transformers reads its cache and fails fast on a miss
    reason = hub_unreachable_reason()
    if reason is not None:
        raise ModelLoadError(
            f"model {cfg.name!r} wants {cfg.name_or_path!r} from the Hugging Face Hub, which cannot be reached "
            f"({reason}). Set model.name_or_path=/path/to/folder holding config.json, the weights and the "
            "tokenizer (e.g. one written by save_pretrained), or use model=minilm, which ships offline."
        )


def load_tokenizer(cfg: ModelConfig) -> Any:
    """The tokenizer of ``cfg.name_or_path`` (from the GGUF file when ``gguf_file`` is set).

    Raises:
        ModelLoadError: the tokenizer cannot be loaded.
    """
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": cfg.gguf_file} if cfg.gguf_file else {}
    try:
        return AutoTokenizer.from_pretrained(cfg.name_or_path, **kwargs)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a bad folder
        raise ModelLoadError(
            f"cannot load a tokenizer from model.name_or_path={cfg.name_or_path!r} ({type(exc).__name__}: {exc})."
            f"{_fix_hint(cfg)}"
        ) from exc


def _fix_hint(cfg: ModelConfig) -> str:
    from kroncl.data.hub import hub_offline

    assert cfg.name_or_path is not None
    hint = " Set model.name_or_path=/path/to/folder holding config.json, the weights and the tokenizer files."
    if not Path(cfg.name_or_path).expanduser().exists() and hub_offline():
        hint += " (HF_HUB_OFFLINE is set, so only the local Hugging Face cache was searched.)"
    return hint


def build_model(cfg: ModelConfig) -> MultipleChoiceModel:
    """Load the base model and tokenizer of ``cfg`` and wrap them for multiple-choice scoring.

    Encoders load with ``AutoModelForMultipleChoice``; their classifier head is newly
    initialised under ``torch.manual_seed(cfg.seed)`` (the global RNG is restored afterwards),
    and every newly initialised module is listed in ``model.head_modules``. Decoders load with
    ``AutoModelForCausalLM`` (a GGUF file is dequantized by transformers).

    Args:
        cfg: the model config; preset defaults are filled by :meth:`ModelConfig.resolved`.

    Returns:
        An :class:`EncoderMultipleChoice` or :class:`DecoderMultipleChoice` in eval mode.

    Raises:
        ModelConfigError: invalid config.
        ModelLoadError: unreachable hub, missing folder or package, or a load failure; says
            which ``model.*`` key to change.
    """
    from transformers import AutoModelForCausalLM, AutoModelForMultipleChoice

    cfg = cfg.resolved()
    quant_kwargs = base_quant_kwargs(cfg) if cfg.base_quant is not None else {}  # refused before any load
    if cfg.name in TINY_MODELS:
        return _build_tiny(cfg)
    _check_reachable(cfg)
    tokenizer = load_tokenizer(cfg)
    auto = AutoModelForMultipleChoice if cfg.kind == "encoder" else AutoModelForCausalLM
    kwargs: dict[str, Any] = {"dtype": DTYPES[cfg.dtype], "output_loading_info": True}
    kwargs.update(quant_kwargs)
    if cfg.gguf_file:
        kwargs["gguf_file"] = cfg.gguf_file
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        try:
            backbone, info = auto.from_pretrained(cfg.name_or_path, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(
                f"cannot load a {cfg.kind} model from model.name_or_path={cfg.name_or_path!r} with {auto.__name__} "
                f"({type(exc).__name__}: {exc}). Check model.kind.{_fix_hint(cfg)}"
            ) from exc
    heads = head_modules_from_missing(info.get("missing_keys", ()), backbone) if cfg.kind == "encoder" else []
    targets = list(cfg.default_targets) or default_targets_for(backbone.config.model_type)
    if not targets:
        log.warning("no default adapter targets for model type %r; set adapter.targets", backbone.config.model_type)
    if heads:
        log.info("newly initialised head module(s) %s (seed %d)", heads, cfg.seed)
    model = MODEL_CLASSES[cfg.kind](backbone, tokenizer, cfg, head_modules=heads, default_targets=targets)
    return model.eval()


def base_quant_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    """``from_pretrained`` arguments loading the frozen base quantized by bitsandbytes
    (``model.base_quant``), on this process's GPU (``LOCAL_RANK`` under torchrun).

    Raises:
        ModelConfigError: no CUDA GPU is visible, or the model is a tiny one (built in code).
    """
    import os

    if cfg.name in TINY_MODELS:
        raise ModelConfigError(f"model.base_quant={cfg.base_quant} loads a pretrained model quantized; "
                               f"model={cfg.name} is built in code: use model.base_quant=null")
    if not torch.cuda.is_available():
        raise ModelConfigError(
            f"model.base_quant={cfg.base_quant} needs a CUDA GPU (bitsandbytes' 8-/4-bit kernels) and none "
            "is visible; use model.base_quant=null on this machine")
    from transformers import BitsAndBytesConfig

    if cfg.base_quant == "int8":
        quant = BitsAndBytesConfig(load_in_8bit=True)
    else:
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                   bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)
    return {"quantization_config": quant, "device_map": {"": int(os.environ.get("LOCAL_RANK", "0") or 0)}}


def _build_tiny(cfg: ModelConfig) -> MultipleChoiceModel:
    from kroncl.models.tiny import tiny_decoder, tiny_encoder

    kind, arch = TINY_MODELS[cfg.name]
    if kind == "encoder":
        return tiny_encoder(arch, seed=cfg.seed, max_length=cfg.max_length)
    return tiny_decoder(arch, seed=cfg.seed, max_length=cfg.max_length, length_normalize=cfg.length_normalize,
                        shared_prompt=cfg.shared_prompt)
