"""A real Ray head on this machine, started the way docs/cluster.md tells users to.

Token authentication (Ray >= 2.59): `ray get-auth-token --generate` writes ~/.ray/auth_token, and
`RAY_AUTH_MODE=token` on `ray start` and on every client makes both sides use it (`ray start` creates
no token: with RAY_AUTH_MODE=token and none found it stops with an error).

Isolation from any other Ray on the machine: a private --temp-dir (a head writes its address to
<temp-dir>/ray_current_cluster, where a plain `ray.init()` elsewhere would find and join it), and
free ports for every server whose default port is fixed (GCS 6379, dashboard 8265, Ray Client
10001, dashboard agent 52365, the dashboard's and the autoscaler's metrics 44227 and 44217).
`ray stop` is never used: it stops every Ray process of the user on the machine. The head runs as
`ray start --block` in its own session; at the end the session is killed, then whatever of its process
tree is left, by pid, and the caller is told if anything survived.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil
from dvc_project import environment

from pipeline.distributed.runtime import PREEMPTION_WATCHER_SWITCH
from pipeline.ports import free_ports

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
SPLITS = ("source", "target_train", "target_val")
START_TIMEOUT_SECONDS = 180


@dataclass(frozen=True)
class Head:
    dashboard: str  # http://127.0.0.1:<port>, the job submission address
    dashboard_port: int
    gcs_port: int
    env: dict[str, str]  # what a client needs: HOME with the token, RAY_AUTH_MODE=token
    process: subprocess.Popen

    @property
    def driver_env(self) -> dict[str, str]:
        """The environment of a stage process that joins this head (as `ray job submit` makes it)."""
        return self.env | {"RAY_ADDRESS": f"127.0.0.1:{self.gcs_port}"}

    @property
    def token(self) -> str:
        return (Path(self.env["HOME"]) / ".ray" / "auth_token").read_text().strip()

    def state(self, resource: str, **equal: str) -> list[dict]:
        """Ray's state API over HTTP (what `ray list <resource> --filter key=value` asks, without the
        second of CPU each CLI process spends importing Ray): the entries whose fields equal `equal`."""
        query = "limit=10000" + "".join(f"&filter_keys={key}&filter_predicates=%3D&filter_values={value}"
                                        for key, value in equal.items())  # fmt: skip
        request = urllib.request.Request(f"{self.dashboard}/api/v0/{resource}?{query}",
                                         headers={"Authorization": f"Bearer {self.token}"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.load(response)
        assert body["result"], body["msg"]
        return body["data"]["result"]["result"]


def job_info(head: Head, submission_id: str) -> dict:
    """A submitted job as the job API describes it over HTTP: its `status`, and its Ray `job_id` once its
    driver has started (None before)."""
    request = urllib.request.Request(f"{head.dashboard}/api/jobs/{submission_id}",
                                     headers={"Authorization": f"Bearer {head.token}"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def job_status(head: Head, submission_id: str) -> str:
    """A submitted job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    return job_info(head, submission_id)["status"]


def ray_cli(head_env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *args], env=head_env, capture_output=True, text=True, timeout=timeout)


