"""Connecting to Ray: a cluster when RAY_ADDRESS is set (`ray job submit`), else a local runtime."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import ray
from ray._common.network_utils import parse_address
from ray._private import ray_constants, services

from pipeline.errors import InputError
from pipeline.ports import free_port

log = logging.getLogger(__name__)

# Ray Train starts a PreemptionWatcher actor per run that polls Ray's node drain state, for clusters whose
# nodes can be preempted (spot instances). A local runtime is one machine that nothing drains, so its runs
# go without it (a process start: about 2 CPU-seconds per run here, 2026-12-01). Ray Train reads the
# variable from the driver when a run starts; a value the user set is kept, and a joined cluster keeps
# Ray's default.
PREEMPTION_WATCHER_SWITCH = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
# Set, with RAY_ADDRESS, to the address of a local runtime bound to 127.0.0.1 (`_single_node_addresses`)
# that a child process joins: the one `pipeline.distributed.shared_runtime` starts for a whole command
# (`make repro`), or a stage's own that `stages.adapt_all`'s cells join. Such a runtime is one machine that
# no node can join, so it is fixed-size; and a driver joining it must bind to loopback as well.
LOOPBACK_RUNTIME_VARIABLE = "PIPELINE_LOOPBACK_RAY_RUNTIME"
# How long a stage waits for something to listen at RAY_ADDRESS before it gives up (a head still starting
# gets this long). Ray's own variable for its GCS connection budget, when set, is used instead.
GCS_WAIT_VARIABLE = "RAY_gcs_server_port_wait_time_s"
GCS_WAIT_DEFAULT_S = 60.0


class RayAddressError(InputError, ConnectionError):
    """The Ray cluster address the stage was given is not host:port, or nothing listens there."""


@contextmanager
def _single_node_addresses() -> Iterator[None]:
    """While a local runtime starts, make Ray take 127.0.0.1 as this node's address.

    Ray 2.60 binds a node's servers to loopback only when the node's address is loopback; otherwise
    they listen on all interfaces or on the machine's address. In Python: the dashboard agent's gRPC
    server (`get_localhost_ip() if is_localhost(self.ip) else get_all_interfaces_ip()`,
    ray/dashboard/agent.py), its HTTP server (node address, plus 127.0.0.1;
    ray/dashboard/http_server_agent.py), the metrics exporters (reporter_agent.py, dashboard/head.py,
    autoscaler/_private/monitor.py), the runtime-env agent (binds the node address,
    _private/runtime_env/agent/main.py). In C++ (gcs_server, raylet, every worker's gRPC server):
    seen here on `::` with the machine's address and on 127.0.0.1 with a loopback node address.

    `ray.init(_node_ip_address="127.0.0.1")` cannot ask for that: ray.init passes it through
    `services.resolve_ip_for_localhost`, which replaces loopback with the machine's address. The
    switch Ray reads is `ray_constants.ENABLE_RAY_CLUSTER` (env RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER,
    read once at import): when false, `services.get_node_ip_address` returns loopback, as Ray does
    on macOS and Windows. A runtime started by `ray.init()` is a single node, so nothing is lost.
    The flag is restored afterwards: the node keeps its address, and the Ray processes receive it
    as an argument (--node-ip-address).
    """
    enabled = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = enabled


@contextmanager
def _state_api_address(url: str) -> Iterator[None]:
    """While a local runtime starts, point Ray's state API at its own dashboard.

    The processes the runtime starts (raylet, then every worker and actor) keep the environment of this
    moment. Ray Train V2's PlacementGroupCleaner actor queries the state API with no address, which Ray
    resolves from RAY_API_SERVER_ADDRESS, else RAY_ADDRESS, else by looking for Ray instances on the
    machine (ray/dashboard/utils.py, get_address_for_submission_client); with a second local runtime
    running (two stages at once, a test beside a `dvc repro`) that lookup raised ConnectionError
    "Found multiple active Ray instances" in the cleaner's thread, which then stopped freeing placement
    groups (seen here). The variable is removed again afterwards so that this process's own children
    (`ray job submit`, `ray start`) are not redirected.
    """
    previous = os.environ.get(ray_constants.RAY_API_SERVER_ADDRESS_ENVIRONMENT_VARIABLE)
    os.environ[ray_constants.RAY_API_SERVER_ADDRESS_ENVIRONMENT_VARIABLE] = url
    try:
        yield
    finally:
        if previous is None:
            del os.environ[ray_constants.RAY_API_SERVER_ADDRESS_ENVIRONMENT_VARIABLE]
        else:
            os.environ[ray_constants.RAY_API_SERVER_ADDRESS_ENVIRONMENT_VARIABLE] = previous


@contextmanager
def _sigterm_deferred() -> Iterator[None]:
    """Hold a SIGTERM that arrives while `ray.init` runs, then hand it to this process's own handler.

    `ray.init` replaces the caller's SIGTERM handler twice. First in Python, with one that raises
    SystemExit at once: a SIGTERM then lands anywhere inside `ray.init`, also half-way through connecting
    the driver, and the half-connected driver segfaulted at exit (seen here, exit -11). Then, creating
    the driver's core worker, in C++ with Abseil's failure-signal handler (it logs `*** SIGTERM received
    at time=… ***`): that handler calls the previous one and arms `alarm(3)` whose SIGALRM handler calls
    `abort()`, expecting the process gone within 3 s. A stage unwinding on SIGTERM (stopping Ray tasks,
    removing staging folders, shutting Ray down) takes longer on a loaded machine, and the driver died with
    SIGABRT half-way through its cleanup (exit -6, issue 14; reproduced with a 6 s cleanup).

    So while `ray.init` runs, Ray's Python installer is a no-op and SIGTERM only sets a flag (cancelling
    Abseil's alarm if its handler ran first); afterwards the caller's handler is installed again with
    `signal.signal`, which also takes SIGTERM away from Abseil's handler at the sigaction level, and a held
    SIGTERM is raised to it. Python sets handlers from the main thread only; elsewhere nothing changes.

    Cancelling the alarm from Python is not enough by itself: the flag is acted on only when the main
    thread next runs Python code, and the rest of `ray.init` can stay in C for more than 3 s on a loaded
    machine (a SIGTERM trial beside the DAG build died so, exit -6, 2026-12-01). Stage processes therefore
    get no Abseil handler at all (`stages/__init__.py`); this hold still serves other drivers. Waiting for
    a cluster address where nothing listens happens before the hold (`require_listening`), so a SIGTERM
    then stops the stage at once.
    """
    handler = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or handler is None:
        yield  # (None: a handler set from C, which Python could not re-install)
        return
    held: list[int] = []

    def hold(signum: int, frame: object) -> None:
        signal.alarm(0)  # Abseil's abort alarm, armed when its handler saw this signal first
        held.append(signum)

    install_ray_handler = ray._private.utils.set_sigterm_handler
    ray._private.utils.set_sigterm_handler = lambda ray_handler: None
    signal.signal(signal.SIGTERM, hold)
    try:
        yield
    finally:
        ray._private.utils.set_sigterm_handler = install_ray_handler
        signal.signal(signal.SIGTERM, handler)
        if held:
            signal.raise_signal(signal.SIGTERM)


def gcs_wait_seconds() -> float:
    """How long `require_listening` waits: Ray's GCS wait budget when the user set it, else the default."""
    try:
        return max(1.0, float(os.environ[GCS_WAIT_VARIABLE]))
    except (KeyError, ValueError):
        return GCS_WAIT_DEFAULT_S


def require_listening(address: str, within_s: float) -> None:
    """Raise RayAddressError, naming `address`, unless it is host:port and a TCP connection to the cluster
    address it stands for succeeds within `within_s` seconds (tried once a second).

    Without this, `ray.init` retries an address where nothing listens for about 13 minutes (20 attempts of
    about 40 s each in Ray 2.60), and a SIGTERM meanwhile is held until it gives up (`_sigterm_deferred`).
    Here a SIGTERM stops the stage at once. Addresses Ray resolves itself ("auto", "ray://…") are left to it.
    """
    if address in ("auto", "local") or "://" in address:
        return
    host, port = parse_address(address) or ("", "")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RayAddressError(f"RAY_ADDRESS={address}: not host:port (e.g. 127.0.0.1:6379)")
    # As ray.init resolves it: a loopback host becomes this node's address (loopback for a loopback runtime).
    target = services.canonicalize_bootstrap_address(address)
    host = parse_address(target)[0]
    deadline = time.monotonic() + within_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=5):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                reason = error.strerror or str(error)
                raise RayAddressError(
                    f"RAY_ADDRESS={address}: no Ray cluster is listening at {target} ({reason}; tried for "
                    f"{within_s:.0f} s); start the cluster, correct RAY_ADDRESS, or unset it to run on a "
                    f"local Ray runtime"
                ) from None
        time.sleep(1.0)


