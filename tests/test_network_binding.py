"""The local Ray runtime the stages start listens on loopback only (issue: "Ray dashboard and MLflow
server bound to 127.0.0.1 unless the user sets an address").

`init_ray` runs in a fresh subprocess, as a stage does, and fans out Ray tasks so task workers exist;
then every listening TCP socket of that process and of all its descendants (gcs_server, raylet, the
dashboard and its subprocesses, dashboard agent, runtime-env agent, log monitor, autoscaler monitor,
idle and task workers) must be on 127.0.0.1 or ::1.

Not covered here, because they are not Ray's servers:
- During a Ray Train run, torch.distributed's rendezvous store (the TCPStore that
  `init_process_group` creates on rank 0 at MASTER_ADDR:MASTER_PORT) listens on all interfaces: seen
  inside a 2-worker gloo TorchTrainer on this runtime, rank 0 listened on `::` at MASTER_PORT while
  MASTER_ADDR was 127.0.0.1 (gloo's own sockets were on 127.0.0.1), and torch 2.13's
  `TCPStore("127.0.0.1", 0, is_master=True)` alone listens on `::`. The env:// rendezvous that Ray
  Train's TorchConfig uses (torch/distributed/rendezvous.py, `_create_c10d_store`) gives the store no
  bind address (TCPStore only takes an already bound socket, `master_listen_fd`, which it does not
  pass). The store lives as long as the run's process group.
- The MLflow tracking store of the default params is a sqlite file (no server). An
  `mlflow server` is started by the user, with the host they pass (`--host 127.0.0.1`).

The cluster head started by `ray start --head --dashboard-host=127.0.0.1` (tests/test_cluster.py)
is meant to be reached from other machines: there only the dashboard is asserted to be on loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ray_head import is_loopback

ROOT = Path(__file__).resolve().parents[1]

# Runs in the subprocess: start the runtime as a stage does, give it task workers, then report every
# listening socket of the driver and its descendants, and the ports Ray says its servers use.
PROBE = r"""
import json, sys, time
import psutil, ray
import ray._private.worker
from pipeline.distributed.runtime import init_ray
from pipeline.distributed.tasks import run_tasks

init_ray()
assert run_tasks(abs, [-1, -2, -3], "probe") == [1, 2, 3]


@ray.remote
def nodes_seen_by_the_state_api():  # as Ray Train's PlacementGroupCleaner asks: with no address
    from ray.util.state import list_nodes
    return [node.node_id for node in list_nodes()]


seen = ray.get(nodes_seen_by_the_state_api.remote())
state = {"seen": seen, "own": ray.get_runtime_context().get_node_id()}
node = ray._private.worker._global_node
expected = {
    "gcs_server": int(node.address_info["gcs_address"].rsplit(":", 1)[1]),
    "raylet": node.node_manager_port,
    "dashboard": int(node.address_info["webui_url"].rsplit(":", 1)[1]),
    "dashboard agent http": node.dashboard_agent_listen_port,
    "dashboard agent grpc": node.metrics_agent_port,
    "metrics export": node.metrics_export_port,
    "runtime env agent": node.runtime_env_agent_port,
}
deadline = time.monotonic() + 20
while True:  # the agents report their ports before ray.init returns; the wait is a safety margin
    me = psutil.Process()
    listening = []
    for process in [me, *me.children(recursive=True)]:
        try:
            name = process.name()
            connections = process.net_connections(kind="inet")
        except psutil.Error:  # a worker that exited meanwhile
            continue
        listening += [{"pid": process.pid, "name": name, "ip": c.laddr.ip, "port": c.laddr.port}
                      for c in connections if c.status == psutil.CONN_LISTEN]
    ports = {entry["port"] for entry in listening}
    if {port for port in expected.values() if port and port > 0} <= ports or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print("PROBE " + json.dumps({"node_ip": node.node_ip_address, "expected": expected, "listening": listening,
                            "state": state}))
ray.shutdown()
"""


def test_is_loopback():
    assert all(map(is_loopback, ["127.0.0.1", "::1", "::ffff:127.0.0.1"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.0.2.2", "::ffff:192.0.2.2"]))


def probe_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a stage started outside any cluster."""
    ray_connection = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                      "RAY_AUTH_MODE")  # fmt: skip
    env = {key: value for key, value in os.environ.items() if key not in ray_connection}
    # ray.init writes a token to ~/.ray/auth_token when none exists: keep the user's home untouched.
    return env | {"HOME": str(tmp_path / "home"), "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_local_runtimes_listen_on_loopback_only_and_their_workers_find_their_own(tmp_path, ray_runtime):
    """Two local runtimes on one machine (two stages at once, as with two `dvc repro` on one machine; the
    other is the session's, started by the same `init_ray` in this process): the probed one listens on
    loopback only, and a worker's address-less state API call (Ray Train's PlacementGroupCleaner makes
    one) reaches its own runtime instead of failing with "Found multiple active Ray instances"."""
    env = probe_env(tmp_path)
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=180)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    line = next((line for line in result.stdout.splitlines() if line.startswith("PROBE ")), None)
    assert line, result.stdout[-2000:] + result.stderr[-2000:]
    probe = json.loads(line.removeprefix("PROBE "))
    assert probe["state"]["seen"] == [probe["state"]["own"]]

    listening = probe["listening"]
    # Not vacuous: every server Ray reports a port for is among the sockets found, and so are workers.
    # (A server whose fixed default port another Ray on the machine holds may not start: the dashboard
    # agent's HTTP server then reports -1, and the metrics servers of the dashboard and autoscaler,
    # on fixed ports 44227 and 44217, are absent. The core servers always start.)
    expected = {name: port for name, port in probe["expected"].items() if port and port > 0}
    assert {"gcs_server", "raylet", "dashboard", "runtime env agent"} <= expected.keys(), probe["expected"]
    found = {entry["port"] for entry in listening}
    missing = {name: port for name, port in expected.items() if port not in found}
    assert not missing, f"Ray servers not seen listening: {missing}; found {listening}"
    assert any(entry["name"] in ("gcs_server",) for entry in listening)
    assert any(entry["name"].startswith("ray::") for entry in listening), "no worker or agent process found"

    exposed = [entry for entry in listening if not is_loopback(entry["ip"])]
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert probe["node_ip"] == "127.0.0.1"  # the address Ray gives other processes to reach this node
