"""A command as a Ray task: how the cells of a DVC matrix run side by side on a cluster (stages/adapt_all.py).

Each task runs the command its DVC stage declares, in the project folder (on a cluster: a filesystem
every node sees at the same path), with `RAY_ADDRESS` set to the cluster the task runs in, so the
command's own Ray Train run joins it instead of starting another Ray (`joining_environment`: the command
of a local runtime, bound to 127.0.0.1, joins it on loopback).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import ray

from pipeline.config import Config
from pipeline.distributed.runtime import init_ray, joining_environment, node_address
from pipeline.distributed.tasks import DRAIN_TIMEOUT_SECONDS, stopping

OUTPUT_TAIL = 3000  # characters of a failed command's output in its error
STOP_POLL_SECONDS = 1.0  # how often a running command's task asks whether its driver is stopping
# A stopped command's time to unwind after SIGTERM before it is killed: within the driver's wait for its
# running tasks, so the driver never leaves a command running behind it.
STOP_GRACE_SECONDS = DRAIN_TIMEOUT_SECONDS / 2


class CommandFailedError(RuntimeError):
    """A command run as a Ray task exited with an error; the message holds the end of its output."""


@dataclass(frozen=True)
class CommandJob:
    name: str
    folder: str  # where it runs
    command: tuple[str, ...]  # a leading "python" is the interpreter of the Ray worker (the project's)


def run_command(job: CommandJob) -> dict[str, Any] | None:
    """One Ray task: run `job.command` in `job.folder`, joined to this task's cluster.

    When the driver stops (`run_tasks`: SIGTERM, Ctrl-C, another command failed), the command gets
    SIGTERM, as if a user had stopped it (a stage then unwinds: its previous outputs stay), and the task
    returns None. Without that, a command outlives its driver: on a cluster, a cell's Ray Train run
    would go on training after `stages.adapt_all` said it had stopped.
    """
    argv = [sys.executable if job.command[0] == "python" else job.command[0], *job.command[1:]]
    environment = os.environ | joining_environment(ray.get_runtime_context().gcs_address, node_address())
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=job.folder, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    while True:
        try:  # a `communicate` that times out keeps what it has read; the next call goes on from there
            stdout, stderr = process.communicate(timeout=STOP_POLL_SECONDS)
            break
        except subprocess.TimeoutExpired:
            if stopping():
                stop_command(process)
                return None
    if process.returncode != 0:
        output = (stdout + stderr)[-OUTPUT_TAIL:]
        raise CommandFailedError(
            f"{job.name}: `{' '.join(job.command)}` exited {process.returncode}:\n{output}"
        )
    return {"name": job.name, "seconds": round(time.perf_counter() - started, 1)}


def stop_command(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not ended within STOP_GRACE_SECONDS."""
    process.terminate()
    try:
        process.communicate(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def cells_that_fit(config: Config) -> int:
    """How many training runs of `distributed.*`'s size the cluster holds at once (at least 1)."""
    init_ray()
    resources, dist = ray.cluster_resources(), config.distributed
    if dist.use_gpu:
        return max(1, int(resources.get("GPU", 0) // dist.num_workers))
    return max(1, int(resources.get("CPU", 0) // (dist.num_workers * dist.cpus_per_worker)))
