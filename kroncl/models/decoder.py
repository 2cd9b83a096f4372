"""Decoder scoring: a causal LM rates each choice by the log-likelihood of its tokens.

score(choice) = sum over the choice's tokens t of log p(t | prompt, earlier choice tokens), or the
mean with ``length_normalize`` (which removes the bias towards short answers). Training is
cross-entropy over these scores, so the LM learns to prefer the right continuation.

Two layouts give the same scores (tested ≤ 1e-5 in float32, gradients too):

- ``model.shared_prompt=true`` (the default): one packed sequence per question,
  ``[prompt, choice 1, choice 2, ...]``, left-padded, read with a block attention mask (each
  choice sees the prompt and its own earlier tokens, never another choice) and position ids
  that restart after the prompt for every choice. The prompt is read once per question, not
  once per choice, and a batch row is a question, so per-question adapter routing
  (``kroncl.adapters.routing``) maps rows one to one. The prompt is cut from the left to
  ``max_length - longest choice``, the same for every choice.
- ``model.shared_prompt=false``: one sequence per choice, ``prompt + " " + choice``, left-padded,
  the prompt cut per choice to fit ``max_length``.

Either way every sequence ends with choice tokens, so the logits of only the last ``choice
tokens + 1`` positions are computed (``logits_to_keep``), not a (tokens x vocabulary) tensor for
the whole prompt.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from kroncl.models.base import MultipleChoiceModel, collate_targets, pad_sequences, scatter_choice_scores

if TYPE_CHECKING:
    from kroncl.data.example import MCExample

__all__ = ["DecoderMultipleChoice", "continuation_log_likelihood", "collate_packed", "block_attention_mask"]


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
    lf = logits.float()
    # logit - logsumexp, not cross_entropy over a (N, V, K) view: on CPU that summed the
    # vocabulary with float32 errors of ~2.5e-4 per token at SmolLM2's 49k (this: ~2e-6).
    token_ll = lf.gather(2, targets.unsqueeze(2)).squeeze(2) - lf.logsumexp(dim=-1)  # (N, K)
    positions = torch.arange(k, device=logits.device)  # (K,)
    in_choice = positions.unsqueeze(0) >= (k - lengths).unsqueeze(1)  # (N, K)
    total = (token_ll * in_choice).sum(dim=1)  # (N,)
    return total / lengths.float() if length_normalize else total


class DecoderMultipleChoice(MultipleChoiceModel):
    """``MultipleChoiceModel`` over an ``AutoModelForCausalLM`` backbone.

    Features of one example with ``shared_prompt``: ``prompt_ids`` (cut from the left to
    ``max_length - longest choice``), ``choice_ids`` (per choice: its tokens), ``labels``.
    Without: ``input_ids`` (per choice: prompt tokens then choice tokens, the prompt cut from the
    left when the pair exceeds ``max_length``), ``choice_lengths`` (per choice: how many trailing
    tokens are the choice), and ``labels``.
    """

    kind = "decoder"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        params = inspect.signature(self.backbone.forward).parameters
        self._can_keep_logits = "logits_to_keep" in params

    def _encoding_settings(self) -> dict[str, Any]:
        return {**super()._encoding_settings(), "prompt": self.config.prompt_template,
                "shared_prompt": self.config.shared_prompt}

    def encode(self, example: MCExample) -> dict[str, Any]:
        prompt = self.tokenizer(self.config.prompt_template.format(question=example.question))["input_ids"]
        if not prompt:  # the first choice token needs a position to be predicted from
            raise ValueError(f"example {example.id!r}: the prompt encodes to no tokens")
        conts = []
        for choice in example.choices:
            cont = self.tokenizer(" " + choice, add_special_tokens=False)["input_ids"][: self.max_length - 1]
            if not cont:
                raise ValueError(f"example {example.id!r}: choice {choice!r} encodes to no tokens")
            conts.append(cont)
        if self.config.shared_prompt:
            room = self.max_length - max(len(c) for c in conts)
            return {"prompt_ids": prompt[-room:], "choice_ids": conts, "labels": int(example.label)}
        ids = [prompt[-(self.max_length - len(c)):] + c for c in conts]
        return {"input_ids": ids, "choice_lengths": [len(c) for c in conts], "labels": int(example.label)}

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Tensor]:
        """Batch features of the layout ``model.shared_prompt`` encodes.

        Raises:
            ValueError: a feature of the other layout (encoded with the other ``shared_prompt``).
        """
        key = "prompt_ids" if self.config.shared_prompt else "input_ids"
        if not all(key in f for f in features):
            raise ValueError(
                f"model.shared_prompt={str(self.config.shared_prompt).lower()} collates features with "
                f"{key!r}, but a feature has keys {sorted(next(f for f in features if key not in f))}: "
                "encode them with this model (the other shared_prompt layout does not fit)"
            )
        return collate_packed(features, self.pad_token_id) if self.config.shared_prompt else self._collate_per_choice(features)

    def _collate_per_choice(self, features: list[dict[str, Any]]) -> dict[str, Tensor]:
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

        The layout is the batch's: packed (``segment_ids``, from ``shared_prompt``) or per choice.

        Returns:
            (B, C) float32 scores; padded choices = PAD_SCORE.
        """
        if "segment_ids" in batch:
            return self._forward_packed(batch)
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

    def _forward_packed(self, batch: dict[str, Tensor]) -> Tensor:
        """Score a :func:`collate_packed` batch: one backbone row per question."""
        ids, seg = batch["input_ids"], batch["segment_ids"]  # (B, L)
        totals = batch["choice_lengths"].sum(dim=1)  # (B,) choice tokens per question
        k = int(totals.max())
        dtype = self.backbone.get_input_embeddings().weight.dtype
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": block_attention_mask(seg, dtype),
                                  "position_ids": batch["position_ids"], "use_cache": False}
        if self._can_keep_logits:
            kwargs["logits_to_keep"] = k + 1
        logits = self.backbone(**kwargs).logits[:, -(k + 1):]  # (B, K+1, V): the window ending the rows
        window = seg[:, -(k + 1):]  # (B, K+1)
        target_seg = window[:, 1:]  # (B, K): segment of each token predicted in the window
        first = target_seg != window[:, :-1]  # a choice's first token: predicted by the prompt's last
        prompt_last = (k - totals).unsqueeze(1)  # (B, 1) window index of the last prompt token
        steps = torch.arange(k, device=ids.device).unsqueeze(0)  # (1, K)
        predictor = torch.where(first, prompt_last, steps)  # (B, K) window index predicting each token
        lf = logits.float()
        rows = torch.arange(ids.shape[0], device=ids.device).unsqueeze(1)  # (B, 1)
        token_ll = lf[rows, predictor, ids[:, -k:]] - lf.logsumexp(dim=-1).gather(1, predictor)  # (B, K)
        token_ll = token_ll * (target_seg > 0)
        n_choices = batch["choice_mask"].shape[1]
        sums = token_ll.new_zeros(ids.shape[0], n_choices + 1).scatter_add(1, target_seg.clamp(min=0), token_ll)
        ll = sums[:, 1:]  # (B, C)
        if self.config.length_normalize:
            ll = ll / batch["choice_lengths"].clamp(min=1).float()
        mask = batch["choice_mask"]
        return scatter_choice_scores(ll[mask], mask)  # (B, C)


