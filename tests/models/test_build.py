"""build_model from folders written by save_pretrained, configs, and load errors."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

from kroncl.data import MCExample
from kroncl.models import (
    DecoderMultipleChoice,
    EncoderMultipleChoice,
    ModelConfig,
    ModelConfigError,
    ModelLoadError,
    build_model,
    minilm_path,
)
from kroncl.models.build import head_modules_from_missing
from kroncl.models.tiny import minilm_tokenizer, tiny_bpe_tokenizer, tiny_decoder

CONFIGS = Path(__file__).resolve().parents[2] / "kroncl" / "configs" / "model"
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> Path:
    """A tiny BERT *base* checkpoint (no multiple-choice head), like the MiniLM folder."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    tok = minilm_tokenizer()
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), max_position_embeddings=64, **TINY)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_encoder_head_is_found_seeded_and_rng_neutral(bert_folder):
    cfg = ModelConfig(name="custom", kind="encoder", name_or_path=str(bert_folder), max_length=32, seed=3)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = build_model(cfg)
    assert torch.equal(torch.rand(3), expected_next), "build_model must not move the global RNG"
    b = build_model(cfg)
    c = build_model(ModelConfig(name="custom", kind="encoder", name_or_path=str(bert_folder), max_length=32, seed=4))
    assert isinstance(a, EncoderMultipleChoice) and a.kind == "encoder"
    assert a.head_modules == ["classifier"]
    assert a.default_targets == ["query", "key", "value", "dense"]
    w = a.backbone.get_submodule("classifier").weight
    assert torch.equal(w, b.backbone.get_submodule("classifier").weight)
    assert not torch.equal(w, c.backbone.get_submodule("classifier").weight)
    # the pretrained body is loaded, not re-initialised
    torch.testing.assert_close(
        a.backbone.bert.embeddings.word_embeddings.weight, c.backbone.bert.embeddings.word_embeddings.weight
    )
    assert not a.training
    batch = a.collate([a.encode(MCExample("x", "Pick one: 17 or 42", ["17", "42"], 1))])
    assert a(batch).shape == (1, 2)


def test_distilbert_heads_and_targets(tmp_path):
    tok = minilm_tokenizer()
    DistilBertModel(DistilBertConfig(vocab_size=len(tok), dim=32, n_layers=2, n_heads=2, hidden_dim=64)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    m = build_model(ModelConfig(name="custom", kind="encoder", name_or_path=str(tmp_path)))
    assert m.head_modules == ["classifier", "pre_classifier"]
    assert m.default_targets == ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"]
    assert m.max_length == 128


def test_decoder_from_folder(tmp_path):
    tok = tiny_bpe_tokenizer()
    src = tiny_decoder("llama", seed=0, tokenizer=tok)
    src.backbone.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    m = build_model(ModelConfig(name="custom", kind="decoder", name_or_path=str(tmp_path), max_length=40))
    assert isinstance(m, DecoderMultipleChoice) and m.head_modules == []
    assert m.default_targets[0] == "q_proj"
    batch = m.collate([m.encode(MCExample("x", "The cat sat on the", ["mat", "sun", "star"], 0))])
    with torch.no_grad():
        torch.testing.assert_close(m(batch), src(batch))


def test_name_or_path_overrides_preset(bert_folder):
    m = build_model(ModelConfig(name="distilbert", name_or_path=str(bert_folder), max_length=16))
    assert m.config.name_or_path == str(bert_folder) and m.backbone.config.model_type == "bert"
    # another checkpoint may be another architecture: its targets follow its model type
    assert m.default_targets == ["query", "key", "value", "dense"]
    m2 = build_model(ModelConfig(name="distilbert", name_or_path=str(bert_folder), default_targets=["query"]))
    assert m2.default_targets == ["query"]


def test_unreachable_hub_model_is_one_clear_error(closed_hub):
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        build_model(ModelConfig(name="distilbert"))
    assert time.monotonic() - start < 5
    msg = str(info.value)
    assert "distilbert-base-uncased" in msg and closed_hub in msg
    assert "model.name_or_path=" in msg


def test_missing_local_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        build_model(ModelConfig(name="custom", kind="encoder", name_or_path=str(tmp_path / "nope")))
    with pytest.raises(ModelLoadError, match="cannot load a tokenizer"):
        build_model(ModelConfig(name="custom", kind="encoder", name_or_path=str(tmp_path)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "gpt9"}, "model='gpt9' is not one of"),
        ({"name": "custom"}, "model=custom needs model.kind"),
        ({"name": "minilm", "kind": "seq2seq"}, "model.kind='seq2seq'"),
        ({"dtype": "int8"}, "model.dtype='int8'"),
        ({"max_length": 2}, "model.max_length=2"),
        ({"prompt_template": "Q:"}, "model.prompt_template"),
    ],
)
def test_model_config_errors_name_the_key(kwargs, match):
    with pytest.raises(ModelConfigError, match=match):
        ModelConfig(**kwargs).validate()


