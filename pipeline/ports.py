"""Free TCP ports on loopback, for servers the project starts on this machine (Ray, MLflow).

The ports come from a range nothing takes by itself: above Ray's worker ports (its workers bind
10002–19999 by default) and below the kernel's ephemeral range (`ip_local_port_range`, 32768–60999 by
default), where the local end of every outgoing connection and every server that binds port 0 lands.
A port asked of the kernel (port 0) is from that ephemeral range, so between the check and the bind
another process's connection could take it: a test head's Ray Client server once failed to bind so and
the whole head stopped (2026-12-01).
"""

from __future__ import annotations

import random
import socket
from contextlib import ExitStack
from pathlib import Path

RAY_WORKER_PORTS_END = 20000  # Ray's default max_worker_port is 19999
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
ATTEMPTS = 200


def quiet_ports() -> range:
    """Ports between Ray's worker ports and the kernel's ephemeral range (empty if they touch)."""
    try:
        ephemeral_start = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux: the IANA range 49152–65535
        ephemeral_start = 49152
    return range(RAY_WORKER_PORTS_END, max(RAY_WORKER_PORTS_END, ephemeral_start))


def free_ports(count: int) -> list[int]:
    """`count` distinct ports nothing listens on at the moment of the call (held open together so they
    differ), drawn at random from `quiet_ports()` so two callers at once rarely draw the same; the
    kernel's choice only if that range is too small."""
    draw = random.SystemRandom()  # not the `random` the training seeds: every process would draw alike
    candidates = quiet_ports()
    with ExitStack() as stack:
        found: list[int] = []
        for port in draw.sample(candidates, min(ATTEMPTS, len(candidates))):
            probe = stack.enter_context(socket.socket())
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            found.append(port)
            if len(found) == count:
                return found
        while len(found) < count:
            probe = stack.enter_context(socket.socket())
            probe.bind(("127.0.0.1", 0))
            found.append(probe.getsockname()[1])
        return found


def free_port() -> int:
    return free_ports(1)[0]
