"""Free loopback ports for servers started on this machine (tests, benchmarks, local runs).

Ports come from below the kernel's ephemeral range. A port the OS picked for ``bind(0)`` is
an ephemeral one, and between our closing it and the server binding it, any client
connection on the machine may take it as its local port: the controller then dies with
"Failed to bind" (seen in CI). No client connection takes a port below that range.

A port handed out is never handed out again while the process that took it lives, by this
process or by another one on the machine (a shared registry file): the suite runs in
several worker processes, and a port that is free now may be one a sibling picked a moment
ago or keeps for a controller it killed and will restart on the same port.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

_handed_out: set[int] = set()  # never give the same port twice (its server may not be up yet)
_lock = threading.Lock()
_REGISTRY = Path(tempfile.gettempdir()) / "gns-ports-handed-out"
"""Lines of ``port:pid``: ports live processes on this machine took from here."""


def _below_ephemeral() -> tuple[int, int]:
    """Ports under the kernel's ephemeral range. Why: a client socket (or its TIME_WAIT, for
    a minute after it closed) blocks a listener's bind even with SO_REUSEADDR, unless the
    client had set it too. After bench.mirror's tens of thousands of S3 requests, no block
    of 10 free ports was left in the ephemeral range."""
    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 0
    if first - 12000 < 10000:
        return 42000, 60000  # no room below it: try the old range
    return first - 12000, first


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the servers bind (SO_REUSEADDR): a port whose last server connections linger
        # in TIME_WAIT is free for a new listener.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def _machine_wide() -> Iterator[dict[int, int]]:
    """The ports live processes took (port -> pid), held under an exclusive lock and written
    back, with what the caller added, on exit. Empty, and not kept, where the registry
    cannot be opened (another user's file): this process's own record still holds."""
    try:
        fd = os.open(_REGISTRY, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield {}
        return
    with open(fd, "r+", encoding="ascii", errors="replace") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        taken: dict[int, int] = {}
        live: dict[int, bool] = {}
        for entry in f.read().split():
            port, _, pid = entry.partition(":")
            if port.isdigit() and pid.isdigit():
                if live.setdefault(int(pid), _alive(int(pid))):
                    taken[int(port)] = int(pid)
        yield taken
        f.seek(0)
        f.truncate()
        f.write("".join(f"{port}:{pid}\n" for port, pid in taken.items()))


def free_port_block(n: int, *, low: int | None = None, high: int | None = None) -> int:
    """First port of ``n`` consecutive ports that are free right now and were not handed out
    before to a process still alive (random start), below the ephemeral range unless
    ``low``/``high`` say otherwise."""
    default_low, default_high = _below_ephemeral()
    low, high = low or default_low, high or default_high
    rng = secrets.SystemRandom()
    with _lock, _machine_wide() as taken:
        for _ in range(200):
            base = rng.randrange(low, high - n + 1)
            block = range(base, base + n)
            if (_handed_out.isdisjoint(block) and not any(p in taken for p in block)
                    and all(_port_free(p) for p in block)):
                _handed_out.update(block)
                taken.update(dict.fromkeys(block, os.getpid()))
                return base
    raise RuntimeError(f"no block of {n} free loopback ports in [{low}, {high})")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now, below the ephemeral range."""
    return free_port_block(1)
