"""A local `mlflow server` on 127.0.0.1 over a store, started on a free port and stopped by its process id
(the README's screenshot script and the DAG test use it; users start theirs with `mlflow ui`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.ports import free_port

START_TIMEOUT_S = 240.0  # a loaded 2-core machine took > 90 s (2026-11-30)


@dataclass(frozen=True)
class MlflowServer:
    url: str
    pid: int
    port: int


def absolute_sqlite_uri(uri: str) -> str:
    """sqlite:///relative.db → sqlite:////absolute/relative.db (the server may run from another folder)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def _wait_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow server not healthy after {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group by its pid, then SIGKILL what is left."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


@contextmanager
def mlflow_server(backend_store_uri: str, log: Path) -> Iterator[MlflowServer]:
    """`mlflow server --host 127.0.0.1` over `backend_store_uri`, in its own process group."""
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    command = [str(mlflow), "server", "--backend-store-uri", absolute_sqlite_uri(backend_store_uri),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    # No GenAI job runner: MLflow 3 otherwise starts it and seven huey consumers beside the server, about
    # 5 s of CPU here for jobs this project never submits (measured 2026-12-01).
    environment = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment,
                                   start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        yield MlflowServer(url=url, pid=process.pid, port=port)
    finally:
        _stop(process)
