"""`python -m pipeline.distributed.shared_runtime -- dvc repro`: one local Ray runtime for a whole command.

Every stage of a plain `dvc repro` starts a local Ray runtime of its own and stops it at its end: about
6 s per stage on this machine (2026-12-02: `stages.synthesize` on test params 10.4–11.7 s alone, 3.9–4.9 s
joining a running runtime), for the ten stages that use Ray. Here the runtime is started once, as a stage
starts its own (`init_ray`: 127.0.0.1 only, the dashboard for Ray's state API), the command runs with
RAY_ADDRESS pointing at it (every stage joins it, as under `ray job submit`), and the runtime is stopped
when the command has ended. `make repro` runs the DAG so.

The runtime is a fixed-size one, like a stage's own: LOOPBACK_RUNTIME_VARIABLE tells the stages so, and a
run that needs more CPUs than it has is refused (`pipeline.distributed.train.require_resources`) instead
of waiting for nodes nobody will add.

SIGTERM or SIGINT to this process goes to the command's whole process group (the command runs in a
session of its own): `dvc repro` and the stage it is running stop, the stage unwinding as it does under
a plain `dvc repro`. The runtime stops once the command's processes have exited (at most
DRAIN_TIMEOUT_S later); the exit status is the command's, 128 + N if a signal N ended it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from typing import Any

# As in stages/__init__.py, before Ray is imported: the runtime's processes inherit it, so they go without
# Abseil's failure-signal handler, as the processes of a stage's own runtime do.
os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"] = "1"

import ray

from pipeline.distributed.runtime import init_ray, joining_environment, node_address

log = logging.getLogger("pipeline.shared_runtime")
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# How long the runtime waits, after the command's own process ends, for the rest of its process group (a
# stage still unwinding after `dvc` was stopped) before it stops.
DRAIN_TIMEOUT_S = 120.0


def exit_status(returncode: int) -> int:
    """A shell's exit status for a child's `returncode` (negative: killed by that signal)."""
    return 128 - returncode if returncode < 0 else returncode


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal still exists
        return True
    return True


def wait_for_group(group: int, timeout: float) -> bool:
    """Whether every process of `group` has exited within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while group_alive(group):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def run_in_shared_runtime(command: list[str], num_cpus: int | None = None) -> int:
    """Run `command` with one local Ray runtime that its Ray drivers join; returns its exit status."""
    child: subprocess.Popen | None = None
    stopped: list[int] = []  # a signal that came before the command started: it never starts

    def forward(signum: int, frame: Any) -> None:
        stopped.append(signum)
        if child is not None:
            with suppress(ProcessLookupError):
                os.killpg(child.pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        init_ray(num_cpus=num_cpus, log_to_driver=False)
        if stopped:
            return 128 + stopped[0]
        address = ray.get_runtime_context().gcs_address
        log.info("local Ray runtime at %s for: %s", address, " ".join(command))
        environment = os.environ | joining_environment(address, node_address())  # every driver joins it
        child = subprocess.Popen(command, env=environment, start_new_session=True)
        if stopped:  # signalled while the command was being started, before `forward` knew it
            with suppress(ProcessLookupError):
                os.killpg(child.pid, stopped[-1])
        returncode = child.wait()
        # The group's id is the command's pid, which is not reused while a member of the group lives.
        if not wait_for_group(child.pid, DRAIN_TIMEOUT_S):
            log.warning("processes of the command still running %.0f s after it ended; stopping the "
                        "runtime anyway", DRAIN_TIMEOUT_S)  # fmt: skip
        return exit_status(returncode)
    finally:
        ray.shutdown()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.distributed.shared_runtime",
        description="Run a command (e.g. `dvc repro`) with one local Ray runtime that every stage joins.",
    )
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="CPUs of the runtime (default: every core of the machine)")  # fmt: skip
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after `--`")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (e.g. `-- dvc repro`)")
    if args.num_cpus is not None and args.num_cpus < 1:
        parser.error(f"--num-cpus = {args.num_cpus} is out of range (allowed: ≥ 1)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run_in_shared_runtime(command, args.num_cpus)


if __name__ == "__main__":
    sys.exit(main())