def http_status(url: str, token: str | None = None) -> int | None:
    """HTTP status of a GET, or None when nothing answers yet."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


def ray_tree(process: subprocess.Popen) -> list[psutil.Process]:
    try:
        root = psutil.Process(process.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    living = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                living.append(process)
        except psutil.NoSuchProcess:
            pass
    return living


def listening(processes: list[psutil.Process]) -> list[tuple[str, int]]:
    found = []
    for process in processes:
        try:
            connections = process.net_connections(kind="inet")
        except psutil.Error:  # exited meanwhile
            continue
        found += [(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN]
    return found


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1, the form gRPC's IPv6 sockets report
    return address.is_loopback


def stop_head(process: subprocess.Popen) -> list[psutil.Process]:
    """SIGKILL the head's whole session, then by pid whatever of its process tree left that session;
    returns the processes still alive afterwards (expected: none). A test head keeps nothing worth a
    graceful stop, which takes `ray start --block` 5 s or more after SIGTERM (measured)."""
    tree = ray_tree(process)
    # The head itself is reaped last, so its pid, which is also its session's process group id
    # (start_new_session), cannot be reused while the group is killed.
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    for leftover in alive(tree[1:]):
        with suppress(psutil.NoSuchProcess):
            leftover.kill()
    psutil.wait_procs(tree[1:], timeout=10)
    process.wait(timeout=30)
    return alive(tree)


@contextmanager
def running_head(folder: Path) -> Iterator[Head]:
    """A real `ray start --head` on 127.0.0.1 with token authentication, stopped (and checked gone) on exit.

    HOME points into `folder`, so the user's ~/.ray/auth_token is neither read nor overwritten.
    """
    home = folder / "home"
    home.mkdir()
    # PATH starts with this virtual environment's bin: the head's job entrypoints run `python` from
    # it (a job inherits the environment of the `ray start` that started its node).
    env = {key: value for key, value in environment().items()
           if not key.startswith(("RAY_AUTH_", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"))}  # fmt: skip
    env["HOME"] = str(home)
    env[PREEMPTION_WATCHER_SWITCH] = "0"  # one machine, like a local runtime: nothing drains its node
    generated = ray_cli(env, "get-auth-token", "--generate")
    assert generated.returncode == 0, generated.stderr[-2000:]
    token = (home / ".ray" / "auth_token").read_text().strip()
    assert token and generated.stdout.strip() == token
    env["RAY_AUTH_MODE"] = "token"

    # Short, private temp dir: Ray's Unix socket paths live under it (108-byte limit, so not tmp_path).
    temp_dir = tempfile.mkdtemp(prefix="ray-")
    gcs_port, dashboard_port, client_port, agent_port, *metrics_ports = free_ports(6)
    # The dashboard's and the autoscaler's Prometheus servers have fixed ports too (44227, 44217),
    # set through these variables only.
    env |= dict(
        zip(("DASHBOARD_METRIC_PORT", "AUTOSCALER_METRIC_PORT"), map(str, metrics_ports), strict=True)
    )
    command = [
        RAY, "start", "--head", "--block", "--disable-usage-stats",
        f"--temp-dir={temp_dir}", "--num-cpus=2", "--include-dashboard=true",
        f"--port={gcs_port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={client_port}", f"--dashboard-agent-listen-port={agent_port}",
    ]  # fmt: skip
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    # Every worker and actor of the head inherits this: Ray Train's PlacementGroupCleaner asks the state
    # API with no address, which Ray otherwise resolves through /tmp/ray/ray_current_cluster, not this
    # head's private --temp-dir; a stale file there made each lookup wait 40 s for a GCS that is gone,
    # and every Ray Train run on the head took 10 s longer to end (measured).
    head_env = env | {"RAY_API_SERVER_ADDRESS": dashboard}
    with open(folder / "head.log", "w") as log:
        process = subprocess.Popen(command, env=head_env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        # Up when the job API answers and the Ray Client server, the last to start, listens: a server
        # that cannot bind stops the whole head, which must fail here, not in the tests that use it.
        while not (http_status(f"{dashboard}/api/jobs/", token) == 200
                   and client_port in {port for _, port in listening(ray_tree(process))}):  # fmt: skip
            assert process.poll() is None, "ray start ended:\n" + (folder / "head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "head not up:\n" + (folder / "head.log").read_text()[-3000:]
            time.sleep(0.5)
        yield Head(dashboard, dashboard_port, gcs_port, env, process)
    finally:
        left = stop_head(process)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray processes still alive after the head stopped: {left}"


@dataclass(frozen=True)
class Node:
    """A second Ray node on this machine, joined to a head (`ray start --address`)."""

    process: subprocess.Popen
    node_id: str


@contextmanager
def second_node(head: Head, folder: Path, num_cpus: int = 1) -> Iterator[Node]:
    """`ray start --address=<head> --num-cpus=N --block` with the head's token, its own free ports; on exit
    its session is killed (if the test has not done so) and nothing of it may survive."""
    ports = free_ports(6)
    command = [
        RAY, "start", f"--address=127.0.0.1:{head.gcs_port}", "--block", "--disable-usage-stats",
        f"--num-cpus={num_cpus}", f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
        f"--dashboard-agent-listen-port={ports[2]}", f"--dashboard-agent-grpc-port={ports[3]}",
        f"--metrics-export-port={ports[4]}", f"--runtime-env-agent-port={ports[5]}",
    ]  # fmt: skip
    with open(folder / "node.log", "w") as log:
        process = subprocess.Popen(command, env=head.env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not (added := {node["node_id"] for node in head.state("nodes", state="ALIVE")
                             if not node["is_head_node"]}):  # fmt: skip
            log_tail = (folder / "node.log").read_text()[-3000:]
            assert process.poll() is None, "ray start ended:\n" + log_tail
            assert time.monotonic() < deadline, "no second node:\n" + log_tail
            time.sleep(0.5)
        yield Node(process, added.pop())
    finally:
        left = stop_head(process)  # the same kill: the node's session, then its leftovers by pid
        assert not left, f"Ray processes of the second node still alive: {left}"
