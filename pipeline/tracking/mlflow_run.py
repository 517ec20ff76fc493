"""MLflow tracking: one run per stage execution, written from rank 0 only.

Run names encode the setting (`gta5-cityscapes_warmup_seed0`), params are the flattened params.yaml
(`adapt.tau`), tags hold the git commit, the DVC stage and package versions.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.config import Config, flatten
from pipeline.errors import InputError

log = logging.getLogger(__name__)

# Versions from the package metadata; torch reports its own (package_versions).
PACKAGES = ("ray", "mlflow", "dvc", "pyarrow", "pillow", "numpy")
MAX_PARAMS_PER_CALL = 100
PROBE_TIMEOUT_SECONDS = 5.0


class TrackingUnavailableError(InputError, RuntimeError):
    """The MLflow tracking store cannot be reached and params say tracking is required."""


def redact_credentials(uri: str) -> str:
    """scheme://user:password@host/… → scheme://***@host/…: params and messages never carry secrets."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    netloc = "***@" + (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def logged_params(config: Config, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The flattened params an MLflow run records, with credentials removed from the tracking URI."""
    params = {**flatten(config), **(extra or {})}
    params["tracking.uri"] = redact_credentials(str(params["tracking.uri"]))
    return params


def probe_tracking_uri(uri: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """None when the store answers (or cannot be probed cheaply), else the reason it does not.

    http(s): GET <uri>/health (the MLflow server's liveness endpoint) with a short timeout, instead of
    the MLflow client's retries with backoff, which take minutes to give up. sqlite / file: the folder
    must exist (or be creatable) and be writable.
    """
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
                return None if response.status < 500 else f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            return None if error.code < 500 else f"HTTP {error.code}"
        except (urllib.error.URLError, OSError) as error:
            return str(getattr(error, "reason", error))
    for prefix in ("sqlite:///", "file://"):
        if uri.startswith(prefix):
            folder = Path(uri[len(prefix) :]).parent if prefix == "sqlite:///" else Path(uri[len(prefix) :])
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                return str(error)
            return None if os.access(folder, os.W_OK) else f"{folder} is not writable"
    return None


@functools.lru_cache(maxsize=8)
def _probe_once(uri: str) -> str | None:
    return probe_tracking_uri(uri)


def tracking_available(config: Config) -> bool:
    """Check the store once per process: raise if it is required and unreachable, else say if usable.

    Stage drivers call it before any training starts, so an unreachable store fails fast. With
    `tracking.enabled: false` nothing is tracked and the store is never asked.
    """
    if not config.tracking.enabled:
        return False
    reason = _probe_once(config.tracking_uri)
    if reason is None:
        return True
    uri = redact_credentials(config.tracking.uri)
    if config.tracking.required:
        raise TrackingUnavailableError(
            f"MLflow tracking store {uri} is unreachable ({reason}): start it, fix "
            "tracking.uri, or set tracking.required: false to train without tracking"
        )
    log.warning("MLflow store %s unreachable (%s): continuing without tracking", uri, reason)
    return False


def git_commit(root: Path) -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def package_versions() -> dict[str, str]:
    """Tags `version.<package>`, `version.python` and `version.cuda` (the CUDA torch was built with, or none).

    torch's own `__version__` names its build: PyPI's CUDA wheels record plain `2.13.0` in their package
    metadata while torch reports `2.13.0+cu130` (seen on Python 3.12), so runs on a CPU and a GPU build
    would otherwise carry the same tag."""
    import torch  # every caller has it loaded already

    versions = {
        "version.python": platform.python_version(),
        "version.torch": torch.__version__,
        "version.cuda": torch.version.cuda or "none",
    }
    for name in PACKAGES:
        try:
            versions[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[f"version.{name}"] = "absent"
    return versions


def experiment_name(config: Config, purpose: str) -> str:
    """One experiment per purpose: <tracking.experiment>-stages | -ablation | -sweep."""
    return f"{config.tracking.experiment}-{purpose}"


class Tracker:
    """An MLflow run, or nothing at all on ranks other than 0 (`active=False`)."""

    def __init__(self, config: Config, purpose: str, run_name: str, stage: str, active: bool = True,
                 extra_params: dict[str, Any] | None = None, run_id: str | None = None,
                 tags: dict[str, str] | None = None) -> None:  # fmt: skip
        """Create the run, or with `run_id` continue an existing one (a restarted worker, a later round,
        the evaluation of an adapted model), so one cell stays one run. `tags` are added to a new run
        (e.g. `mlflow.parentRunId`, which nests a sweep trial under its sweep in the UI)."""
        self.active = active and tracking_available(config)  # False with tracking.enabled: false
        self.run_id: str | None = run_id
        if not self.active:
            return
        import mlflow  # here, not at module level: workers without tracking run where MLflow is absent
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(config.tracking_uri)
        if run_id is not None:
            self.client = MlflowClient(config.tracking_uri)
            return
        experiment = mlflow.set_experiment(experiment_name(config, purpose))
        tags = {"git_commit": git_commit(config.project_root), "dvc_stage": stage, **package_versions(),
                **(tags or {})}  # fmt: skip
        self.client = MlflowClient(config.tracking_uri)
        run = self.client.create_run(experiment.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        params = logged_params(config, extra_params)
        items = [Param(key, str(value)) for key, value in params.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=items[start : start + MAX_PARAMS_PER_CALL])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if not self.active:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(key, float(value), now, step or 0) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=entries)

    def log_params(self, params: dict[str, Any]) -> None:
        if self.active and params:
            from mlflow.entities import Param

            items = [Param(key, str(value)) for key, value in params.items()]
            self.client.log_batch(self.run_id, params=items)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        if self.active:
            self.client.log_artifact(self.run_id, str(path), folder)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.active:
            for key, value in tags.items():
                self.client.set_tag(self.run_id, key, value)

    def finish(self, status: str = "FINISHED") -> None:
        if self.active:
            self.client.set_terminated(self.run_id, status=status)


def child_run_ids(config: Config, parent_run_id: str | None) -> dict[str, str]:
    """Run name → run id of the runs nested under `parent_run_id` (a sweep's trials)."""
    if parent_run_id is None:
        return {}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(config.tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name(config, "sweep"))
    if experiment is None:
        return {}
    runs = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'",
                              max_results=10_000)  # fmt: skip
    return {run.info.run_name: run.info.run_id for run in runs}


def metric_histories(config: Config, runs: dict[str, str], key: str) -> dict[str, list[tuple[int, float]]]:
    """For each entry of `runs` (any name → run id): the (step, value) points its run logged of metric
    `key`, in the order they were logged."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(config.tracking_uri)
    histories = {}
    for name, run_id in runs.items():
        points = sorted(
            client.get_metric_history(run_id, key), key=lambda point: (point.timestamp, point.step)
        )
        histories[name] = [(point.step, point.value) for point in points]
    return histories


def close_runs_left_running(config: Config, statuses: dict[str, str]) -> list[str]:
    """End each run (run id → its final status) that is still RUNNING, as of its last logged metric.

    Ray Tune stops a sweep trial as soon as it has what it needs (ASHA stops it, or its last report came
    in), killing the trial's workers before they can end their MLflow run: without this, every such trial
    stays RUNNING in the MLflow UI for ever (seen in the test DAG and the default DAG). Returns the ids ended.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(config.tracking_uri)
    ended = []
    for run_id, status in statuses.items():
        run = client.get_run(run_id)
        if run.info.status != "RUNNING":
            continue
        logged = [
            point.timestamp for key in run.data.metrics for point in client.get_metric_history(run_id, key)
        ]
        client.set_terminated(run_id, status=status, end_time=max(logged, default=None))
        ended.append(run_id)
    return ended
