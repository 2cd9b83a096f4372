"""Encoder scoring: a cross-encoder reads each (question, choice) pair, a linear head scores it.

The backbone is an ``AutoModelForMultipleChoice`` (BERT, DistilBERT, ...), whose pooled
[CLS] vector goes through a newly initialised ``classifier`` (hidden -> 1). Only the real
choices of a batch are run: they are packed as one "question" of N choices, ``(1, N, L)``, which
the HF head reshapes to (N, L) and back, so padded choices cost nothing.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from torch import Tensor

from kroncl.models.base import MultipleChoiceModel, collate_targets, pad_sequences, scatter_choice_scores

if TYPE_CHECKING:
    from kroncl.data.example import MCExample

__all__ = ["EncoderMultipleChoice"]


class EncoderMultipleChoice(MultipleChoiceModel):
    """``MultipleChoiceModel`` over an ``AutoModelForMultipleChoice`` backbone.

    Features of one example: ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the
    tokenizer makes them): one list per choice, each the pair ``[CLS] question [SEP] choice
    [SEP]`` truncated longest-first to ``max_length``; and ``labels``.
    """

    kind = "encoder"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # DistilBERT has no segment embeddings: a BERT tokenizer's token_type_ids would be
        # passed on as unused kwargs, so they are neither stored nor fed.
        self._uses_token_types = "token_type_ids" in inspect.signature(self.backbone.forward).parameters

    def _encoding_settings(self) -> dict[str, Any]:
        return {**super()._encoding_settings(), "token_types": self._uses_token_types}

    def encode(self, example: MCExample) -> dict[str, Any]:
        choices = list(example.choices)
        enc = self.tokenizer(
            [example.question] * len(choices), choices, truncation=True, max_length=self.max_length
        )
        out: dict[str, Any] = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if self._uses_token_types and "token_type_ids" in enc:
            out["token_type_ids"] = enc["token_type_ids"]
        out["labels"] = int(example.label)
        return out

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Tensor]:
        """Right-pad tokens and choices.

        Returns:
            ``input_ids``, ``attention_mask`` (and ``token_type_ids``): (B, C, L);
            ``choice_mask``: (B, C) bool; ``labels``, ``task_labels``: (B,) when present.
        """
        input_ids, choice_mask = pad_sequences(features, "input_ids", self.pad_token_id)  # (B, C, L)
        batch: dict[str, Tensor] = {"input_ids": input_ids, "choice_mask": choice_mask}
        batch["attention_mask"], _ = pad_sequences(features, "attention_mask", 0)
        if self._uses_token_types and all("token_type_ids" in f for f in features):
            batch["token_type_ids"], _ = pad_sequences(features, "token_type_ids", 0)
        batch.update(collate_targets(features, choice_mask.sum(dim=1)))
        return batch

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Score every real choice.

        Args:
            batch: from :meth:`collate` (extra keys are ignored).

        Returns:
            (B, C) float32 scores; padded choices = PAD_SCORE.
        """
        mask = batch["choice_mask"]  # (B, C)
        inputs = {
            k: batch[k][mask].unsqueeze(0)  # (1, N, L): the N real choices as one question
            for k in ("input_ids", "attention_mask", "token_type_ids")
            if k in batch
        }
        logits = self.backbone(**inputs).logits.squeeze(0)  # (N,)
        return scatter_choice_scores(logits, mask)  # (B, C)
