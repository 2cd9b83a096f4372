"""``MultipleChoiceModel``: the one interface strategies and metrics use, whatever the model kind.

Contract (``docs/design.md``, kroncl.models):

- ``encode(example) -> dict``: token features of every choice plus ``labels`` (an int); lists
  only, so the dict can be stored in an Arrow cache;
- ``collate(features) -> dict[str, Tensor]``: pads sequences and choices; a batch may mix
  questions with different numbers of choices: ``choice_mask`` (B, C) marks the real ones;
  ``labels`` (B,) and ``task_labels`` (B,) are always there when the features carry them;
- ``forward(batch) -> scores`` (B, C) float32, padded choices = :data:`PAD_SCORE`;
- ``loss(scores, labels)``: cross-entropy over choices.

Padded choices score :data:`PAD_SCORE` (-1e9), not -inf: softmax gives them exactly 0 as with
-inf, while cross-entropy, log-softmax, KL distillation (0 * log 0) and their gradients stay
finite.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kroncl.errors import ConfigError
from kroncl.models.config import ModelConfig

if TYPE_CHECKING:
    from kroncl.data.example import MCExample

__all__ = ["MultipleChoiceModel", "PAD_SCORE", "scatter_choice_scores", "pad_sequences", "collate_targets"]

PAD_SCORE = -1e9

# Bump when encode() output changes for the same tokenizer and settings (invalidates caches).
ENCODING_VERSION = 1


def scatter_choice_scores(flat: Tensor, choice_mask: Tensor) -> Tensor:
    """Place the scores of the real choices into a (B, C) float32 grid, PAD_SCORE elsewhere.

    Args:
        flat: (N,) scores of the real choices in row-major order of ``choice_mask``.
        choice_mask: (B, C) bool, N of them True.

    Returns:
        (B, C) float32; differentiable with respect to ``flat``.
    """
    grid = torch.full(choice_mask.shape, PAD_SCORE, dtype=torch.float32, device=flat.device)
    return grid.masked_scatter(choice_mask, flat.float())  # (B, C)


def pad_sequences(
    features: Sequence[dict[str, Any]], key: str, pad_value: int, left: bool = False
) -> tuple[Tensor, Tensor]:
    """Pad ``features[b][key][c]`` (a token list per choice) into a (B, C, L) tensor.

    Args:
        features: one dict per question, ``key`` -> list of per-choice token lists.
        key: which list to pad (``input_ids``, ``attention_mask``, ``token_type_ids``).
        pad_value: fill for padded tokens and padded choices.
        left: pad on the left (decoders score the end of each sequence).

    Returns:
        (B, C, L) long tensor and the (B, C) bool choice mask.
    """
    n_choices = max(len(f[key]) for f in features)
    length = max(len(seq) for f in features for seq in f[key])
    out = torch.full((len(features), n_choices, length), pad_value, dtype=torch.long)  # (B, C, L)
    mask = torch.zeros((len(features), n_choices), dtype=torch.bool)  # (B, C)
    for b, f in enumerate(features):
        for c, seq in enumerate(f[key]):
            if not len(seq):
                continue
            t = torch.as_tensor(seq, dtype=torch.long)
            if left:
                out[b, c, length - len(seq):] = t
            else:
                out[b, c, : len(seq)] = t
            mask[b, c] = True
    return out, mask


def collate_targets(features: Sequence[dict[str, Any]], n_choices: Tensor) -> dict[str, Tensor]:
    """``labels`` and ``task_labels`` (B,) when every feature has them.

    ``targets_task_labels`` (what avalanche appends when a dataset's task labels are
    ``use_in_getitem``) is read as ``task_labels`` when the latter is absent.

    Raises:
        ValueError: a label does not index one of its question's choices.
    """
    out: dict[str, Tensor] = {}
    if all("labels" in f for f in features):
        labels = torch.as_tensor([int(f["labels"]) for f in features], dtype=torch.long)
        bad = ((labels < 0) | (labels >= n_choices)).nonzero().flatten().tolist()
        if bad:
            raise ValueError(
                f"labels {[int(labels[i]) for i in bad]} of batch rows {bad} do not index their "
                f"{[int(n_choices[i]) for i in bad]} choices"
            )
        out["labels"] = labels
    for key in ("task_labels", "targets_task_labels"):
        if "task_labels" not in out and all(key in f for f in features):
            out["task_labels"] = torch.as_tensor([int(f[key]) for f in features], dtype=torch.long)
    return out


class MultipleChoiceModel(nn.Module, ABC):
    """Scores every choice of a multiple-choice question with a Hugging Face model.

    Attributes:
        backbone: the HF model; adapters are injected into it (module paths are relative to it).
        tokenizer: the HF tokenizer of ``backbone``.
        config: the resolved :class:`ModelConfig`.
        kind: ``"encoder"`` or ``"decoder"``.
        head_modules: module paths (relative to ``backbone``) of newly initialised layers, e.g.
            ``["classifier"]``: the adapter injection makes them part of each adapter set.
        default_targets: adapter targets used when the adapter config names none.
    """

    kind: str = ""

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: Any,
        config: ModelConfig,
        head_modules: Sequence[str] = (),
        default_targets: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config
        self.head_modules = list(head_modules)
        self.default_targets = list(default_targets)
        self._fingerprint: str | None = None

    @property
    def max_length(self) -> int:
        assert self.config.max_length is not None, "ModelConfig.resolved() fills max_length"
        return self.config.max_length

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id):
            if candidate is not None:
                return int(candidate)
        return 0

    @abstractmethod
    def encode(self, example: MCExample) -> dict[str, Any]:
        """Token features of each choice of ``example`` plus ``labels``; lists and ints only."""

    @abstractmethod
    def collate(self, features: list[dict[str, Any]]) -> dict[str, Tensor]:
        """Batch encoded features (and ``labels``/``task_labels``) into padded tensors."""

    @abstractmethod
    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, C) float32 choice scores; padded choices = PAD_SCORE."""

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the backbone's activations in backward (``train.gradient_checkpointing``).

        Non-reentrant: gradients reach adapters inside a frozen backbone (the reentrant form
        needs inputs that require grad) and it works under DDP; RNG state is preserved, so
        dropout draws the same masks and the numbers are those without checkpointing.

        Raises:
            ConfigError: the backbone (a Hugging Face model) does not support it.
        """
        if not getattr(self.backbone, "supports_gradient_checkpointing", False):
            raise ConfigError(f"train.gradient_checkpointing=true, but {type(self.backbone).__name__} does not "
                              "support gradient checkpointing; set train.gradient_checkpointing=false")
        kwargs = {"use_reentrant": False}
        if hasattr(self.backbone, "activation_checkpointing_enable"):  # transformers >= 5.x's name
            self.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def set_dropout(self, p: float) -> None:
        """Every dropout of the backbone drops with probability ``p`` (``train.dropout``): its
        ``nn.Dropout`` modules (BERT-like attention reads its module's ``p`` too) and the float
        ``attention_dropout`` attributes that Llama-like attention reads instead."""
        for module in self.backbone.modules():
            if isinstance(module, nn.Dropout):
                module.p = p
            elif isinstance(getattr(module, "attention_dropout", None), float):
                module.attention_dropout = p

    def loss(self, scores: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy of the right choice over all choices (finite with padded choices)."""
        return F.cross_entropy(scores.float(), labels.to(scores.device))

    @torch.no_grad()
    def predict(self, batch: dict[str, Tensor]) -> Tensor:
        """(B,) index of the best-scoring choice."""
        return self(batch).argmax(dim=-1)

    def _tokenizer_digest(self) -> str:
        tok = self.tokenizer
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is not None:
            body = backend.to_str()
        else:  # slow tokenizer: its vocabulary identifies it
            body = json.dumps(sorted(tok.get_vocab().items()))
        specials = {k: getattr(tok, k, None) for k in ("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id")}
        return hashlib.sha256((type(tok).__name__ + body + json.dumps(specials, sort_keys=True)).encode()).hexdigest()

    def _encoding_settings(self) -> dict[str, Any]:
        """Everything besides the tokenizer that changes what :meth:`encode` returns."""
        return {"kind": self.kind, "max_length": self.max_length}

    def encoding_fingerprint(self) -> str:
        """Hash of everything that changes :meth:`encode`'s output (tokenised-data cache key)."""
        if self._fingerprint is None:
            blob = json.dumps(
                {"v": ENCODING_VERSION, "cls": type(self).__name__, "tok": self._tokenizer_digest(), **self._encoding_settings()},
                sort_keys=True,
            )
            self._fingerprint = hashlib.sha256(blob.encode()).hexdigest()
        return self._fingerprint
