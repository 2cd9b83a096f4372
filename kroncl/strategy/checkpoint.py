"""Experience-boundary checkpoints in our own format: safetensors + JSON, nothing pickled.

Layout under a run directory::

    checkpoints/
      exp-0000/adapters.safetensors   every resident adapter set, keys "<set>::<param path>"
      exp-0000/state.json             next experience, accuracy matrix so far, adapter-set
                                      bookkeeping, RNG states, config and its hash
      LATEST                          name of the newest complete checkpoint

A checkpoint directory is written under a temporary name and renamed into place, and LATEST is
replaced atomically after it, so a run killed at any instant leaves either the previous or the
new checkpoint, never a half-written one. (avalanche-lib's own checkpointing pickles the whole
strategy, which fails under current dill and is refused by torch >= 2.6's loader.)
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from kroncl.config import diff_configs
from kroncl.errors import ConfigError, KronclError
from kroncl.fileio import atomic_write_text

FORMAT_VERSION = 1
SEPARATOR = "::"


class CheckpointError(KronclError):
    """A checkpoint is missing, malformed, or belongs to another configuration."""


@dataclass
class Checkpoint:
    path: Path
    next_experience: int
    adapters: dict[str, dict[str, torch.Tensor]]
    """Adapter set name -> its tensors (keys "<module path>.<param>")."""
    state: dict[str, Any]


def rng_state() -> tuple[dict[str, Any], torch.Tensor]:
    py = random.getstate()
    np_state = np.random.get_state()
    json_part = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    return json_part, torch.get_rng_state()


def restore_rng(json_part: dict[str, Any], torch_state: torch.Tensor) -> None:
    version, internal, gauss = json_part["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = json_part["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch_state)


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def save_checkpoint(
    run_dir: Path,
    next_experience: int,
    adapters: dict[str, dict[str, torch.Tensor]],
    state: dict[str, Any],
) -> Path:
    """Write the checkpoint taken after experience ``next_experience - 1`` atomically."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"exp-{next_experience - 1:04d}"
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    rng_json, torch_rng = rng_state()
    tensors = {
        f"{name}{SEPARATOR}{key}": t.detach().cpu().contiguous()
        for name, sd in adapters.items()
        for key, t in sd.items()
    }
    tensors[f"__rng__{SEPARATOR}torch"] = torch_rng
    save_file(tensors, str(tmp / "adapters.safetensors"))
    payload = {
        "format_version": FORMAT_VERSION,
        "next_experience": next_experience,
        "rng": rng_json,
        **state,
    }
    _fsync_write(tmp / "state.json", json.dumps(payload, indent=2, default=str).encode())
    if final.exists():  # left by a run killed between the rename and LATEST
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(root / "LATEST", final.name)
    for old in root.glob("exp-*"):  # keep the newest two: cheap insurance, bounded disk
        if old.name < final.name and old.name != _previous_name(final.name):
            shutil.rmtree(old, ignore_errors=True)
    return final


def _previous_name(name: str) -> str:
    return f"exp-{int(name.split('-')[1]) - 1:04d}"


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The newest complete checkpoint of ``run_dir``, or None when it has none."""
    root = Path(run_dir) / "checkpoints"
    latest = root / "LATEST"
    if not latest.exists():
        return None
    path = root / latest.read_text().strip()
    try:
        state = json.loads((path / "state.json").read_text())
        tensors = load_file(str(path / "adapters.safetensors"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc}); delete it to start over") from exc
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format_version={state.get('format_version')!r}, "
            f"this kroncl reads {FORMAT_VERSION}"
        )
    adapters: dict[str, dict[str, torch.Tensor]] = {}
    torch_rng = None
    for key, t in tensors.items():
        name, sub = key.split(SEPARATOR, 1)
        if name == "__rng__":
            torch_rng = t
        else:
            adapters.setdefault(name, {})[sub] = t
    if torch_rng is not None:
        restore_rng(state["rng"], torch_rng)
    return Checkpoint(path, int(state["next_experience"]), adapters, state)


def check_same_config(checkpoint: Checkpoint, config: dict[str, Any], config_hash: str) -> None:
    """Refuse to resume a checkpoint written under a different configuration."""
    if checkpoint.state.get("config_hash") == config_hash:
        return
    diff = diff_configs(checkpoint.state.get("config", {}), config)
    lines = "\n  ".join(diff) or "(hash differs; configs look equal: was kroncl upgraded?)"
    raise ConfigError(
        f"cannot resume {checkpoint.path.parent.parent}: it was written with a different "
        f"configuration:\n  {lines}\nRerun with the original values, or start a new run "
        "without resume=..."
    )
