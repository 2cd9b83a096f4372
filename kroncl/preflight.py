"""Checks of the command line that must run before Hydra composes the config.

Hydra rejects an unknown config-group value (``quant=nf5``) with its own multi-line message and
creates the run's output folder under ``paths.runs`` before ``main`` runs, so a bad group value
or an unusable ``paths.runs`` would never reach :func:`kroncl.config.load_settings`. These
checks read ``sys.argv`` against the ``kroncl/configs/`` folder and say, in one line, what to write.
Anything they do not understand (sweeps, interpolations, Hydra flags) is left to Hydra.
"""

from __future__ import annotations

import re
from pathlib import Path

from kroncl.config import runs_root_error

__all__ = ["CONFIG_DIR", "group_choices", "argv_problem"]

# Inside the package, so a clone and an installed wheel read the same files (package data).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# ``group=value``, ``+group=value`` (append) and ``++group=value`` (force); no dots: a group.
_GROUP_OVERRIDE = re.compile(r"^\+{0,2}(?P<group>[A-Za-z_][A-Za-z0-9_-]*)=(?P<value>.*)$")
_HYDRA_SYNTAX = re.compile(r"[${}()\[\]*]")
"""Interpolations, sweeps (``choice(...)``, ``range(...)``), lists and globs: Hydra's business."""


def group_choices(config_dir: Path = CONFIG_DIR) -> dict[str, list[str]]:
    """Config group -> its option names (``quant`` -> ``[int4, int8, nf4, none]``)."""
    return {
        group.name: sorted(option.stem for option in group.glob("*.yaml"))
        for group in sorted(config_dir.iterdir()) if group.is_dir()
    }


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _group_problem(group: str, value: str, choices: list[str]) -> str | None:
    """Every value of ``group=a`` or of a sweep ``group=a,b`` must be a shipped option."""
    if _HYDRA_SYNTAX.search(value) or value in ("null", ""):
        return None
    for option in (_unquote(v.strip()) for v in value.split(",")):
        if option not in choices:
            return f"{group}={option} is not a choice; choose one of: {', '.join(choices)}"
    return None


def _default_runs_root(config_dir: Path) -> str | None:
    """``paths.runs`` of ``config.yaml`` when it is a plain string (else Hydra resolves it)."""
    from omegaconf import OmegaConf

    value = OmegaConf.load(config_dir / "config.yaml").get("paths", {}).get("runs")
    return value if isinstance(value, str) and not _HYDRA_SYNTAX.search(value) else None


def _user_config_dirs(args: list[str]) -> list[Path] | None:
    """The folders of ``--config-dir DIR`` / ``-cd DIR`` / ``--config-dir=DIR`` (the user's own
    configs, searched beside the shipped ones), or None when the config is not only the shipped
    one plus those: ``--config-path``/``-cp`` or ``hydra.searchpath`` (group values unknown here)."""
    dirs: list[Path] = []
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag in ("--config-path", "-cp") or arg.lstrip("+").startswith("hydra.searchpath"):
            return None
        if flag in ("--config-dir", "-cd"):
            value = value if eq else (args[i + 1] if i + 1 < len(args) else "")
            if value:
                dirs.append(Path(value).expanduser())
    return dirs


def argv_problem(args: list[str], config_dir: Path = CONFIG_DIR) -> str | None:
    """The first problem of the command-line overrides Hydra would report badly, or None."""
    groups = group_choices(config_dir)
    user_dirs = _user_config_dirs(args)
    if user_dirs is None:
        groups = {}
    for user_dir in user_dirs or []:
        if user_dir.is_dir():  # a missing folder is Hydra's to report
            for group, options in group_choices(user_dir).items():
                groups[group] = sorted(set(groups.get(group, [])) | set(options))
    if not any(a.lstrip("+").startswith("paths.runs=") for a in args):
        default = _default_runs_root(config_dir)
        if default is not None and (problem := runs_root_error(default)) is not None:
            return problem
    for arg in args:
        if arg.startswith("-"):
            continue  # --multirun, --cfg job, -m, ...
        match = _GROUP_OVERRIDE.match(arg)
        if match and match["group"] in groups:
            problem = _group_problem(match["group"], match["value"], groups[match["group"]])
            if problem is not None:
                return problem
        key, sep, value = arg.lstrip("+").partition("=")
        if sep and key == "paths.runs" and value and not _HYDRA_SYNTAX.search(value):
            problem = runs_root_error(_unquote(value))
            if problem is not None:
                return problem
    return None
