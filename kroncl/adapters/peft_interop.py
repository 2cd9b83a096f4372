"""Export Kron-LoRA adapters to PEFT's LoKr format and import them back.

Mapping (peft 0.21, ``peft/tuners/lokr/layer.py``), per adapted ``nn.Linear`` at module path P:

    ours                           PEFT LoKr (file key "base_model.model.P.<name>")
    A   (a_out × a_in)       <->   lokr_w1   (out_l × in_m)
    B1  (b_out × r)          <->   lokr_w2_a (out_k × r)
    B2  (r × b_in)           <->   lokr_w2_b (r × in_n)
    scale = alpha / r        <->   scaling = alpha / r,  ΔW = kron(w1, w2_a @ w2_b) · scaling

PEFT chooses the factor shapes itself: ``factorization(d, decompose_factor)`` returns
``(decompose_factor, d // decompose_factor)`` whenever the factor divides d, for both d_out and
d_in, so an export needs a_out == a_in == decompose_factor. With ``decompose_both=False`` w1 is
kept whole, and w2 is stored as (w2_a, w2_b) only when ``r < max(b_out, b_in) / 2``; otherwise
PEFT builds a full ``lokr_w2`` (b_out × b_in) and the export writes B1 @ B2 there (same ΔW, but
such a file cannot be imported back into factored form). ``rank_dropout`` and
``module_dropout`` are exported as 0 so PEFT's forward equals ours; our input dropout has no
LoKr counterpart and only matters in training.

Heads (``DenseDeltaLinear``) become PEFT ``modules_to_save``: the file holds the full head
weight and bias (base + Δ), and import recovers Δ by subtracting the base model's head.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from kroncl.adapters.config import AdapterConfig
from kroncl.adapters.inject import adapter_layers, inject_adapters, load_adapter_state_dict
from kroncl.adapters.io import adapter_file, check_finite
from kroncl.fileio import atomic_write
from kroncl.adapters.layers import DenseDeltaLinear, KronLoRALinear
from kroncl.errors import AdapterConfigError, AdapterLoadError

__all__ = ["PEFT_WEIGHTS_NAME", "PEFT_CONFIG_NAME", "PeftLoKrAdapter", "export_peft_lokr", "read_peft_lokr",
           "import_peft_lokr", "check_export_dir", "peft_head_tensors", "write_peft_folder"]

PEFT_WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_CONFIG_NAME = "adapter_config.json"
_PREFIX = "base_model.model."
_FACTORED = ("lokr_w1", "lokr_w2_a", "lokr_w2_b")
_UNSUPPORTED = ("lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_t2")


def _head_base(layer: DenseDeltaLinear) -> tuple[Tensor, Tensor | None]:
    """The head's weight and bias without any merged delta."""
    if layer.merged_adapter is not None:
        return layer._original_weight, layer._original_bias
    return layer.base_layer.weight, layer.base_layer.bias


