"""A free TCP port on loopback, for servers the project starts on this machine (Ray dashboard, MLflow)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on at the moment of the call (the OS picks it; another process could still
    take it before the caller binds, which is acceptable for local servers started right after)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
