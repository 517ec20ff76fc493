"""Ports for the servers the project starts: from the range nothing takes by itself, distinct, free."""

from __future__ import annotations

import socket

import pipeline.ports as ports


def test_ports_are_distinct_free_and_outside_ray_worker_and_ephemeral_ranges():
    drawn = ports.free_ports(6)
    assert len(set(drawn)) == 6
    assert all(port in ports.quiet_ports() for port in drawn)
    assert ports.quiet_ports().start >= 20000 and ports.quiet_ports().stop <= 65536
    for port in drawn:
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))


def test_a_port_in_use_is_never_drawn(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        used = taken.getsockname()[1]
        monkeypatch.setattr(ports, "quiet_ports", lambda: range(used, used + 1))
        (port,) = ports.free_ports(1)  # the only candidate is taken: the kernel's choice instead
        assert port != used


def test_without_a_quiet_range_the_kernel_chooses(tmp_path, monkeypatch):
    kernel_range = tmp_path / "ip_local_port_range"
    kernel_range.write_text("1024\t60999\n")
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE", kernel_range)
    assert len(ports.quiet_ports()) == 0
    assert len(set(ports.free_ports(3))) == 3
