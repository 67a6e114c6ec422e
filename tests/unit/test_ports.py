"""Loopback ports for local servers: below the ephemeral range, and never handed out twice."""
from __future__ import annotations

import socket
import subprocess
import sys
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


def test_a_port_in_use_is_never_handed_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Ports handed out to earlier tests (of any process) are never given again: start afresh.
    monkeypatch.setattr(ports, "_handed_out", set())
    monkeypatch.setattr(ports, "_REGISTRY", tmp_path / "registry")
    low, _ = ports._below_ephemeral()
    with socket.socket() as s:
        s.bind(("127.0.0.1", low))
        s.listen()
        got = {ports.free_port_block(1, low=low, high=low + 3) for _ in range(2)}
    assert low not in got
    assert got <= {low + 1, low + 2}


# A process that takes one port of [low, low + 2) from the registry given, prints it, and
# holds it until its stdin closes.
_TAKER = """
import sys
from pathlib import Path
from federation.local import ports
ports._REGISTRY = Path(sys.argv[1])
print(ports.free_port_block(1, low=int(sys.argv[2]), high=int(sys.argv[2]) + 2), flush=True)
sys.stdin.read()
"""


def test_a_port_another_live_process_took_is_not_handed_out(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Two worker processes of one suite: a port the other one took (free now: its server is
    not up yet, or is down for a restart) is not given here until that process is gone."""
    monkeypatch.setattr(ports, "_handed_out", set())
    registry = tmp_path / "registry"
    monkeypatch.setattr(ports, "_REGISTRY", registry)
    low, _ = ports._below_ephemeral()
    taker = subprocess.Popen([sys.executable, "-c", _TAKER, str(registry), str(low)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert taker.stdout is not None
        theirs = int(taker.stdout.readline())
        ours = ports.free_port_block(1, low=low, high=low + 2)
        assert {theirs, ours} == {low, low + 1}
        with pytest.raises(RuntimeError, match="no block"):  # not theirs, though it is free
            ports.free_port_block(1, low=low, high=low + 2)
    finally:
        taker.communicate("")
    # Gone: its port is handed out again. Ours is still kept for this process, which the
    # registry says even where this process's own record is lost.
    monkeypatch.setattr(ports, "_handed_out", set())
    assert ports.free_port_block(1, low=low, high=low + 2) == theirs
