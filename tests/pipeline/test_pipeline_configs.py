"""Every shipped config option composes and validates (``configs/<group>/<option>.yaml``).

One case per option: ``python -m kroncl.run <group>=<option>`` must get past Hydra and
``kroncl.config.load_settings`` — and the option must select what its file name says.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from kroncl.config import load_settings

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
OPTIONS = sorted(
    (group.name, option.stem)
    for group in CONFIG_DIR.iterdir() if group.is_dir()
    for option in group.glob("*.yaml")
)


def what_it_selects(settings, group: str) -> object:
    """The value an option of ``group`` is named after (None: groups with a single option)."""
    return {
        "adapter": lambda: settings.adapter["method"],
        "model": lambda: settings.model.name,
        "quant": lambda: settings.quant.scheme,
        "registry": lambda: "local" if settings.registry.enabled else "off",
        "strategy": lambda: settings.strategy.mode,
        "stream": lambda: settings.stream.name,
        "tracking": lambda: "local" if settings.tracking.enabled else "off",
    }.get(group, lambda: None)()


def test_every_group_has_options():
    groups = {g for g, _ in OPTIONS}
    assert groups >= {"adapter", "model", "quant", "registry", "strategy", "stream", "tracking", "train"}
    assert len(OPTIONS) >= 20


def test_the_default_config_composes(compose_config, tmp_path: Path):
    cfg = compose_config([f"paths.runs={tmp_path}"])
    settings = load_settings(OmegaConf.to_container(cfg, resolve=True))
    assert (settings.stream.name, settings.model.name, settings.strategy.mode) == ("toy", "minilm", "sequential")
    assert settings.cache_dir == tmp_path / ".cache" / "tokenized"  # ${paths.runs} interpolation


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(compose_config, group: str, option: str):
    cfg = compose_config([f"{group}={option}"])
    settings = load_settings(OmegaConf.to_container(cfg, resolve=True))
    selected = what_it_selects(settings, group)
    assert selected in (None, option), f"{group}={option} selects {selected!r}"
    assert settings.seed == 0 and settings.resolved[group] == OmegaConf.to_container(cfg[group], resolve=True)
