"""Experience-boundary checkpoints in our own format: safetensors + JSON, nothing pickled.

Layout under a run directory::

    checkpoints/
      exp-0000/adapters.safetensors   every resident adapter set, keys "<set>::<param path>"
      exp-0000/state.json             next experience, accuracy matrix so far, adapter-set
                                      bookkeeping, RNG states, config and its hash
      LATEST                          name of the newest complete checkpoint

A checkpoint directory is written under a temporary name (``.exp-0000.tmp-<pid>``), every file
fsynced, renamed into place, and LATEST is replaced atomically after it, so a run killed at any
instant leaves either the previous or the new checkpoint, never a half-written one; temporary
folders of dead writers are swept on the next save or load. (avalanche-lib's own checkpointing
pickles the whole strategy, which fails under current dill and is refused by torch >= 2.6's
loader.)

Besides the adapter sets, a checkpoint carries named *state tensors* (plugin state such as EWC
importances, the LwF teacher's adapters) under keys ``__state__::<name>``.

Loading a checkpoint has no side effects: the RNG states it saved are restored only by an
explicit :meth:`Checkpoint.restore_rng`.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from kroncl.config import diff_configs
from kroncl.errors import ConfigError, KronclError
from kroncl.faults import fault_point
from kroncl.fileio import atomic_write_text, fsync_dir, pid_alive

FORMAT_VERSION = 1
SEPARATOR = "::"
RNG_KEY = f"__rng__{SEPARATOR}torch"
STATE_PREFIX = f"__state__{SEPARATOR}"
_TMP_NAME = re.compile(r"^\.exp-\d+\.tmp-(?P<pid>\d+)$")


class CheckpointError(KronclError):
    """A checkpoint is missing, malformed, or belongs to another configuration."""


@dataclass
class Checkpoint:
    path: Path
    next_experience: int
    adapters: dict[str, dict[str, torch.Tensor]]
    """Adapter set name -> its tensors (keys "<module path>.<param>")."""
    state: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    """Named state tensors saved beside the adapters (plugin state); empty when none."""
    torch_rng: torch.Tensor | None = None

    def restore_rng(self) -> None:
        """Put Python's, NumPy's and torch's global RNGs back where they were at saving."""
        if self.torch_rng is not None:
            restore_rng(self.state["rng"], self.torch_rng)


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


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def remove_stale_temporaries(root: Path) -> None:
    """Delete ``.exp-*.tmp-<pid>`` folders whose writer is no longer running."""
    for path in root.glob(".exp-*.tmp-*"):
        match = _TMP_NAME.match(path.name)
        if match and not pid_alive(int(match["pid"])):
            shutil.rmtree(path, ignore_errors=True)


def save_checkpoint(
    run_dir: Path,
    next_experience: int,
    adapters: dict[str, dict[str, torch.Tensor]],
    state: dict[str, Any],
    tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write the checkpoint taken after experience ``next_experience - 1`` atomically.

    Args:
        adapters: adapter set name -> its tensors.
        state: JSON-able state (accuracy matrix, bookkeeping, config and its hash, ...).
        tensors: named state tensors (plugin state), returned as :attr:`Checkpoint.tensors`.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root)
    experience = next_experience - 1
    final = root / f"exp-{experience:04d}"
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    rng_json, torch_rng = rng_state()
    flat = {
        f"{name}{SEPARATOR}{key}": t.detach().cpu().contiguous()
        for name, sd in adapters.items()
        for key, t in sd.items()
    }
    flat.update({f"{STATE_PREFIX}{key}": t.detach().cpu().contiguous() for key, t in (tensors or {}).items()})
    flat[RNG_KEY] = torch_rng
    save_file(flat, str(tmp / "adapters.safetensors"))
    _fsync_file(tmp / "adapters.safetensors")
    payload = {
        "format_version": FORMAT_VERSION,
        "next_experience": next_experience,
        "rng": rng_json,
        **state,
    }
    _fsync_write(tmp / "state.json", json.dumps(payload, indent=2, default=str).encode())
    fsync_dir(tmp)
    fault_point("during_checkpoint", exp=experience)
    if final.exists():  # left by a run killed between the rename and LATEST
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(root)
    atomic_write_text(root / "LATEST", final.name)
    fault_point("after_checkpoint", exp=experience)
    for old in root.glob("exp-*"):  # keep the newest two: cheap insurance, bounded disk
        if old.name < final.name and old.name != _previous_name(final.name):
            shutil.rmtree(old, ignore_errors=True)
    return final


def _previous_name(name: str) -> str:
    return f"exp-{int(name.split('-')[1]) - 1:04d}"


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The newest complete checkpoint of ``run_dir``, or None when it has none.

    Global state (RNGs) is left as it is; see :meth:`Checkpoint.restore_rng`.
    """
    root = Path(run_dir) / "checkpoints"
    latest = root / "LATEST"
    if not latest.exists():
        return None
    remove_stale_temporaries(root)
    path = root / latest.read_text().strip()
    try:
        state = json.loads((path / "state.json").read_text())
        flat = load_file(str(path / "adapters.safetensors"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc}); delete it to start over") from exc
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format_version={state.get('format_version')!r}, "
            f"this kroncl reads {FORMAT_VERSION}"
        )
    adapters: dict[str, dict[str, torch.Tensor]] = {}
    tensors: dict[str, torch.Tensor] = {}
    for key, t in flat.items():
        if key == RNG_KEY:
            continue
        if key.startswith(STATE_PREFIX):
            tensors[key[len(STATE_PREFIX):]] = t
            continue
        name, sub = key.split(SEPARATOR, 1)
        adapters.setdefault(name, {})[sub] = t
    return Checkpoint(path, int(state["next_experience"]), adapters, state, tensors, flat.get(RNG_KEY))


def check_same_config(checkpoint: Checkpoint, config: dict[str, Any], config_hash: str) -> None:
    """Refuse to resume a checkpoint written under a different configuration."""
    refuse_config_change(checkpoint.state, config, config_hash, checkpoint.path.parent.parent)


def refuse_config_change(saved: dict[str, Any], config: dict[str, Any], config_hash: str, run_dir: Path) -> None:
    """Raise a ConfigError listing what changed when ``saved["config_hash"]`` is not ``config_hash``.

    Args:
        saved: a record holding the ``config`` and ``config_hash`` a run was started with.
    """
    if saved.get("config_hash") == config_hash:
        return
    diff = diff_configs(saved.get("config", {}), config)
    lines = "\n  ".join(diff) or "(hash differs; configs look equal: was kroncl upgraded?)"
    raise ConfigError(
        f"cannot resume {run_dir}: it was written with a different "
        f"configuration:\n  {lines}\nRerun with the original values, or start a new run "
        "without resume=..."
    )