def test_model_config_unknown_key():
    with pytest.raises(ModelConfigError, match="unknown key.*model.max_len"):
        ModelConfig.from_mapping({"name": "minilm", "max_len": 3})


def _compose(name: str) -> ModelConfig:
    root = OmegaConf.create({"seed": 2, "model": OmegaConf.load(CONFIGS / f"{name}.yaml")})
    return ModelConfig.from_mapping(OmegaConf.to_container(root.model, resolve=True))


@pytest.mark.parametrize(("name", "kind"), [("minilm", "encoder"), ("distilbert", "encoder"), ("smollm2", "decoder")])
def test_every_model_yaml_is_a_valid_model_config(name, kind):
    cfg = _compose(name)
    # the head's init is part of the base model: fixed by model.seed, not the run's seed (2 here)
    assert cfg.name == name and cfg.kind == kind and cfg.seed == 0
    assert cfg.default_targets


def test_minilm_yaml_resolves_to_the_package_folder():
    cfg = _compose("minilm").resolved()
    assert cfg.name_or_path == str(minilm_path())
    assert (Path(cfg.name_or_path) / "model.safetensors").is_file()
    assert cfg.max_length == 128 and cfg.default_targets == ["query", "key", "value", "dense"]


def test_head_modules_from_missing_keys():
    model = torch.nn.Sequential()
    model.add_module("body", torch.nn.Linear(2, 2))
    model.add_module("classifier", torch.nn.Linear(2, 1))
    assert head_modules_from_missing(["classifier.bias", "classifier.weight"], model) == ["classifier"]
    assert head_modules_from_missing(["not_a_module.weight"], model) == []


def test_offline_mode_hub_model_fails_fast(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        build_model(ModelConfig(name="distilbert"))
    assert time.monotonic() - start < 10
    assert "model.name_or_path=" in str(info.value) and "HF_HUB_OFFLINE" in str(info.value)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "tiny", "name_or_path": "/nonexistent"},
     "model.name_or_path='/nonexistent' cannot be used with model=tiny (a randomly initialised toy model built "
     "in code; it loads no files): drop model.name_or_path, or load that model with model=custom "
     "model.kind=encoder model.name_or_path=/nonexistent"),
    ({"name": "tiny-llama", "gguf_file": "m.gguf"},
     "model.gguf_file='m.gguf' cannot be used with model=tiny-llama (it loads no files): drop it, or use model=custom"),
    ({"name": "tiny-llama", "kind": "encoder"},
     "model.kind='encoder' does not fit model=tiny-llama, a decoder: drop model.kind, or pick a tiny encoder: "
     "tiny, tiny-distilbert"),
    ({"name": "tiny", "seed": 1.5}, "model.seed=1.5 must be a whole number, e.g. model.seed=0"),
    ({"name": "tiny", "length_normalize": "no"},
     "model.length_normalize='no' must be true or false, e.g. model.length_normalize=false"),
    ({"name": "tiny", "prompt_template": 3}, "model.prompt_template=3 must be a string"),
])
def test_model_config_refuses_what_it_would_ignore_or_misread(kwargs, message):
    with pytest.raises(ModelConfigError) as info:
        ModelConfig.from_mapping(kwargs)
    assert str(info.value) == f"invalid model config: {message}"


def test_a_resolved_tiny_config_is_still_valid():
    """resolved() fills name_or_path with the tiny model's own name; that round-trips."""
    cfg = ModelConfig(name="tiny-distilbert").resolved()
    assert ModelConfig.from_mapping(dataclasses.asdict(cfg)).name_or_path == "tiny-distilbert"


@pytest.mark.parametrize(("name", "kind"), [("tiny-distilbert", "encoder"), ("tiny-llama", "decoder")])
def test_tiny_model_yamls_build(name, kind):
    model = build_model(_compose(name))
    assert model.config.kind == kind
    assert isinstance(model, DecoderMultipleChoice if kind == "decoder" else EncoderMultipleChoice)


def test_custom_yaml_is_a_template_naming_what_it_needs():
    root = OmegaConf.create({"seed": 0, "model": OmegaConf.load(CONFIGS / "custom.yaml")})
    with pytest.raises(ModelConfigError, match="model=custom needs model.kind=encoder|decoder and model.name_or_path"):
        ModelConfig.from_mapping(OmegaConf.to_container(root.model, resolve=True))
