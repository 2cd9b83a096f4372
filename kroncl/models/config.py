"""``ModelConfig`` (the ``model`` config group), presets and default adapter targets."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kroncl.fields import build_checked
from kroncl.models.errors import ModelConfigError
from kroncl.models.paths import minilm_path, smollm2_gguf

__all__ = ["ModelConfig", "Preset", "PRESETS", "TINY_MODELS", "DEFAULT_TARGETS", "KINDS", "DTYPES", "default_targets_for"]

KINDS = ("encoder", "decoder")
DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "auto": "auto",
}

_BERT = ["query", "key", "value", "dense"]
_DISTILBERT = ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"]
_LLAMA = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Linear layers adapted when the adapter config names no targets, by HF ``config.model_type``.
DEFAULT_TARGETS: dict[str, list[str]] = {
    "bert": _BERT,
    "distilbert": _DISTILBERT,
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
}


def default_targets_for(model_type: str) -> list[str]:
    """Default adapter targets of an HF ``model_type`` ([] when unknown)."""
    return list(DEFAULT_TARGETS.get(model_type, []))


@dataclass(frozen=True)
class Preset:
    """A named base model: its kind, where it is, and its adapter targets."""

    kind: str
    locate: Callable[[], tuple[str, str | None]]
    """() -> (name_or_path, gguf_file); called only when the config does not override them."""
    default_targets: list[str]
    max_length: int = 128


def _minilm() -> tuple[str, str | None]:
    return str(minilm_path()), None


def _smollm2() -> tuple[str, str | None]:
    folder, gguf = smollm2_gguf()
    return str(folder), gguf


PRESETS: dict[str, Preset] = {
    "minilm": Preset("encoder", _minilm, _BERT),
    "distilbert": Preset("encoder", lambda: ("distilbert-base-uncased", None), _DISTILBERT),
    "smollm2": Preset("decoder", _smollm2, _LLAMA, max_length=256),
}

# Randomly initialised toy-size models (real architectures, real tokenizers) for tests and smoke
# runs: name -> (kind, architecture). Built by kroncl.models.tiny, no files needed.
TINY_MODELS: dict[str, tuple[str, str]] = {
    "tiny": ("encoder", "bert"),
    "tiny-distilbert": ("encoder", "distilbert"),
    "tiny-llama": ("decoder", "llama"),
}


BASE_QUANTS = ("int8", "nf4")
"""bitsandbytes formats ``model.base_quant`` may load the frozen base in."""


@dataclass
class ModelConfig:
    """Which base model scores the choices, and how."""

    name: str = "minilm"
    """Preset (minilm | distilbert | smollm2), tiny model (tiny | tiny-distilbert | tiny-llama)
    or ``custom`` (then kind and name_or_path are required)."""
    kind: str | None = None
    """encoder (AutoModelForMultipleChoice) | decoder (AutoModelForCausalLM); null = the preset's."""
    name_or_path: str | None = None
    """Local folder or hub id; overrides the preset's (``model.name_or_path=/models/bert``)."""
    gguf_file: str | None = None
    """GGUF file name inside ``name_or_path`` (decoders shipped as GGUF, e.g. SmolLM2)."""
    max_length: int | None = None
    """Tokens per (question, choice) sequence; longer ones are truncated. null = the preset's (128/256)."""
    length_normalize: bool = False
    """Decoder only: score a choice by its mean token log-likelihood instead of the sum."""
    shared_prompt: bool = True
    """Decoder only: read each question's prompt once, all its choices packed after it in one
    sequence (block attention mask), instead of once per choice; the same scores, fewer tokens."""
    seed: int = 0
    """Seeds the newly initialised classifier head (encoders)."""
    dtype: str = "float32"
    """Weights dtype: float32 | bfloat16 | float16 | auto."""
    base_quant: str | None = None
    """Load the frozen base quantized by bitsandbytes (QLoRA-style; the adapters stay float):
    null | int8 (LLM.int8) | nf4 (4-bit NormalFloat, bf16 compute). Needs a CUDA GPU."""
    prompt_template: str = "Question: {question}\nAnswer:"
    """Decoder only: the prompt each choice is scored after (``{question}`` is filled in)."""
    default_targets: list[str] = field(default_factory=list)
    """Adapter targets when ``adapter.targets`` is empty; [] = the preset's, or by the loaded
    model's type (DEFAULT_TARGETS) when ``name_or_path`` is overridden or ``name=custom``."""

    @classmethod
    def from_mapping(cls, node: Mapping[str, Any]) -> ModelConfig:
        """Build from a plain or OmegaConf mapping (the composed ``model`` node) and validate.

        Raises:
            ModelConfigError: unknown keys or invalid values, all listed as ``model.<key>``.
        """
        node = dict(node)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(node) - names)
        if unknown:
            raise ModelConfigError(f"unknown key(s) {', '.join('model.' + k for k in unknown)}; known: {', '.join(sorted(names))}")
        if node.get("default_targets") is not None and not isinstance(node["default_targets"], str):
            node["default_targets"] = list(node["default_targets"])
        elif node.get("default_targets") is None:
            node.pop("default_targets", None)
        cfg, errors = build_checked(cls, node, "model")
        if errors:
            raise ModelConfigError("invalid model config: " + "; ".join(errors))
        return cfg

    def validate(self) -> ModelConfig:
        """Check every field; returns self.

        Raises:
            ModelConfigError: listing every invalid field as ``model.<key>=value``.
        """
        errors = self.problems()
        if errors:
            raise ModelConfigError("invalid model config: " + "; ".join(errors))
        return self

    def problems(self) -> list[str]:
        """Every invalid field, one message each, as ``model.<key>=value ...``."""
        errors = []
        if self.name != "custom" and self.name not in PRESETS and self.name not in TINY_MODELS:
            errors.append(f"model={self.name!r} is not one of {sorted(PRESETS) + sorted(TINY_MODELS) + ['custom']}")
        if self.kind is not None and self.kind not in KINDS:
            errors.append(f"model.kind={self.kind!r} must be one of {list(KINDS)}")
        if self.name == "custom" and (self.kind is None or not self.name_or_path):
            errors.append("model=custom needs model.kind=encoder|decoder and model.name_or_path=<folder or hub id>")
        if self.max_length is not None and (isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 4):
            errors.append(f"model.max_length={self.max_length!r} must be an integer >= 4")
        if self.dtype not in DTYPES:
            errors.append(f"model.dtype={self.dtype!r} must be one of {list(DTYPES)}")
        if self.base_quant is not None and self.base_quant not in BASE_QUANTS:
            errors.append(f"model.base_quant={self.base_quant!r} must be one of {list(BASE_QUANTS)}, "
                          "or null for an unquantized base")
        if isinstance(self.prompt_template, str) and "{question}" not in self.prompt_template:
            errors.append(f"model.prompt_template={self.prompt_template!r} must contain {{question}}")
        if self.name in TINY_MODELS:
            errors.extend(self._tiny_problems())
        return errors

    def _tiny_problems(self) -> list[str]:
        """A tiny model is built in code (random weights, fixed architecture): it loads no
        files, so a ``name_or_path`` / ``gguf_file`` / other ``kind`` would be silently ignored."""
        kind = TINY_MODELS[self.name][0]
        errors = []
        if self.name_or_path not in (None, "", self.name):
            errors.append(
                f"model.name_or_path={self.name_or_path!r} cannot be used with model={self.name} "
                f"(a randomly initialised toy model built in code; it loads no files): drop "
                f"model.name_or_path, or load that model with model=custom model.kind={self.kind or kind} "
                f"model.name_or_path={self.name_or_path}")
        if self.gguf_file:
            errors.append(f"model.gguf_file={self.gguf_file!r} cannot be used with model={self.name} "
                          "(it loads no files): drop it, or use model=custom")
        if self.kind is not None and self.kind != kind:
            errors.append(f"model.kind={self.kind!r} does not fit model={self.name}, a {kind}: drop "
                          f"model.kind, or pick a tiny {self.kind}: "
                          f"{', '.join(n for n, (k, _) in TINY_MODELS.items() if k == self.kind)}")
        return errors

    def resolved(self) -> ModelConfig:
        """A copy with every preset default filled in (kind, name_or_path, gguf_file,
        max_length, default_targets); a value set in the config always wins.

        Raises:
            ModelConfigError: invalid config.
            ModelLoadError: a preset's package (MiniLM, SmolLM2) is not installed.
        """
        self.validate()
        if self.name in TINY_MODELS:
            return dataclasses.replace(self, kind=TINY_MODELS[self.name][0], name_or_path=self.name,
                                       max_length=self.max_length or 64)
        if self.name == "custom":
            return dataclasses.replace(self, max_length=self.max_length or 128, default_targets=list(self.default_targets))
        preset = PRESETS[self.name]
        overridden = bool(self.name_or_path)
        name_or_path, gguf = (self.name_or_path, self.gguf_file) if overridden else preset.locate()
        # Another checkpoint may be another architecture: then its targets come from its model
        # type (build_model), unless the config lists them.
        targets = list(self.default_targets) or ([] if overridden else list(preset.default_targets))
        return dataclasses.replace(
            self,
            kind=self.kind or preset.kind,
            name_or_path=str(Path(name_or_path).expanduser()) if Path(name_or_path).expanduser().exists() else name_or_path,
            gguf_file=self.gguf_file or gguf,
            max_length=self.max_length or preset.max_length,
            default_targets=targets,
        )
