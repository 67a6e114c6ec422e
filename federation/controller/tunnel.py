"""The bulk tunnel: a forwarder passes a client's file streams to the owner in the kernel.

Why: relaying gRPC messages costs a forwarder about 0.9 CPU-s per GiB, and nine tenths of
that is gRPC's C core, its copies and two HTTP/2 connections' loopback TCP (issue 14's
profile), none of it ours to cut. So for ``Read`` and ``Write`` streams a client entering
through ``via`` asks the forwarder for a TCP tunnel to the owner instead: an HTTP CONNECT,
which gRPC's client speaks itself (``grpc.http_connect_server``), and then runs the call
end to end through it. The forwarder moves the bytes with ``splice(2)``: they never enter
user space here, and no gRPC runs on this hop.

What the forwarder still decides is where a tunnel may go: only to the endpoint of a Ready
core cluster in its own view (it is no open proxy; edge sites are reached over their links,
not by address). Who the caller is and what it may do is decided by the owner, on the
identity TLS proves end to end (SPEC §10: the controller that serves a request decides).
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import socket
import threading
from collections.abc import Callable

from federation.controller.metrics import ControllerMetrics
from namespace.cache import NamespaceView
from namespace.errors import InvalidInput, Unavailable

log = logging.getLogger(__name__)

MAX_HEAD = 8192
"""Bytes a CONNECT request may take before its blank line (gRPC sends ~100)."""
HANDSHAKE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
MAX_TUNNELS = 256
"""Open tunnels at once; each holds two threads for its lifetime (gRPC keeps one per channel)."""
_CHUNK = 1 << 20
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named only from Python 3.10 on some builds


def parse_connect(head: bytes) -> str:
    """The ``host:port`` a CONNECT request head asks for; InvalidInput if it is malformed."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or parts[0] != "CONNECT" or not parts[2].startswith("HTTP/1."):
        raise InvalidInput(f"not a CONNECT request: {line[:80]!r}")
    authority = parts[1]
    host, sep, port = authority.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"invalid CONNECT target {authority[:80]!r}: expected HOST:PORT")
    return authority


def core_cluster_at(view: NamespaceView, authority: str) -> str | None:
    """The Ready core cluster whose endpoint is ``authority`` (a tunnel may go there)."""
    for cid, spec in view.clusters.items():
        if spec.endpoint == authority and cid in view.alive and spec.provider != "edge":
            return cid
    return None


def _split(authority: str) -> tuple[str, int]:
    host, _, port = authority.rpartition(":")
    return host.strip("[]"), int(port)


