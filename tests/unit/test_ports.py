"""Loopback ports for local servers: below the ephemeral range, and never handed out twice."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from federation.local import ports


def test_ports_are_below_the_ephemeral_range_and_distinct() -> None:
    low, high = ports._below_ephemeral()
    got = [ports.free_port() for _ in range(200)]
    assert len(set(got)) == len(got)
    assert all(low <= p < high for p in got)
    first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(p < first_ephemeral for p in got)


def test_a_block_is_free_and_does_not_overlap_ports_handed_out() -> None:
    single = ports.free_port()
    base = ports.free_port_block(10)
    assert single not in range(base, base + 10)
    for p in range(base, base + 10):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", p))


def test_a_port_in_use_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ports handed out to earlier tests of this process are never given again: start afresh.
    monkeypatch.setattr(ports, "_handed_out", set())
    low, _ = ports._below_ephemeral()
    with socket.socket() as s:
        s.bind(("127.0.0.1", low))
        s.listen()
        got = {ports.free_port_block(1, low=low, high=low + 3) for _ in range(2)}
    assert low not in got
    assert got <= {low + 1, low + 2}
