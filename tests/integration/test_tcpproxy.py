"""The tests' loopback proxy: a stall is silence, and healing it closes what the stall held
while new connections flow (how the edge tests end a partition)."""
from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from federation.local.tcpproxy import TcpProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    p = TcpProxy(f"127.0.0.1:{server.server_address[1]}").start()
    try:
        yield p
    finally:
        p.stop()
        server.shutdown()
        server.server_close()


def _echoes(conn: socket.socket, data: bytes) -> bool:
    conn.sendall(data)
    try:
        return conn.recv(len(data)) == data
    except (TimeoutError, ConnectionError):
        return False


def test_heal_closes_what_the_stall_held_and_new_connections_flow(proxy: TcpProxy) -> None:
    host, port = proxy.endpoint.rsplit(":", 1)
    held = socket.create_connection((host, int(port)), timeout=5)
    assert _echoes(held, b"before")
    proxy.stall()
    held.settimeout(0.3)
    assert not _echoes(held, b"silence")  # a dead link: no reply, no reset
    proxy.heal()
    held.settimeout(5)
    try:
        assert held.recv(100) == b""  # closed by the heal (what it sent is never answered)
    except ConnectionResetError:
        pass
    fresh = socket.create_connection((host, int(port)), timeout=5)
    assert _echoes(fresh, b"after")
    held.close()
    fresh.close()
