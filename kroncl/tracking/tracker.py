"""`Tracker`: the one object the pipeline talks to for experiment tracking.

Design:

* MLflow is reached through an explicit ``MlflowClient`` (never the global ``mlflow.start_run``
  state), so several trackers and other MLflow users in one process do not interfere.
* The default store is embedded: ``sqlite:///<runs_root>/mlflow.db`` with artifacts under
  ``<runs_root>/mlartifacts/<experiment>`` — no server needed; ``mlflow ui
  --backend-store-uri sqlite:///<runs_root>/mlflow.db`` browses it. ``http(s)://`` URIs talk to
  a tracking server the same way.
* Tracking must never cost the training: every MLflow call is wrapped; a failure is recorded
  in :attr:`Tracker.failures`, warned about once per operation, and after
  ``max_consecutive_failures`` failures in a row the tracker stops calling MLflow. Everything
  logged is also appended to ``<run_dir>/tracking/metrics.jsonl`` *before* MLflow is tried,
  so the run directory always holds the full record.
* :meth:`Tracker.resume` reopens a SIGKILLed run and skips what MLflow already holds (one
  point per step); a SQLite store's first use is locked across processes
  (:mod:`kroncl.tracking.resume`), so runs started together on a fresh ``mlflow.db`` all work.
* For remote URIs MLflow's HTTP timeout/retries are shortened per call
  (:func:`kroncl.tracking.uris.http_env`): an unreachable server fails in seconds.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kroncl.fileio import atomic_write_text
from kroncl.metrics import AccuracyMatrix
from kroncl.tracking.matrix_log import AccuracyMatrixLog
from kroncl.tracking.names import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_PER_BATCH,
    flatten_config,
    json_safe_number,
    redact_uri,
    sanitize_name,
    scalar_value,
    tag_values,
)
from kroncl.tracking.resume import reopen_run, split_params, store_lock
from kroncl.tracking.uris import (
    default_artifact_root,
    default_tracking_uri,
    ensure_experiment,
    http_env,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
TRACKING_DIR = "tracking"
JSONL_NAME = "metrics.jsonl"
RUN_INFO_NAME = "run.json"


@dataclass(frozen=True)
class TrackingFailure:
    """One MLflow call that raised: ``operation`` (e.g. ``"log_metrics"``), the error text
    (``"ConnectionError: ..."``) and the Unix time it happened."""

    operation: str
    error: str
    time: float


class Tracker:
    """Facade over MLflow with a local JSONL mirror and failure isolation.

    Args:
        uri: MLflow tracking URI (``sqlite:///...``, ``postgresql://...``, ``http://host:port``)
            or ``None`` for the embedded store :func:`default_tracking_uri` of ``runs_root``.
        experiment: MLflow experiment name; created when missing (restored when deleted).
        enabled: ``False`` makes every method a no-op (no MLflow import, no files).
        run_dir: this run's directory; the mirror goes to ``<run_dir>/tracking/metrics.jsonl``.
        runs_root: where the embedded store lives; default ``run_dir.parent``.
        artifact_root: artifact location for a newly created experiment (URI or path);
            default: ``mlartifacts`` next to a SQLite file / under ``runs_root``; the server's
            choice for ``http(s)`` URIs.
        max_consecutive_failures: after this many failed MLflow calls in a row, stop calling.
        http_timeout_s: per-request timeout for remote URIs.
        http_max_retries: retries per request for remote URIs.

    Raises:
        ValueError: ``experiment`` empty or ``max_consecutive_failures < 1``.
    """

    def __init__(
        self,
        uri: str | None,
        experiment: str,
        enabled: bool,
        run_dir: str | Path,
        *,
        runs_root: str | Path | None = None,
        artifact_root: str | Path | None = None,
        max_consecutive_failures: int = 3,
        http_timeout_s: int = 5,
        http_max_retries: int = 1,
    ) -> None:
        if not experiment:
            raise ValueError("tracking.experiment is empty; set tracking.experiment=<name>")
        if max_consecutive_failures < 1:
            raise ValueError(f"max_consecutive_failures={max_consecutive_failures} must be >= 1")
        self.enabled = bool(enabled)
        self.experiment = experiment
        self.run_dir = Path(run_dir)
        self.runs_root = Path(runs_root) if runs_root is not None else self.run_dir.parent
        self.tracking_uri = uri or default_tracking_uri(self.runs_root)
        if artifact_root is None:
            self.artifact_root = default_artifact_root(self.tracking_uri, self.runs_root)
        else:
            root = str(artifact_root)
            self.artifact_root = root if "://" in root else Path(root).resolve().as_uri()
        self.max_consecutive_failures = max_consecutive_failures
        self._http_env_defaults = {
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(http_timeout_s)),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(int(http_max_retries)),
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        }
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._client: Any = None
        self._failures: list[TrackingFailure] = []
        self._warned: set[str] = set()
        self._consecutive_failures = 0
        self._gave_up = False
        self._ended = False
        self._matrix_log = AccuracyMatrixLog(self)
        # Filled by resume(): what MLflow already holds, never sent again.
        self._logged_steps: set[tuple[str, int]] = set()
        self._logged_params: dict[str, str] = {}

    @classmethod
    def from_config(cls, cfg: Any, run_dir: str | Path, **kwargs: Any) -> Tracker:
        """Build from a ``TrackingConfig``-like object (``enabled``, ``uri``, ``experiment``)."""
        return cls(cfg.uri, cfg.experiment, cfg.enabled, run_dir, **kwargs)

    # -- state ----------------------------------------------------------------------------

    @property
    def jsonl_path(self) -> Path:
        """``<run_dir>/tracking/metrics.jsonl``: every logged record, one JSON object a line."""
        return self.run_dir / TRACKING_DIR / JSONL_NAME

    @property
    def failures(self) -> list[TrackingFailure]:
        """Every failed MLflow call so far (a copy)."""
        return list(self._failures)

    @property
    def gave_up(self) -> bool:
        """True once ``max_consecutive_failures`` calls failed in a row; MLflow is not called again."""
        return self._gave_up

    @property
    def active(self) -> bool:
        """True while calls still go to MLflow (enabled, a run started, not given up)."""
        return self.enabled and self.run_id is not None and not self._gave_up

    def __getstate__(self) -> dict[str, Any]:
        # The MLflow client holds sessions/DB engines; it is rebuilt lazily after unpickling
        # (Avalanche checkpoints pickle the evaluator and so its loggers).
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    # -- public API -----------------------------------------------------------------------

    def start(self, run_name: str, tags: Mapping[str, Any] | None = None) -> str | None:
        """Create the MLflow run.

        Args:
            run_name: display name of the run.
            tags: run tags (values stringified, cut to MLflow's limit).

        Returns:
            The MLflow run id, or ``None`` when disabled or MLflow failed (the failure is in
            :attr:`failures`; later calls then only write the JSONL mirror).

        Raises:
            RuntimeError: if this tracker already started a run.
        """
        if not self.enabled:
            return None
        self._check_not_started()
        str_tags = tag_values(tags)
        return self._create_run(run_name, str_tags)

    def resume(self, run_id: str, tags: Mapping[str, Any] | None = None, *,
               run_name: str | None = None) -> str | None:
        """Reopen run ``run_id`` (e.g. after SIGKILL) instead of creating a new one.

        Sets it back to RUNNING, sets ``tags``, writes ``tracking/run.json`` like :meth:`start`.
        Afterwards :meth:`log_metrics` skips every ``(key, step)`` the run already holds
        (recomputed values are the same; MLflow would chart two points per step) and
        :meth:`log_params` skips params already logged (a changed value is warned about; MLflow
        params are write-once). ``run_name`` names the new run made when ``run_id`` cannot be
        reopened (default: the run directory's name).

        Returns:
            ``run_id``; if the store lacks the run, it is deleted or reopening failed, the id
            of a new run made as :meth:`start` does (the reason is in :attr:`failures`);
            ``None`` when disabled or MLflow failed.

        Raises:
            RuntimeError: if this tracker already started a run.
        """
        if not self.enabled:
            return None
        self._check_not_started()
        str_tags = tag_values(tags)
        self._append({"event": "resume", "run_id": run_id, "experiment": self.experiment,
                      "tracking_uri": redact_uri(self.tracking_uri), "tags": str_tags})
        outcome = self._call("resume", lambda: self._reopen(run_id, str_tags), need_run=False)
        if not isinstance(outcome, tuple):
            if isinstance(outcome, str):  # the run is missing: not a store failure, not counted
                self._record_failure("resume", LookupError(outcome), count=False)
            return self._create_run(run_name or self.run_dir.name, str_tags, instead_of=run_id)
        run, self._logged_steps = outcome
        self._logged_params = dict(run.data.params)
        self.run_id, self.experiment_id = run_id, run.info.experiment_id
        self._write_run_info()
        return self.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log run parameters (nested mappings are flattened with :func:`flatten_config`)."""
        if not self.enabled:
            return
        flat = self._unlogged_params(flatten_config(params))
        if not flat:
            return
        self._append({"event": "params", "params": flat})

        def send() -> None:
            from mlflow.entities import Param

            items = [Param(k, v) for k, v in flat.items()]
            for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
                self._get_client().log_batch(self.run_id, params=items[start:start + MAX_PARAMS_PER_BATCH],
                                             synchronous=True)

        self._call("log_params", send)

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log scalar metrics at ``step``.

        Values go through :func:`~kroncl.tracking.names.scalar_value`: ``None`` and non-scalars
        are skipped (noted once in the log); names are sanitised for MLflow.
        """
        if not self.enabled:
            return
        clean: dict[str, float] = {}
        for name, value in metrics.items():
            number = scalar_value(value)
            if number is None:
                if value is not None:
                    self._warn_once(f"skip:{name}",
                                    f"metric {name!r} is not a scalar ({type(value).__name__}); not logged")
                continue
            clean[sanitize_name(name)] = number
        step = int(step)
        clean = {k: v for k, v in clean.items() if (k, step) not in self._logged_steps}
        if not clean:
            return
        self._append({"event": "metrics", "step": step,
                      "metrics": {k: json_safe_number(v) for k, v in clean.items()}})

        def send() -> None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            items = [Metric(k, v, now, step) for k, v in clean.items()]
            for start in range(0, len(items), MAX_METRICS_PER_BATCH):
                self._get_client().log_batch(self.run_id, metrics=items[start:start + MAX_METRICS_PER_BATCH],
                                             synchronous=True)

        self._call("log_metrics", send)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (values stringified, cut to MLflow's 8000-character limit)."""
        if not self.enabled or not tags:
            return
        str_tags = tag_values(tags)
        self._append({"event": "tags", "tags": str_tags})
        self._call("set_tags", lambda: self._send_tags(self.run_id, str_tags))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file, or a directory's contents, under ``artifact_path`` of the run."""
        if not self.enabled:
            return
        path = Path(path)
        self._append({"event": "artifact", "path": str(path), "artifact_path": artifact_path})

        def send() -> None:
            if path.is_dir():
                self._get_client().log_artifacts(self.run_id, str(path), artifact_path)
            elif path.is_file():
                self._get_client().log_artifact(self.run_id, str(path), artifact_path)
            else:
                raise FileNotFoundError(f"artifact {path} does not exist")

        self._call("log_artifact", send)

    def log_accuracy_matrix(self, matrix: AccuracyMatrix, directory: str | Path | None = None,
                            chance: Mapping[str, float] | None = None) -> dict[str, Path]:
        """Save, plot and log the accuracy matrix; safe to call after every experience.

        Writes ``accuracy_matrix.json/.csv``, ``metrics.json``, ``accuracy_heatmap.png`` and
        ``forgetting_curves.png`` (every task's curve in one chart, ``chance``: task -> chance
        level lines) to ``directory`` (default ``<run_dir>/tracking/accuracy``), uploaded under
        the artifact path ``accuracy``. Metrics, step = experience index, for each new experience:

        * ``acc/<task>`` — accuracy on every task after that experience (forgetting curves);
        * ``stream/{acc,bwt,forgetting,fwt,avalanche_forgetting,avalanche_bwt,avalanche_fwt}`` —
          :func:`kroncl.metrics.metrics_over_time` (undefined ones, e.g. BWT at step 0, not logged);
        * once: ``baseline/<task>`` at step 0 and, when the matrix is complete,
          ``final/{acc,bwt,fwt,forgetting}`` at step T-1.

        Returns:
            The written files by kind (empty when disabled).
        """
        if not self.enabled:
            return {}
        out_dir = Path(directory) if directory is not None else self.run_dir / TRACKING_DIR / "accuracy"
        return self._matrix_log.log(matrix, out_dir, chance)

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run terminated with ``status`` (FINISHED, FAILED or KILLED, else ValueError); idempotent."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run status {status!r} is not one of {', '.join(RUN_STATUSES)}")
        if not self.enabled or self._ended:
            return
        self._ended = True
        self._append({"event": "end", "status": status, "failures": len(self._failures),
                      "gave_up": self._gave_up})
        self._call("end", lambda: self._get_client().set_terminated(self.run_id, status))

    def with_client(self, operation: str, fn: Callable[[Any], T]) -> T | None:
        """``fn(MlflowClient)`` under the run's failure policy (reported, never raised): MLflow work beyond the run."""
        return self._call(operation, lambda: fn(self._get_client()))

    # -- internals ------------------------------------------------------------------------

    def _check_not_started(self) -> None:
        if self.run_id is not None:
            raise RuntimeError(f"Tracker already started run {self.run_id}; create a new Tracker per run")

    def _create_run(self, run_name: str, str_tags: dict[str, str], **record: Any) -> str | None:
        self._append({"event": "start", "run_name": run_name, "experiment": self.experiment,
                      "tracking_uri": redact_uri(self.tracking_uri), "tags": str_tags, **record})

        def create() -> str:
            with store_lock(self.tracking_uri):  # first use may create the schema: one process at a time
                client = self._get_client()
                experiment_id = ensure_experiment(client, self.experiment, self.artifact_root)
            run = client.create_run(experiment_id, run_name=run_name, tags=str_tags)
            self.experiment_id = experiment_id
            return run.info.run_id

        self.run_id = self._call("start", create, need_run=False)
        self._write_run_info()
        return self.run_id

    def _reopen(self, run_id: str, str_tags: dict[str, str]) -> tuple[Any, set[tuple[str, int]]] | str:
        outcome = reopen_run(self._get_client(), run_id, self.tracking_uri)
        if isinstance(outcome, tuple):
            self._send_tags(run_id, str_tags)
        return outcome

    def _send_tags(self, run_id: str, str_tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, v) for k, v in str_tags.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self._get_client().log_batch(run_id, tags=items[start:start + MAX_PARAMS_PER_BATCH], synchronous=True)

    def _unlogged_params(self, flat: dict[str, str]) -> dict[str, str]:
        new, changed = split_params(flat, self._logged_params)
        for key, (old, value) in changed.items():
            self._warn_once(f"param:{key}", f"param {key!r}={value!r} differs from {old!r} logged before the "
                            f"resume of run {self.run_id}; MLflow params cannot change, {old!r} stays "
                            "(start a new run to record the new value)")
        return new

    def _write_run_info(self) -> None:
        if self.run_id is None:
            return
        atomic_write_text(
            self.run_dir / TRACKING_DIR / RUN_INFO_NAME,
            json.dumps({"run_id": self.run_id, "experiment_id": self.experiment_id,
                        "experiment": self.experiment, "tracking_uri": redact_uri(self.tracking_uri)},
                       indent=2) + "\n",
        )

    def _get_client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def _call(self, operation: str, fn: Callable[[], T], need_run: bool = True) -> T | None:
        if self._gave_up or (need_run and self.run_id is None):
            return None
        try:
            with self._http_env():
                result = fn()
        except Exception as exc:  # tracking must never take the training down
            self._record_failure(operation, exc)
            return None
        self._consecutive_failures = 0
        return result

    def _record_failure(self, operation: str, exc: BaseException, count: bool = True) -> None:
        self._failures.append(TrackingFailure(operation, f"{type(exc).__name__}: {exc}"[:2000], time.time()))
        self._warn_once(f"fail:{operation}",
                        f"MLflow {operation} failed ({type(exc).__name__}: {str(exc)[:300]}); "
                        f"values stay in {self.jsonl_path}")
        if not count:
            return
        self._consecutive_failures += 1
        if self._consecutive_failures >= self.max_consecutive_failures and not self._gave_up:
            self._gave_up = True
            log.warning("MLflow at %s failed %d times in a row; no more MLflow calls in this run, "
                        "tracking continues in %s", redact_uri(self.tracking_uri), self._consecutive_failures,
                        self.jsonl_path)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def _http_env(self):
        return http_env(self.tracking_uri, self._http_env_defaults)

    def _append(self, record: dict[str, Any]) -> None:
        record = {"time": time.time(), **record}
        try:
            self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
            with self.jsonl_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, allow_nan=False) + "\n")
        except OSError as exc:  # e.g. disk full: keep training, remember it
            self._record_failure("jsonl", exc, count=False)
