"""The bulk tunnel's parts: its request parsing, its splicing (real loopback sockets in this
process: what is under test is the kernel moving bytes, half-closes and resets), and the
controller flag that places it."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.controller.config import ControllerConfig
from federation.controller.metrics import ControllerMetrics
from federation.controller.tunnel import TunnelServer, parse_connect
from namespace.errors import InvalidInput
from namespace.etcd import EtcdConfig
from tests.support import wait_for


@pytest.mark.parametrize("head, target", [
    (b"CONNECT 127.0.0.1:7000 HTTP/1.1\r\nHost: 127.0.0.1:7000\r\n\r\n", "127.0.0.1:7000"),
    (b"CONNECT [::1]:7000 HTTP/1.0\r\n\r\n", "[::1]:7000"),
    (b"CONNECT ctl.example.org:443 HTTP/1.1\r\nUser-Agent: grpc-httpcli/0.0\r\n\r\n", "ctl.example.org:443"),
])
def test_a_connect_request_names_its_target(head: bytes, target: str) -> None:
    assert parse_connect(head) == target


@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\n\r\n",
    b"connect 127.0.0.1:7000 HTTP/1.1\r\n\r\n",
    b"CONNECT 127.0.0.1:7000\r\n\r\n",
    b"CONNECT 127.0.0.1:7000 SPDY/3\r\n\r\n",
    b"CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n",
    b"CONNECT :7000 HTTP/1.1\r\n\r\n",
    b"CONNECT 127.0.0.1:0 HTTP/1.1\r\n\r\n",
    b"CONNECT 127.0.0.1:65536 HTTP/1.1\r\n\r\n",
    b"CONNECT 127.0.0.1:-1 HTTP/1.1\r\n\r\n",
    b"CONNECT  127.0.0.1:7000 HTTP/1.1\r\n\r\n",
    b"",
])
def test_a_malformed_connect_request_is_refused(head: bytes) -> None:
    with pytest.raises(InvalidInput):
        parse_connect(head)


class Echo:
    """A loopback server that sends back what it gets, then half-closes when its peer does."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1 << 16):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)


@pytest.fixture
def echo() -> Iterator[Echo]:
    e = Echo()
    yield e
    e.sock.close()


class Running:
    """A TunnelServer on its own event loop thread, approving only ``allowed``."""

    def __init__(self, allowed: str) -> None:
        self.metrics = ControllerMetrics("unit")
        self.server = TunnelServer("127.0.0.1:0", lambda at: "owner" if at == allowed else None, self.metrics)
        self.port = self.server.bind()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.serving: asyncio.Task[None] | None = None
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(5)

    async def _serve(self) -> None:
        self.serving = asyncio.create_task(self.server.serve())

    def open(self, target: str) -> tuple[socket.socket, bytes]:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            piece = s.recv(1)
            if not piece:
                break
            head += piece
        return s, head

    def open_count(self) -> float:
        return self.metrics.registry.get_sample_value("gns_tunnels_open") or 0.0

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _stop(self) -> None:
        assert self.serving is not None
        self.serving.cancel()  # as the controller's supervisor does, before stop()
        await asyncio.gather(self.serving, return_exceptions=True)
        await self.server.stop()


def test_a_tunnel_carries_bytes_both_ways_and_passes_a_half_close_on(echo: Echo) -> None:
    tunnel = Running(echo.address)
    try:
        s, head = tunnel.open(echo.address)
        assert head.startswith(b"HTTP/1.1 200")
        payload = bytes(range(256)) * 40_000  # ~10 MiB: many splices each way

        def send() -> None:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        got = bytearray()
        while data := s.recv(1 << 20):
            got += data
        sender.join()
        assert bytes(got) == payload  # all of it, in order, and the echo's end came back
        s.close()
        sent = tunnel.metrics.registry.get_sample_value(
            "gns_tunnel_bytes_total", {"direction": "to-owner", "to": "owner"})
        assert sent == len(payload)
        wait_for(lambda: tunnel.open_count() == 0, 5, "the tunnel to close")
    finally:
        tunnel.stop()


def test_a_tunnel_elsewhere_is_refused_without_connecting(echo: Echo) -> None:
    tunnel = Running("127.0.0.1:1")  # the echo server is not an approved destination
    try:
        s, head = tunnel.open(echo.address)
        assert head.startswith(b"HTTP/1.1 403")
        assert s.recv(4096).startswith(b"127.0.0.1:")  # the reason, then the close
        s.close()
        assert echo.accepted == 0
        assert tunnel.metrics.registry.get_sample_value(
            "gns_tunnels_refused_total", {"reason": "not a cluster"}) == 1
    finally:
        tunnel.stop()


def test_an_unreachable_destination_is_a_bad_gateway() -> None:
    free = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{free.getsockname()[1]}"
    free.close()  # nothing listens there now
    tunnel = Running(address)
    try:
        s, head = tunnel.open(address)
        assert head.startswith(b"HTTP/1.1 502")
        s.close()
    finally:
        tunnel.stop()


