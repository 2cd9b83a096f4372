"""Decoder scoring: a causal LM rates each choice by the log-likelihood of its tokens.

score(choice) = sum over the choice's tokens t of log p(t | prompt, earlier choice tokens), or the
mean with ``length_normalize`` (which removes the bias towards short answers). Training is
cross-entropy over these scores, so the LM learns to prefer the right continuation.

Sequences are ``prompt_template.format(question) + " " + choice``, left-padded: every choice
ends at the last position, so the logits of only the last ``max choice length + 1`` positions
are computed (``logits_to_keep``), not a (tokens x vocabulary) tensor for the whole prompt.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from kroncl.models.base import MultipleChoiceModel, collate_targets, pad_sequences, scatter_choice_scores

if TYPE_CHECKING:
    from kroncl.data.example import MCExample

__all__ = ["DecoderMultipleChoice", "continuation_log_likelihood"]


def continuation_log_likelihood(
    logits: Tensor, targets: Tensor, lengths: Tensor, length_normalize: bool = False
) -> Tensor:
    """Log-likelihood of the last ``lengths[n]`` target tokens of each row.

    Args:
        logits: (N, K, V) next-token logits; ``logits[:, j]`` predicts ``targets[:, j]``.
        targets: (N, K) token ids; row n's continuation is its last ``lengths[n]`` tokens.
        lengths: (N,) continuation lengths, 1 <= lengths <= K.
        length_normalize: mean instead of sum over the continuation.

    Returns:
        (N,) float32 log-likelihoods.

    Example:
        Uniform logits over V=4 give log(1/4) per token:
        >>> ll = continuation_log_likelihood(torch.zeros(1, 3, 4), torch.zeros(1, 3, dtype=torch.long), torch.tensor([2]))
        >>> round(float(ll), 4) == round(2 * float(torch.log(torch.tensor(0.25))), 4)
        True
    """
    n, k, _ = logits.shape
    token_ll = -F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # (N, K)
    positions = torch.arange(k, device=logits.device)  # (K,)
    in_choice = positions.unsqueeze(0) >= (k - lengths).unsqueeze(1)  # (N, K)
    total = (token_ll * in_choice).sum(dim=1)  # (N,)
    return total / lengths.float() if length_normalize else total


class DecoderMultipleChoice(MultipleChoiceModel):
    """``MultipleChoiceModel`` over an ``AutoModelForCausalLM`` backbone.

    Features of one example: ``input_ids`` (per choice: prompt tokens then choice tokens, the
    prompt cut from the left when the pair exceeds ``max_length``), ``choice_lengths`` (per
    choice: how many trailing tokens are the choice), and ``labels``.
    """

    kind = "decoder"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        params = inspect.signature(self.backbone.forward).parameters
        self._can_keep_logits = "logits_to_keep" in params

    def _encoding_settings(self) -> dict[str, Any]:
        return {**super()._encoding_settings(), "prompt": self.config.prompt_template}

    def encode(self, example: MCExample) -> dict[str, Any]:
        prompt = self.tokenizer(self.config.prompt_template.format(question=example.question))["input_ids"]
        if not prompt:  # the first choice token needs a position to be predicted from
            raise ValueError(f"example {example.id!r}: the prompt encodes to no tokens")
        ids, lengths = [], []
        for choice in example.choices:
            cont = self.tokenizer(" " + choice, add_special_tokens=False)["input_ids"][: self.max_length - 1]
            if not cont:
                raise ValueError(f"example {example.id!r}: choice {choice!r} encodes to no tokens")
            room = self.max_length - len(cont)
            ids.append(prompt[-room:] + cont)
            lengths.append(len(cont))
        return {"input_ids": ids, "choice_lengths": lengths, "labels": int(example.label)}

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Tensor]:
        """Left-pad tokens, right-pad choices.

        Returns:
            ``input_ids``, ``attention_mask``: (B, C, L); ``choice_lengths``: (B, C), 0 for
            padded choices; ``choice_mask``: (B, C) bool; ``labels``, ``task_labels``: (B,).
        """
        input_ids, choice_mask = pad_sequences(features, "input_ids", self.pad_token_id, left=True)  # (B, C, L)
        ones = [{"m": [[1] * len(s) for s in f["input_ids"]]} for f in features]
        attention_mask, _ = pad_sequences(ones, "m", 0, left=True)  # (B, C, L)
        lengths = torch.zeros(choice_mask.shape, dtype=torch.long)  # (B, C)
        for b, f in enumerate(features):
            lengths[b, : len(f["choice_lengths"])] = torch.as_tensor(f["choice_lengths"], dtype=torch.long)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "choice_lengths": lengths,
            "choice_mask": choice_mask,
        }
        batch.update(collate_targets(features, choice_mask.sum(dim=1)))
        return batch

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Score every real choice by its (mean or summed) token log-likelihood.

        Returns:
            (B, C) float32 scores; padded choices = PAD_SCORE.
        """
        mask = batch["choice_mask"]  # (B, C)
        ids = batch["input_ids"][mask]  # (N, L)
        attn = batch["attention_mask"][mask]  # (N, L)
        lengths = batch["choice_lengths"][mask]  # (N,)
        k = int(lengths.max())
        # Left padding: positions count from each sequence's first real token.
        position_ids = (attn.cumsum(dim=-1) - 1).clamp(min=0)  # (N, L)
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": attn, "position_ids": position_ids, "use_cache": False}
        if self._can_keep_logits:
            kwargs["logits_to_keep"] = k + 1
        logits = self.backbone(**kwargs).logits[:, -(k + 1): -1]  # (N, K, V): predicts the last K tokens
        ll = continuation_log_likelihood(logits, ids[:, -k:], lengths, self.config.length_normalize)  # (N,)
        return scatter_choice_scores(ll, mask)  # (B, C)
