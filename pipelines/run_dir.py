"""A run directory's identity, its exclusive lock, and which directory a run (or resume) uses.

``<run_dir>/run.json`` is written when a run starts and names it for good::

    {"run_id": "<uuid hex>", "status": "running" | "finished", "mlflow_run_id": "...",
     "config": {...}, "config_hash": "...", "started": "...", "finished": "..."}

- ``run_id`` is the run's identity in the registry (tag ``kroncl.run`` on every version), so a
  registration repeated after a crash finds the version it already made;
- ``mlflow_run_id`` lets a resume continue the same MLflow run instead of opening another;
- ``config``/``config_hash`` let a resume refuse a changed configuration even before the first
  checkpoint exists;
- ``status`` tells a resume of a finished run to report it, not to start it again.

``<run_dir>/.lock`` is held (``flock``) for the whole run, so a second process that would write
the same directory stops at once with an error naming the holder instead of mixing two runs'
files.
"""

from __future__ import annotations

import fcntl
import logging
import json
import os
import secrets
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kroncl.errors import ConfigError
from kroncl.fileio import atomic_write_text

RECORD_NAME = "run.json"
LOCK_NAME = ".lock"


@dataclass
class RunRecord:
    """What ``run.json`` holds (see the module docstring)."""

    run_id: str
    config: dict[str, Any]
    config_hash: str
    status: str = "running"
    mlflow_run_id: str | None = None
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    finished: str | None = None

    @property
    def is_finished(self) -> bool:
        return self.status == "finished"

    @classmethod
    def new(cls, config: dict[str, Any], config_hash: str) -> RunRecord:
        return cls(uuid.uuid4().hex, config, config_hash)

    @classmethod
    def load(cls, run_dir: Path) -> RunRecord | None:
        path = Path(run_dir) / RECORD_NAME
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path} is not a kroncl run record ({exc}); "
                              "delete the directory or resume another run") from exc

    def save(self, run_dir: Path) -> None:
        atomic_write_text(Path(run_dir) / RECORD_NAME, json.dumps(asdict(self), indent=2, default=str) + "\n")

    def mark_finished(self, run_dir: Path) -> None:
        self.status = "finished"
        self.finished = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.save(run_dir)


class RunLock:
    """Exclusive ``flock`` on ``<run_dir>/.lock`` for as long as the run is in this process.

    Raises:
        ConfigError: another live process holds the directory (its pid is in the message).
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fh = None

    def __enter__(self) -> RunLock:
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise ConfigError(
                f"run directory {self.path.parent} is in use by another kroncl process (pid {holder}); "
                "wait for it to end, or start this run in its own directory (leave hydra.run.dir / "
                "run_dir at their defaults: each run then gets a unique one)"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def unique_run_name() -> str:
    """``<YYYY-mm-dd_HH-MM-SS>_<6 hex>``: sorts by start time; two runs in one second differ."""
    return f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"


def is_run_dir(path: Path) -> bool:
    """A directory a kroncl run wrote (its record, or an older run's checkpoint)."""
    return (path / RECORD_NAME).exists() or (path / "checkpoints" / "LATEST").exists()


def resolve_run_dir(settings, explicit: Path | None, hydra_dir: Path | None) -> tuple[Path, bool]:
    """The directory this run writes, and whether it resumes a run that is already there.

    Args:
        settings: the validated :class:`~kroncl.config.RunSettings`.
        explicit: a directory passed by library callers (``run(cfg, run_dir=...)``).
        hydra_dir: Hydra's output directory under ``python -m kroncl.run``, else None.
    """
    if isinstance(settings.resume, str) and settings.resume not in ("true", "false"):
        path = Path(settings.resume).expanduser()
        if not is_run_dir(path):
            raise ConfigError(f"resume={settings.resume!r} is not a kroncl run directory (no {RECORD_NAME}); "
                              "point resume= at a directory a kroncl run wrote, or use resume=true")
        return path, True
    if settings.resume is True:
        stream_root = settings.runs_root / settings.stream.name
        candidates = sorted(p for p in stream_root.glob("*") if p.is_dir() and is_run_dir(p))
        if not candidates:
            raise ConfigError(f"resume=true but {stream_root} holds no run of stream "
                              f"{settings.stream.name!r}; start without resume")
        return candidates[-1], True
    if explicit is not None:
        return Path(explicit), False
    if settings.run_dir is not None:
        return Path(settings.run_dir), False
    if hydra_dir is not None:
        return hydra_dir, False
    return settings.runs_root / settings.stream.name / unique_run_name(), False


def attach_log_file(run_dir: Path) -> logging.FileHandler | None:
    """Mirror the kroncl loggers into <run_dir>/run.log.

    Returns:
        The handler added (the caller removes it when the run ends), or None when one for
        this file was already attached.
    """
    root = logging.getLogger("kroncl")
    root.setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    path = os.path.abspath(run_dir / "run.log")  # as FileHandler.baseFilename
    if any(isinstance(h, logging.FileHandler) and h.baseFilename == path for h in root.handlers):
        return None
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    return handler