class TunnelServer:
    """A listener for CONNECT tunnels to the endpoints ``destination`` approves.

    ``destination(authority)`` returns the cluster id whose endpoint ``authority`` is, if a
    tunnel may go there, else None. ``serve()`` is a root task of the controller's
    supervisor; ``stop()`` closes the listener and every open tunnel."""

    def __init__(self, address: str, destination: Callable[[str], str | None],
                 metrics: ControllerMetrics) -> None:
        self.address = address
        self.destination = destination
        self.metrics = metrics
        self._listener: socket.socket | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self._open: dict[int, _Tunnel] = {}
        self._lock = threading.Lock()

    def bind(self) -> int:
        """Listen on ``address``; the port (which may have been 0)."""
        host, port = _split(self.address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        lsn = socket.socket(family, socket.SOCK_STREAM)
        try:
            lsn.bind((host, port))
        except OSError as exc:
            lsn.close()
            raise Unavailable(f"cannot listen on {self.address} for tunnels ({exc.strerror})") from None
        lsn.listen(128)
        lsn.setblocking(False)
        self._listener = lsn
        return int(lsn.getsockname()[1])

    async def serve(self) -> None:
        assert self._listener is not None, "bind() first"
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self._listener)
            except OSError as exc:
                if self._listener.fileno() == -1:  # closed by stop()
                    return
                # Out of file descriptors, say: this root task ending would stop the whole
                # controller, so wait a moment for connections to close and accept again.
                log.warning("tunnel listener cannot accept (%s); retrying", exc.strerror or exc)
                await asyncio.sleep(0.5)
                continue
            task = asyncio.create_task(self._handshake(conn))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        for task in list(self._handshakes):
            task.cancel()
        await asyncio.gather(*self._handshakes, return_exceptions=True)
        with self._lock:
            tunnels = list(self._open.values())
        for t in tunnels:
            t.close()
        await asyncio.to_thread(_join_all, tunnels)

    async def _handshake(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        upstream: socket.socket | None = None
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                authority = parse_connect(await _read_head(loop, conn))
            cluster = self.destination(authority)
            if cluster is None:
                raise _Refused(403, f"{authority} is not the endpoint of a Ready core cluster", "not a cluster")
            with self._lock:
                if len(self._open) >= MAX_TUNNELS:
                    raise _Refused(503, f"{MAX_TUNNELS} tunnels open", "busy")
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    upstream = await _connect(loop, authority)
            except (OSError, TimeoutError) as exc:
                raise _Refused(502, f"cannot reach cluster {cluster}: {exc}", "unreachable") from None
            await loop.sock_sendall(conn, b"HTTP/1.1 200 Connection established\r\n\r\n")
        except InvalidInput as exc:
            await _reply(loop, conn, _Refused(400, str(exc), "malformed"), self.metrics)
            return
        except _Refused as refusal:
            await _reply(loop, conn, refusal, self.metrics)
            return
        except (OSError, TimeoutError):  # the client went away or never finished its request
            _close(conn, upstream)
            return
        except asyncio.CancelledError:  # the controller stops
            _close(conn, upstream)
            raise
        assert upstream is not None
        self._start(conn, upstream, cluster)

    def _start(self, client: socket.socket, owner: socket.socket, cluster: str) -> None:
        tunnel = _Tunnel(client, owner, self.metrics, cluster, self._forget)
        with self._lock:
            self._open[id(tunnel)] = tunnel
        self.metrics.tunnels_open.inc()
        tunnel.start()

    def _forget(self, tunnel: _Tunnel) -> None:
        with self._lock:
            self._open.pop(id(tunnel), None)
        self.metrics.tunnels_open.dec()


async def _read_head(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bytes:
    """The request head, up to its blank line. A client sends nothing else before our reply
    (its tunnel bytes wait for the 200), so more than the head is a malformed request."""
    head = b""
    while b"\r\n\r\n" not in head:
        if len(head) >= MAX_HEAD:
            raise InvalidInput(f"CONNECT request head over {MAX_HEAD} bytes")
        piece = await loop.sock_recv(conn, MAX_HEAD)
        if not piece:
            raise InvalidInput("connection closed before the CONNECT request ended")
        head += piece
    if not head.endswith(b"\r\n\r\n"):
        raise InvalidInput("bytes after the CONNECT request, before the tunnel was open")
    return head


async def _connect(loop: asyncio.AbstractEventLoop, authority: str) -> socket.socket:
    host, port = _split(authority)
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, addr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last


class _Refused(Exception):
    def __init__(self, status: int, reason: str, why: str) -> None:
        super().__init__(reason)
        self.status, self.reason, self.why = status, reason, why


_STATUS_TEXT = {400: b"Bad Request", 403: b"Forbidden", 502: b"Bad Gateway", 503: b"Service Unavailable"}


async def _reply(loop: asyncio.AbstractEventLoop, conn: socket.socket, refusal: _Refused,
                 metrics: ControllerMetrics) -> None:
    """Refuse with an HTTP status (gRPC shows it in the client's error) and close."""
    metrics.tunnels_refused.labels(refusal.why).inc()
    log.info("tunnel refused (%d): %s", refusal.status, refusal.reason)
    body = refusal.reason.encode("utf-8", "replace")[:512]
    head = b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (
        refusal.status, _STATUS_TEXT[refusal.status], len(body))
    with contextlib.suppress(OSError, TimeoutError):
        await loop.sock_sendall(conn, head + body)
        # Read what the client sent beyond what we parsed before closing: closing with
        # unread bytes makes the kernel reset the connection, and the client would see the
        # reset instead of this answer (an over-long head, for one).
        conn.shutdown(socket.SHUT_WR)
        async with asyncio.timeout(1.0):
            drained = 0
            while drained < (1 << 16) and (piece := await loop.sock_recv(conn, 4096)):
                drained += len(piece)
    conn.close()


def _join_all(tunnels: list[_Tunnel]) -> None:
    for t in tunnels:
        t.join(2.0)


def _close(*socks: socket.socket | None) -> None:
    for s in socks:
        if s is not None:
            s.close()


class _Tunnel:
    """One client connection spliced to one owner connection, a thread per direction."""

    def __init__(self, client: socket.socket, owner: socket.socket, metrics: ControllerMetrics,
                 cluster: str, done: Callable[[_Tunnel], None]) -> None:
        self.client, self.owner = client, owner
        self._done = done
        self._left = 2
        self._lock = threading.Lock()
        for s in (client, owner):
            s.setblocking(True)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # gRPC's pings and headers are small
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        out = metrics.tunnel_bytes.labels("to-owner", cluster)
        back = metrics.tunnel_bytes.labels("to-client", cluster)
        self._threads = [
            threading.Thread(target=self._pump, args=(client, owner, out.inc), name=f"tunnel-to-{cluster}", daemon=True),
            threading.Thread(target=self._pump, args=(owner, client, back.inc), name=f"tunnel-from-{cluster}", daemon=True),
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def join(self, timeout: float) -> None:
        for t in self._threads:
            t.join(timeout)

    def close(self) -> None:
        """End both directions now (a peer went away, or the controller stops)."""
        for s in (self.client, self.owner):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _pump(self, src: socket.socket, dst: socket.socket, count: Callable[[int], None]) -> None:
        try:
            _splice_all(src, dst, count)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)  # a half-close passes on; the other way may go on
        except OSError:
            self.close()  # a reset on one side ends the other: nothing half-relayed lingers
        finally:
            with self._lock:
                self._left -= 1
                last = self._left == 0
            if last:
                self.client.close()
                self.owner.close()
                self._done(self)


def _splice_all(src: socket.socket, dst: socket.socket, count: Callable[[int], None]) -> None:
    """Move ``src`` to ``dst`` until ``src`` ends, through a pipe (``splice`` needs one end
    to be a pipe); copy instead where the kernel cannot splice from this socket."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, _F_SETPIPE_SZ, _CHUNK)  # fewer calls; the default 64 KiB works too
        first = True
        while True:
            try:
                n = os.splice(src.fileno(), w, _CHUNK)
            except OSError as exc:
                if first and exc.errno == errno.EINVAL:
                    break
                raise
            first = False
            if n == 0:
                return
            count(n)
            while n:
                n -= os.splice(r, dst.fileno(), n)
    finally:
        os.close(r)
        os.close(w)
    _copy_all(src, dst, count)


def _copy_all(src: socket.socket, dst: socket.socket, count: Callable[[int], None]) -> None:
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    while n := src.recv_into(buf):
        count(n)
        dst.sendall(view[:n])