def collate_packed(features: list[dict[str, Any]], pad_token_id: int) -> dict[str, Tensor]:
    """One left-padded row per question: ``[prompt, choice 1, choice 2, ...]``.

    Returns:
        ``input_ids``, ``attention_mask`` (1 on real tokens), ``position_ids`` (the prompt's from
        0, each choice's from the prompt's length on) and ``segment_ids`` (-1 padding, 0 prompt,
        c + 1 choice c): (B, L); ``choice_lengths``: (B, C), 0 for padded choices;
        ``choice_mask``: (B, C) bool; ``labels``, ``task_labels``: (B,).
    """
    n_choices = max(len(f["choice_ids"]) for f in features)
    length = max(len(f["prompt_ids"]) + sum(len(c) for c in f["choice_ids"]) for f in features)
    shape = (len(features), length)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    segment_ids = torch.full(shape, -1, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    lengths = torch.zeros((len(features), n_choices), dtype=torch.long)
    for b, f in enumerate(features):
        p = len(f["prompt_ids"])
        tokens, segs, pos = list(f["prompt_ids"]), [0] * p, list(range(p))
        for c, cont in enumerate(f["choice_ids"]):
            tokens += cont
            segs += [c + 1] * len(cont)
            pos += range(p, p + len(cont))
            lengths[b, c] = len(cont)
        start = length - len(tokens)
        input_ids[b, start:] = torch.as_tensor(tokens, dtype=torch.long)
        segment_ids[b, start:] = torch.as_tensor(segs, dtype=torch.long)
        position_ids[b, start:] = torch.as_tensor(pos, dtype=torch.long)
    choice_mask = lengths > 0
    batch = {"input_ids": input_ids, "attention_mask": (segment_ids >= 0).long(), "position_ids": position_ids,
             "segment_ids": segment_ids, "choice_lengths": lengths, "choice_mask": choice_mask}
    batch.update(collate_targets(features, choice_mask.sum(dim=1)))
    return batch


def block_attention_mask(segment_ids: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, 1, L, L) additive mask (0 = attend, dtype's min = not) of packed rows.

    Query i sees key j <= i when j is in the prompt (segment 0) or in i's own segment: a choice
    sees the prompt and itself, the prompt itself, never padding (-1); padding sees only
    padding, so its (unused) outputs stay finite.
    """
    length = segment_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
    keys = segment_ids[:, None, :]  # (B, 1, L)
    allowed = causal & ((segment_ids[:, :, None] == keys) | (keys == 0))  # (B, L, L)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min).unsqueeze(1)