def check_export_dir(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` as a Path, refused when it holds files already.

    An export into a used folder would leave stale tensors or configs beside the new ones (a
    LoKr ``adapter_config.json`` next to LoRA weights loads as garbage), so it must start empty.

    Raises:
        AdapterConfigError: ``out_dir`` is a file, or a folder that is not empty.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise AdapterConfigError(f"export target {out} is a file; give a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        have = sorted(p.name for p in out.iterdir())[:5]
        raise AdapterConfigError(
            f"export target {out} is not empty (has {have}); give a new or empty folder, or remove its contents"
        )
    return out


def peft_head_tensors(heads: dict[str, DenseDeltaLinear], name: str) -> dict[str, Tensor]:
    """PEFT ``modules_to_save`` tensors of set ``name``'s heads: full weight = base + ΔW, bias + Δbias.

    PEFT keeps a whole trainable copy of such a module, so the file holds the head as it acts
    with the set active, under ``base_model.model.<path>.weight|bias``.

    Raises:
        AdapterConfigError: a head whose base has no bias but whose set trained a Δbias.
    """
    out: dict[str, Tensor] = {}
    for p, m in heads.items():
        w, b = _head_base(m)
        dw, db = m.delta_weight(name), m.delta_bias(name)
        out[f"{_PREFIX}{p}.weight"] = (w + dw.to(w.dtype)).detach()
        if b is not None:
            out[f"{_PREFIX}{p}.bias"] = (b + db.to(b.dtype)).detach()
        elif db is not None and bool(db.any()):
            raise AdapterConfigError(f"head '{p}' has no bias in the base model, so its Δbias cannot be exported to PEFT")
    return out


def write_peft_folder(out: Path, tensors: dict[str, Tensor], peft_cfg: object) -> Path:
    """Write ``adapter_model.safetensors`` and ``adapter_config.json`` (a PEFT config's ``to_dict``)."""
    doc = {k: (sorted(v) if isinstance(v, set) else v) for k, v in peft_cfg.to_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    flat = {k: v.contiguous().cpu() for k, v in tensors.items()}
    atomic_write(out / PEFT_WEIGHTS_NAME, lambda f: save_file(flat, f, metadata={"format": "pt"}))
    atomic_write(out / PEFT_CONFIG_NAME, lambda f: Path(f).write_text(json.dumps(doc, indent=2, sort_keys=True)))
    return out


def export_peft_lokr(
    model: nn.Module,
    name: str,
    out_dir: str | os.PathLike,
    base_model_name_or_path: str | None = None,
) -> Path:
    """Write adapter set ``name`` of ``model`` as a PEFT LoKr adapter folder.

    ``PeftModel.from_pretrained(base, out_dir)`` on the same base model then reproduces this
    model's outputs with set ``name`` active.

    Args:
        model: model with Kron-LoRA layers (and optional ``DenseDeltaLinear`` heads).
        name: adapter set to export.
        out_dir: folder for ``adapter_model.safetensors`` + ``adapter_config.json``.
        base_model_name_or_path: written to the PEFT config (PEFT reads it when no base is passed).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        AdapterConfigError: the model has LoRA layers, layers with different a / r / alpha,
            a_out != a_in (PEFT LoKr has one ``decompose_factor`` for both sides), or
            ``out_dir`` is not empty.
    """
    from peft import LoKrConfig  # lazy: peft is heavy and only needed for interop

    out = check_export_dir(out_dir)
    layers = adapter_layers(model)
    kron = {p: m for p, m in layers.items() if isinstance(m, KronLoRALinear)}
    heads = {p: m for p, m in layers.items() if isinstance(m, DenseDeltaLinear)}
    other = sorted(set(layers) - set(kron) - set(heads))
    if other:
        raise AdapterConfigError(f"only Kron-LoRA layers map to PEFT LoKr; {other} are {type(layers[other[0]]).__name__}")
    if not kron:
        raise AdapterConfigError("model has no Kron-LoRA layers to export")
    hyper = {(m.shape.a_out, m.shape.a_in, m.set_hyper(name)["r"], m.set_hyper(name)["alpha"])
             for m in kron.values()}
    if len(hyper) != 1:
        raise AdapterConfigError(f"PEFT export needs one (a_out, a_in, r, alpha) for all layers, found {sorted(hyper)}")
    a_out, a_in, r, alpha = hyper.pop()
    if a_out != a_in:
        raise AdapterConfigError(
            f"PEFT LoKr uses one decompose_factor for d_out and d_in, so a_out ({a_out}) must equal a_in ({a_in})"
        )

    tensors: dict[str, Tensor] = {}
    for p, m in kron.items():
        f = m._factors(name)
        pre = f"{_PREFIX}{p}."
        tensors[pre + "lokr_w1"] = f.A.detach()
        # PEFT's own rule (LoKrLayer.update_layer) for whether w2 is stored factored.
        if r < max(m.shape.b_out, m.shape.b_in) / 2:
            tensors[pre + "lokr_w2_a"] = f.B1.detach()
            tensors[pre + "lokr_w2_b"] = f.B2.detach()
        else:
            tensors[pre + "lokr_w2"] = (f.B1 @ f.B2).detach()
    tensors.update(peft_head_tensors(heads, name))

    peft_cfg = LoKrConfig(
        r=r,
        alpha=alpha,
        target_modules=list(kron),
        modules_to_save=list(heads) or None,
        decompose_factor=a_out,
        decompose_both=False,
        rank_dropout=0.0,
        module_dropout=0.0,
        use_effective_conv2d=False,
        init_weights=True,
        base_model_name_or_path=base_model_name_or_path,
    )
    return write_peft_folder(out, tensors, peft_cfg)


@dataclass
class PeftLoKrAdapter:
    """A PEFT LoKr folder translated to kroncl terms.

    Attributes:
        config: kron AdapterConfig whose targets / head_targets are the exact module paths.
        tensors: Kron factors keyed "<module path>.A|B1|B2".
        heads: module path -> {"weight", "bias"} full head tensors from ``modules_to_save``.
        base_model: ``base_model_name_or_path`` from the PEFT config.
    """

    config: AdapterConfig
    tensors: dict[str, Tensor]
    heads: dict[str, dict[str, Tensor]]
    base_model: str | None


def read_peft_lokr(peft_dir: str | os.PathLike) -> PeftLoKrAdapter:
    """Read a PEFT LoKr folder whose layers use the (w1, w2_a, w2_b) form.

    Raises:
        AdapterLoadError: not a LoKr adapter, a layer stored in another form (decomposed w1,
            full w2, Tucker t2), hyper-parameters that differ between layers, a file that is a
            symlink or outside the folder, or a non-finite tensor.
    """
    d = Path(peft_dir)
    for n in (PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME):
        if not (d / n).is_file() and not (d / n).is_symlink():
            raise AdapterLoadError(f"PEFT adapter folder {d} lacks {n}")
    cfg_path, w_path = adapter_file(d, PEFT_CONFIG_NAME), adapter_file(d, PEFT_WEIGHTS_NAME)
    doc = json.loads(cfg_path.read_text())
    if doc.get("peft_type") != "LOKR":
        raise AdapterLoadError(f"{cfg_path}: peft_type={doc.get('peft_type')!r}, expected 'LOKR'")
    raw = load_file(str(w_path))
    check_finite(raw, w_path)
    stripped = {k.removeprefix(_PREFIX): v for k, v in raw.items()}

    layers: dict[str, dict[str, Tensor]] = {}
    heads: dict[str, dict[str, Tensor]] = {}
    problems: list[str] = []
    head_names = list(doc.get("modules_to_save") or [])
    for key, t in stripped.items():
        path, _, leaf = key.rpartition(".")
        if leaf in _UNSUPPORTED:
            problems.append(f"{key}: LoKr form '{leaf}' has no Kron-LoRA (A, B1, B2) equivalent")
        elif leaf in _FACTORED:
            layers.setdefault(path, {})[leaf] = t
        elif leaf in ("weight", "bias") and any(path == h or path.endswith("." + h) for h in head_names):
            heads.setdefault(path, {})[leaf] = t
        else:
            problems.append(f"{key}: unexpected key")
    r_cfg = int(doc.get("r", 0))
    shapes = set()
    tensors: dict[str, Tensor] = {}
    for path, parts in layers.items():
        miss = [n for n in _FACTORED if n not in parts]
        if miss:
            problems.append(f"layer '{path}' lacks {miss}")
            continue
        w1, w2a, w2b = parts["lokr_w1"], parts["lokr_w2_a"], parts["lokr_w2_b"]
        shapes.add((*w1.shape, w2a.shape[1]))
        tensors[f"{path}.A"], tensors[f"{path}.B1"], tensors[f"{path}.B2"] = w1, w2a, w2b
    if len(shapes) > 1:
        problems.append(f"layers differ in (a_out, a_in, r): {sorted(shapes)}; kroncl needs one setting")
    if doc.get("rank_pattern") or doc.get("alpha_pattern"):
        problems.append("rank_pattern / alpha_pattern are not supported (kroncl uses one r and alpha)")
    if problems:
        raise AdapterLoadError(f"cannot import {d} as Kron-LoRA:\n  " + "\n  ".join(problems))
    if not shapes:
        raise AdapterLoadError(f"{w_path} holds no LoKr layers")
    a_out, a_in, r = shapes.pop()
    if r != r_cfg:
        raise AdapterLoadError(f"{cfg_path}: r={r_cfg} but the tensors have rank {r}")
    cfg = AdapterConfig(
        method="kron", a_out=a_out, a_in=a_in, r=r, alpha=float(doc["alpha"]), dropout=0.0,
        targets=list(layers), head_targets=list(heads),
    ).validate()
    return PeftLoKrAdapter(cfg, tensors, heads, doc.get("base_model_name_or_path"))


@torch.no_grad()
def import_peft_lokr(model: nn.Module, peft_dir: str | os.PathLike, name: str = "default") -> AdapterConfig:
    """Load a PEFT LoKr folder into ``model`` as Kron-LoRA set ``name``.

    Injects adapter layers when ``model`` has none (targets = the exact module paths in the
    file); otherwise adds set ``name`` to the existing layers. Head weights become
    ``DenseDeltaLinear`` deltas relative to the model's own head weights.

    Returns:
        The AdapterConfig of the imported adapter (save it with ``io.save_adapter``).

    Raises:
        AdapterLoadError: see :func:`read_peft_lokr` and ``inject.load_adapter_state_dict``.
    """
    ad = read_peft_lokr(peft_dir)
    if not adapter_layers(model):
        inject_adapters(model, ad.config, adapter_name=name)
    layers = adapter_layers(model)
    tensors = dict(ad.tensors)
    for path, parts in ad.heads.items():
        m = layers.get(path)
        if not isinstance(m, DenseDeltaLinear):
            raise AdapterLoadError(f"PEFT modules_to_save '{path}' is not a DenseDeltaLinear head in this model")
        w, b = _head_base(m)
        tensors[f"{path}.weight"] = parts["weight"].to(w.dtype) - w
        if "bias" in parts:
            tensors[f"{path}.bias"] = parts["bias"].to(w.dtype) - (b if b is not None else 0)
        else:
            tensors[f"{path}.bias"] = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    load_adapter_state_dict(model, tensors, name, strict=True, config=ad.config, source=str(peft_dir))
    return ad.config
