"""``python -m pipelines.compose ... --export peft-lora|peft-lokr|merged DIR`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from kroncl.models import ModelConfig, build_model
from pipelines.compose import main


def _args(trained, *rest):
    return ["--registry-url", trained.url, "--artifacts", str(trained.artifacts), *rest]


@torch.no_grad()
def _peft_scores(folder, batch):
    """The tiny base model rebuilt from its config, with PEFT (not kroncl) applying the folder."""
    model = build_model(ModelConfig(name="tiny", seed=0, max_length=64))
    model.backbone = PeftModel.from_pretrained(model.backbone, folder).eval()
    return model(batch)


@pytest.mark.parametrize("fmt", ["peft-lora", "peft-lokr"])
def test_export_loads_in_peft_with_the_live_models_scores(fmt, trained, live_scores, make_batch, tmp_path, capsys):
    task = "toy_smaller"  # set task1, warm-started from task0 and trained further
    out = tmp_path / "served"
    assert main(_args(trained, trained.refs[task], "--export", fmt, str(out), "--json")) == 0
    export = json.loads(capsys.readouterr().out)["export"]
    assert export["format"] == fmt and export["exported_from"] == trained.refs[task]
    doc = json.loads((out / "adapter_config.json").read_text())
    assert doc["peft_type"] == ("LORA" if fmt == "peft-lora" else "LOKR") and doc["modules_to_save"] == ["classifier"]
    if fmt == "peft-lora":  # the registry's adapter: a = 2x2, r = 4
        assert export["max_lora_rank"] == doc["r"] == 8 and export["max_rel_error"] == 0.0

    batch = make_batch(trained.model, trained.splits[task].test[:8], 0)
    expected = live_scores(trained.sets[task], batch)
    with torch.no_grad():
        base = build_model(ModelConfig(name="tiny", seed=0, max_length=64))(batch)
    assert (base - expected).abs().max().item() > 1e-4, "the adapter must matter"
    assert (_peft_scores(out, batch) - expected).abs().max().item() <= 1e-5


def test_export_text_summary_and_capped_rank(trained, tmp_path, capsys):
    out = tmp_path / "capped"
    assert main(_args(trained, trained.refs["toy_larger"], "--export", "peft-lora", str(out), "--max-rank", "3")) == 0
    text = capsys.readouterr().out
    assert f"exported peft-lora to {out} (from {trained.refs['toy_larger']}); LoRA rank 3 " in text
    assert "(serve with max_lora_rank >= 3), truncated: relative error max " in text
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 3


def test_export_merged_writes_the_merged_model(trained, tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(_args(trained, trained.refs["toy_larger"], "--export", "merged", str(out), "--json")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mode"] == "merged" and summary["export"]["path"] == str(out)
    assert (out / "compose.json").is_file() and (out / "model" / "config.json").is_file()


@pytest.mark.parametrize(("extra", "message"), [
    (["--export", "onnx", "{d}"], "--export 'onnx' is not a format; choose one of ['peft-lora', 'peft-lokr', 'merged']"),
    (["--export", "peft-lora", "{d}", "--merge"], "--export peft-lora writes the adapter for the unmerged base model"),
    (["--export", "peft-lokr", "{d}", "--max-rank", "2"], "--max-rank caps the rank of a peft-lora export"),
    (["--max-rank", "2"], "--max-rank caps the rank of an export; give --export peft-lora DIR too"),
    (["--export", "peft-lora", "{used}"], "is not empty (has ['old.txt']); give a new or empty folder"),
])
def test_bad_export_requests_exit_2_naming_the_fix(extra, message, trained, tmp_path, capsys):
    used = tmp_path / "used"
    used.mkdir()
    (used / "old.txt").write_text("x")
    extra = [e.format(d=tmp_path / "new", used=used) for e in extra]
    assert main(_args(trained, trained.refs["toy_larger"], *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_peft_export_of_several_versions_is_refused(trained, tmp_path, capsys):
    refs = [trained.refs["toy_larger"], trained.refs["toy_smaller"]]
    assert main(_args(trained, *refs, "--export", "peft-lora", str(tmp_path / "x"))) == 2
    assert "writes one adapter, but 2 versions were chosen; export one REF" in capsys.readouterr().err


LLAMA_NODE = {"name": "tiny-llama", "seed": 0, "max_length": 64}


def _llama_registry(root):
    """A registry holding one random Kron-LoRA adapter on tiny-llama, registered the way kroncl.run
    does; returns (CLI registry args, the adapter's ref, the live kroncl model)."""
    from kroncl.adapters import AdapterConfig, adapter_parameters, adapter_state_dict, inject_adapters, save_adapter
    from pipelines.registration import Registrar, base_model_identity
    from registry import RegistryStore

    url = f"sqlite:///{root / 'registry.db'}"
    store = RegistryStore(url, root / "artifacts")
    ours = build_model(ModelConfig.from_mapping(LLAMA_NODE))
    cfg = AdapterConfig(method="kron", a_out=2, a_in=2, r=4, alpha=6.0, targets=["q_proj", "v_proj", "down_proj"])
    inject_adapters(ours.backbone, cfg)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in adapter_parameters(ours.backbone, "default").values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    base_name, revision = base_model_identity(ours)
    store.register_base_model(base_name, revision=revision)
    registrar = Registrar(store, url, base_name, revision, cfg, "tiny-llama", None, {"model": LLAMA_NODE, "seed": 0})
    tensors = adapter_state_dict(ours.backbone, "default")
    folder = save_adapter(root / "adapter", tensors, cfg, base_model=base_name, extra={"task": "toy_larger"})
    ref = registrar.register("toy_larger", folder, bits=32, metrics={}, param_count=1, experience=0)
    store.close()
    return ["--registry-url", url, "--artifacts", str(root / "artifacts")], ref, ours.eval()


def test_decoder_export_end_to_end(tmp_path, capsys):
    # What vLLM serves: a Llama-family decoder. Export a registered Kron-LoRA adapter on tiny-llama
    # through the CLI and let PEFT apply the folder.
    from kroncl.data import load_task

    registry_args, ref, ours = _llama_registry(tmp_path)
    out = tmp_path / "served"
    assert main([*registry_args, ref, "--export", "peft-lora", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["export"]["max_lora_rank"] == 8  # min(2, 2) · 4
    doc = json.loads((out / "adapter_config.json").read_text())
    assert sorted(doc["target_modules"]) == ["down_proj", "q_proj", "v_proj"] and doc["modules_to_save"] is None

    rows = load_task("toy_larger", seed=0, max_train=8, max_test=6).test
    batch = ours.collate([{**ours.encode(ex), "task_labels": 0} for ex in rows])
    with torch.no_grad():
        expected = ours(batch)
        served = build_model(ModelConfig.from_mapping(LLAMA_NODE))
        served.backbone = PeftModel.from_pretrained(served.backbone, out).eval()
        got = served(batch)
        base = build_model(ModelConfig.from_mapping(LLAMA_NODE))(batch)
    assert (base - expected).abs().max().item() > 1e-4, "the adapter must matter"
    assert (got - expected).abs().max().item() <= 1e-5


def test_register_export_records_exported_from_and_is_never_composed(tmp_path, capsys):
    from registry import RegistryStore

    registry_args, ref, _ = _llama_registry(tmp_path)
    out = tmp_path / "served"
    assert main([*registry_args, ref, "--export", "peft-lora", str(out), "--register-export", "toy-served"]) == 0
    assert f"registered the export as toy-served:1; lineage exported_from {ref}" in capsys.readouterr().out
    store = RegistryStore(registry_args[1], tmp_path / "artifacts")
    try:
        v = store.get_version("toy-served:1")
        assert (v.method, v.r, v.task, v.tags["export_format"]) == ("peft_lora", 8, "toy_larger", "peft-lora")
        assert [(e.version, e.relation) for e in store.ancestors("toy-served:1")] == [(ref, "exported_from")]
        assert sorted(Path(store.fetch_artifact("toy-served:1")).iterdir()) != []
    finally:
        store.close()
    # --task never picks the export (it is newer); by ref it is refused, naming the source.
    assert main([*registry_args, "--task", "toy_larger", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sets"][0]["version"] == ref
    assert main([*registry_args, "toy-served:1"]) == 2
    assert (f"toy-served:1 is a peft-lora export (a folder for PEFT / vLLM), not a kroncl adapter; "
            f"compose its source {ref} instead") in capsys.readouterr().err
    # The source's own adapter name would make the export its latest version: refused.
    assert main([*registry_args, ref, "--export", "peft-lora", str(tmp_path / "x"),
                 "--register-export", ref.split(":")[0]]) == 2
    assert "is the source's own adapter" in capsys.readouterr().err
