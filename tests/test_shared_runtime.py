"""`python -m pipeline.distributed.shared_runtime -- <command>` (what `make repro` runs): one local Ray
runtime that every Ray driver of the command joins, on loopback only, stopped when the command ends or
when the wrapper is told to stop."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from ray_head import alive, is_loopback, listening

from pipeline.distributed.runtime import LOOPBACK_RUNTIME_VARIABLE, joining_environment
from pipeline.distributed.shared_runtime import exit_status

ROOT = Path(__file__).resolve().parents[1]
# A Ray driver as a stage is one: it joins through `init_ray`, runs a task and reports what it joined.
DRIVER = r"""
import json, ray
from pipeline.distributed.runtime import init_ray
from pipeline.distributed.tasks import run_tasks
from pipeline.distributed.train import fixed_size_runtime

init_ray()
assert run_tasks(abs, [-1, -2], "probe") == [1, 2]
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "node_ip": ray.util.get_node_ip_address(),
                  "fixed_size": fixed_size_runtime()}), flush=True)
"""
STARTED_TIMEOUT_S = 240


def test_exit_status_is_the_commands_or_128_plus_its_signal():
    assert exit_status(0) == 0 and exit_status(3) == 3 and exit_status(-signal.SIGTERM) == 143


def test_a_child_joins_through_ray_address_marked_loopback_only_when_its_node_is():
    """A runtime `init_ray` started has the node address 127.0.0.1: its children must join on loopback.
    A `ray start --head` reached at 127.0.0.1 can have the machine's address: not marked."""
    env = joining_environment("127.0.0.1:20123", "127.0.0.1")
    assert env["RAY_ADDRESS"] == env[LOOPBACK_RUNTIME_VARIABLE] == "127.0.0.1:20123"
    assert joining_environment("127.0.0.1:20123", "192.0.2.2") == {"RAY_ADDRESS": "127.0.0.1:20123"}


@pytest.mark.slow
@pytest.mark.heavy  # make test-heavy: see docs/decisions.md, "`make test` and `make test-heavy`"
def test_drivers_of_the_command_share_one_loopback_runtime_that_sigterm_stops(tmp_path):
    """Two drivers, one after the other, join the same runtime (a fixed-size one on 127.0.0.1); every
    socket of the runtime listens on loopback; SIGTERM to the wrapper stops the command (exit 143) and
    the runtime, leaving no process."""
    output = tmp_path / "output.log"
    driver = f"{shlex.quote(sys.executable)} -c {shlex.quote(DRIVER)}"
    command = f"{driver} && {driver} && exec sleep 600"
    with output.open("w") as log:
        wrapper = subprocess.Popen([sys.executable, "-m", "pipeline.distributed.shared_runtime", "--num-cpus",
                                    "2", "--", "sh", "-c", command], cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + STARTED_TIMEOUT_S
        while len(reports := [json.loads(line) for line in output.read_text().splitlines()
                              if line.startswith("{")]) < 2:  # fmt: skip
            assert wrapper.poll() is None, output.read_text()[-4000:]
            assert time.monotonic() < deadline, output.read_text()[-4000:]
            time.sleep(0.2)
        first, second = reports
        assert first["gcs"] == second["gcs"] and first["gcs"].startswith("127.0.0.1:"), reports
        assert first["node_ip"] == "127.0.0.1" and first["fixed_size"] and second["fixed_size"], reports
        tree = psutil.Process(wrapper.pid).children(recursive=True)
        sockets = listening(tree)
        assert sockets and all(is_loopback(ip) for ip, _ in sockets), sockets
        wrapper.send_signal(signal.SIGTERM)
        assert wrapper.wait(timeout=120) == 128 + signal.SIGTERM, output.read_text()[-4000:]
        psutil.wait_procs(tree, timeout=30)
        assert alive(tree) == [], alive(tree)
    finally:
        if wrapper.poll() is None:
            wrapper.kill()


@pytest.mark.slow
@pytest.mark.parametrize("argv", [[], ["--num-cpus", "0", "--", "true"]])
def test_a_missing_command_or_a_bad_cpu_count_is_refused(argv):
    result = subprocess.run([sys.executable, "-m", "pipeline.distributed.shared_runtime", *argv], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2 and ("no command given" in result.stderr or "--num-cpus" in result.stderr)