def test_stopping_closes_open_tunnels(echo: Echo) -> None:
    tunnel = Running(echo.address)
    s, head = tunnel.open(echo.address)
    assert head.startswith(b"HTTP/1.1 200")
    s.sendall(b"ping")
    assert s.recv(4) == b"ping"
    assert tunnel.open_count() == 1
    tunnel.stop()
    assert s.recv(4) == b""  # the controller going away ends the tunnel, not leaves it hanging
    s.close()
    assert tunnel.open_count() == 0


def _config(tmp_path: Path, **kw: object) -> ControllerConfig:
    return ControllerConfig(cluster="a", listen="127.0.0.1:7000", data_dir=tmp_path,
                            etcd=EtcdConfig.parse("http://127.0.0.1:2379"), **kw)  # type: ignore[arg-type]


def test_where_the_tunnel_listens_and_what_it_advertises(tmp_path: Path) -> None:
    auto = _config(tmp_path)
    assert auto.tunnel_listen == "127.0.0.1:0" and auto.tunnel_endpoint(5555) == "127.0.0.1:5555"
    assert _config(tmp_path, tunnel="off").tunnel_listen is None
    fixed = _config(tmp_path, tunnel="127.0.0.1:7001")
    assert fixed.tunnel_listen == "127.0.0.1:7001" and fixed.tunnel_endpoint(7001) == "127.0.0.1:7001"
    wide = _config(tmp_path, tunnel="0.0.0.0:7001", insecure=True, advertise="ctl.example.org:7000")
    assert wide.tunnel_endpoint(7001) == "ctl.example.org:7001"  # a wildcard is not dialable
    for bad in ("nonsense", "127.0.0.1:", ":7001", "127.0.0.1:70000", "host:port"):
        with pytest.raises(InvalidInput, match="--tunnel"):
            _config(tmp_path, tunnel=bad)
    with pytest.raises(InvalidInput, match="without TLS"):
        _config(tmp_path, tunnel="10.0.0.1:7001")


OUT_OF_FDS = textwrap.dedent("""
    import asyncio, logging, resource, socket, sys
    from federation.controller.metrics import ControllerMetrics
    from federation.controller.tunnel import TunnelServer

    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")

    async def main():
        server = TunnelServer("127.0.0.1:0", lambda at: None, ControllerMetrics("unit"))
        port = server.bind()
        serving = asyncio.create_task(server.serve())
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        held = []
        # connect until this process runs out of descriptors: the listener's accept fails too
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        try:
            while True:
                s = socket.socket()
                s.setblocking(False)
                held.append(s)
                try:
                    s.connect(("127.0.0.1", port))
                except BlockingIOError:
                    pass
        except OSError:
            pass
        await asyncio.sleep(1.0)  # the accept loop meets EMFILE meanwhile
        for s in held:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        print("serving", not serving.done(), flush=True)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"CONNECT 127.0.0.1:1 HTTP/1.1\\r\\n\\r\\n")
        print((await asyncio.wait_for(reader.readline(), 10)).decode().strip(), flush=True)
        writer.close()
        serving.cancel()
        await server.stop()

    asyncio.run(main())
""")


def test_running_out_of_descriptors_does_not_end_the_listener() -> None:
    """A root task that ended would stop the whole controller: an accept that fails (EMFILE)
    is logged and retried, and the listener answers again once descriptors are free."""
    out = subprocess.run([sys.executable, "-c", OUT_OF_FDS], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert any("tunnel listener cannot accept" in ln for ln in lines), lines
    assert "serving True" in lines and "HTTP/1.1 403 Forbidden" in lines, lines


def test_a_client_takes_a_tunnel_that_opens_and_relays_when_one_does_not() -> None:
    """The client half (``Connection._tunnel_stub``) against a real gRPC server behind a
    real tunnel: a tunnel that answers 200 gives a stub whose calls reach that server; one
    that refuses (403) gives None at once, so the caller relays, and is not asked again
    for a while."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
    from federation.client import Client

    server = grpc.server(ThreadPoolExecutor(2))  # no services: every call is UNIMPLEMENTED
    owner = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    approving, refusing = Running(owner), Running("127.0.0.1:1")
    client = Client("http://127.0.0.1:1", watch=False)  # never dials etcd here
    try:
        stub = client._tunnel_stub(f"127.0.0.1:{approving.port}", owner)
        assert stub is not None
        with pytest.raises(grpc.RpcError) as reached:
            stub.Health(pb.HealthRequest(), timeout=10)
        assert reached.value.code() == grpc.StatusCode.UNIMPLEMENTED  # the owner answered
        assert client._tunnel_stub(f"127.0.0.1:{approving.port}", owner) is stub  # kept
        assert approving.open_count() == 1

        refused_at = f"127.0.0.1:{refusing.port}"
        assert client._tunnel_stub(refused_at, owner) is None
        assert (refusing.metrics.registry.get_sample_value(
            "gns_tunnels_refused_total", {"reason": "not a cluster"}) or 0) >= 1
        # not asked again for a while: the next streams relay at once
        assert f"{owner} through {refused_at}" in client._tunnels_down
        assert client._tunnel_stub(refused_at, owner) is None
    finally:
        client.close()
        approving.stop()
        refusing.stop()
        server.stop(None)