def joins_loopback_runtime() -> bool:
    """Whether this process's Ray address is that of a loopback-bound runtime (a fixed-size one on this
    machine; LOOPBACK_RUNTIME_VARIABLE)."""
    address = os.environ.get("RAY_ADDRESS")
    return bool(address) and address == os.environ.get(LOOPBACK_RUNTIME_VARIABLE)


def node_address() -> str:
    """The address of the Ray node this process runs on (127.0.0.1 for a runtime `init_ray` started)."""
    node_id = ray.get_runtime_context().get_node_id()
    return next(node["NodeManagerAddress"] for node in ray.nodes() if node["NodeID"] == node_id)


def joining_environment(gcs_address: str, node_ip: str) -> dict[str, str]:
    """The variables that make a child process join the runtime at `gcs_address`, whose node (the one the
    child runs on) has the address `node_ip`: a loopback node is marked so (LOOPBACK_RUNTIME_VARIABLE), since
    the GCS address alone cannot tell (a `ray start --head` reached at 127.0.0.1 may have the machine's)."""
    if node_ip == "127.0.0.1":
        return {"RAY_ADDRESS": gcs_address, LOOPBACK_RUNTIME_VARIABLE: gcs_address}
    return {"RAY_ADDRESS": gcs_address}


def init_ray(num_cpus: int | None = None, log_to_driver: bool = True) -> None:
    """Start or join Ray once per process; `log_to_driver` prints the workers' output here.

    With RAY_ADDRESS set (`ray job submit` sets it for the job's entrypoint) the stage joins that
    cluster, so the same stage runs locally and on a cluster. Otherwise it starts its own local
    runtime (`address="local"`: never a `ray start` instance it happens to find on the machine)
    that listens on 127.0.0.1 only (see `_single_node_addresses`; tests/test_network_binding.py
    checks every listening socket) and, when `num_cpus` is None, uses every core of the machine.

    The dashboard stays on (about 1.5 s of start-up): Ray's state API runs in it, and Ray Train V2's
    PlacementGroupCleaner needs that API to free the workers' placement group of a run whose controller
    ended with its Tune trial. Without it, every finished sweep trial kept its CPUs and the next trials
    waited forever (seen here).
    """
    if ray.is_initialized():
        return
    if address := os.environ.get("RAY_ADDRESS"):
        log.info("joining the Ray cluster at %s", address)
        # A loopback runtime listens on 127.0.0.1 only (`_single_node_addresses`), and so is its node's
        # address: Ray would otherwise connect to, and look for a node at, the machine's address (and hang).
        loopback = joins_loopback_runtime()
        with _single_node_addresses() if loopback else nullcontext():
            require_listening(address, gcs_wait_seconds())
            with _sigterm_deferred():
                ray.init(log_to_driver=log_to_driver)
    else:
        dashboard_port = free_port()
        log.info("starting a local Ray runtime")
        os.environ.setdefault(PREEMPTION_WATCHER_SWITCH, "0")
        with (_sigterm_deferred(), _single_node_addresses(),
              _state_api_address(f"http://127.0.0.1:{dashboard_port}")):  # fmt: skip
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                     dashboard_port=dashboard_port, log_to_driver=log_to_driver)  # fmt: skip
    log.info("Ray resources: %s", ray.cluster_resources())
