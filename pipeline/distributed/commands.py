"""A command as a Ray task: how the cells of a DVC matrix run side by side on a cluster (stages/adapt_all.py).

Each task runs the command its DVC stage declares, in the project folder (on a cluster: a filesystem
every node sees at the same path), with `RAY_ADDRESS` set to the cluster the task runs in, so the
command's own Ray Train run joins it instead of starting another Ray (`joining_environment`: the command
of a local runtime, bound to 127.0.0.1, joins it on loopback).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import ray

from pipeline.config import Config
from pipeline.distributed.runtime import init_ray, joining_environment, node_address
from pipeline.distributed.tasks import stopping

OUTPUT_TAIL = 3000  # characters of a failed command's output in its error
STOP_POLL_SECONDS = 1.0  # how often a running command's task asks whether its driver is stopping
# A stopped command's time to unwind after SIGTERM (a stage removes its partial outputs, ends its Ray Train
# run) before its process group is killed.
STOP_GRACE_SECONDS = 30.0
KILL_WAIT_SECONDS = 10.0  # for the kernel to end a killed process group
# How long a driver waits for its running commands' tasks once it stops (`run_tasks(drain_timeout_s=…)`):
# each returns once its command's process group is gone, at most STOP_POLL + STOP_GRACE + KILL_WAIT after
# the stop; three times that, for a loaded machine.
COMMAND_DRAIN_SECONDS = 3 * (STOP_POLL_SECONDS + STOP_GRACE_SECONDS + KILL_WAIT_SECONDS)


class CommandFailedError(RuntimeError):
    """A command run as a Ray task exited with an error; the message holds the end of its output."""


@dataclass(frozen=True)
class CommandJob:
    name: str
    folder: str  # where it runs
    command: tuple[str, ...]  # a leading "python" is the interpreter of the Ray worker (the project's)


def run_command(job: CommandJob) -> dict[str, Any] | None:
    """One Ray task: run `job.command` in `job.folder`, joined to this task's cluster, as the leader of a
    process group of its own (it and whatever it starts: DataLoader workers, any subprocess).

    When the driver stops (`run_tasks`: SIGTERM, Ctrl-C, another command failed), the command's process
    group gets SIGTERM, as if a user had stopped it (a stage then unwinds: its previous outputs stay), then
    SIGKILL if anything of it is left after STOP_GRACE_SECONDS, and the task returns None once none of the
    group is left. Without that, a command outlives its driver: on a cluster, a cell's Ray Train run
    would go on training after `stages.adapt_all` said it had stopped.
    """
    argv = [sys.executable if job.command[0] == "python" else job.command[0], *job.command[1:]]
    environment = os.environ | joining_environment(ray.get_runtime_context().gcs_address, node_address())
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=job.folder, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
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
    """SIGTERM to the command's process group; SIGKILL to what is left of it once the command has ended
    or STOP_GRACE_SECONDS have passed; returns when no process of the group is left."""
    group = process.pid  # the command leads its own group (start_new_session)
    signal_group(group, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.communicate(timeout=STOP_GRACE_SECONDS)
    # Its children too: a process the command started and left behind, or one that ignores SIGTERM.
    signal_group(group, signal.SIGKILL)
    process.communicate()
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.05)


def signal_group(group: int, signum: int) -> None:
    with suppress(ProcessLookupError):  # the whole group has already ended
        os.killpg(group, signum)


def group_alive(group: int) -> bool:
    """Whether any process of process group `group` is left (signal 0 checks without sending)."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def cells_that_fit(config: Config) -> int:
    """How many training runs of `distributed.*`'s size the cluster holds at once (at least 1)."""
    init_ray()
    resources, dist = ray.cluster_resources(), config.distributed
    if dist.use_gpu:
        return max(1, int(resources.get("GPU", 0) // dist.num_workers))
    return max(1, int(resources.get("CPU", 0) // (dist.num_workers * dist.cpus_per_worker)))
