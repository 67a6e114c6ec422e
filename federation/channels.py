"""gRPC channels to controllers, plain or mutual-TLS, with the options every hop shares."""
from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any, Protocol

import grpc

_ROTATION_CHECK_S = 5.0

CHUNK_SIZE = 1 << 20
# Room for one data chunk plus its envelope; larger messages are a bug, not a file.
MAX_MESSAGE = 8 * CHUNK_SIZE
# Puts one PutBatch may hold (the client sends up to 64): a call of 8 MiB of empty puts
# would otherwise start 100k tasks on the server.
MAX_PUT_BATCH = 1024
# A fixed HTTP/2 receive window per stream, so the memory a transfer holds is bounded.
# gRPC's default grows the window from its bandwidth-delay estimate, without a cap that
# matters here: a 1 GiB put through a forwarder grew the owner's RSS by 36 to 101 MiB and
# the forwarder's by 25 to 141 over 20 runs; with this window, 44 to 54 and 33 to 42 over 8
# runs, at the same loopback throughput. Across a WAN it caps one stream at window / RTT
# (160 MiB/s at 50 ms).
STREAM_WINDOW = 8 << 20

BASE_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", STREAM_WINDOW),
    # The largest HTTP/2 DATA frame a peer may send us. At the default 16 KiB a 1 MiB chunk
    # is 64 frames, each parsed, queued and written on its own. One frame per chunk cut a
    # forwarder's CPU per GiB relayed from 1.25-1.55 to 1.09-1.32 s in six interleaved 1 GiB
    # A/B runs; in bench.dataplane only reads moved (1.21 -> 1.13 s, puts unchanged; issue 14).
    ("grpc.http2.max_frame_size", CHUNK_SIZE + 1024),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]

SERVER_OPTIONS: list[tuple[str, int | str]] = [
    *BASE_OPTIONS,
    # gRPC sets SO_REUSEPORT on listeners by default: a second server on a port in use then
    # binds too, and the kernel splits new connections between the two (a stale controller
    # and its replacement, or two test workers' servers). Without it the second one fails.
    ("grpc.so_reuseport", 0),
]


class GenericHandlersOnly:
    """A server as the generated ``add_*Servicer_to_server`` functions see it: each service
    joins as generic handlers only, not also as registered methods.

    grpc.aio's server keeps one pending request per registered method, and for every call
    that arrives it waits on all of them again (``asyncio.wait`` over the ~30 methods of a
    controller): about a quarter of a controller's Python time under Resolve load (py-spy).
    Generic handlers share one pending request, and the method is found by a dict lookup
    per service. Measured with ``bench.dataplane`` (three alternated runs each, issue 14):
    201 -> 180 us of controller CPU per Resolve under h2load, 5,989 -> 6,901 calls/s.
    """

    def __init__(self, server: grpc.aio.Server) -> None:
        self.server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        pass  # generic handlers already serve these methods


def bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None = None) -> int:
    """Add a listening port to ``server`` (TLS when ``credentials`` are given) and return it.
    Raises ``Unavailable`` if the address cannot be bound: grpc raises ``RuntimeError`` on a
    failed bind, older releases return 0, and either is one clear error here."""
    from namespace.errors import Unavailable

    try:
        port = (server.add_insecure_port(address) if credentials is None
                else server.add_secure_port(address, credentials))
    except RuntimeError:
        port = 0
    if not port:
        raise Unavailable(f"cannot listen on {address} (address in use?)")
    return int(port)


def check_can_listen(address: str) -> None:
    """Raise ``Unavailable`` as :func:`bind` would if ``address`` is already being listened
    on, without taking it: for a command that must not spend something first (a join
    token) and only then find it cannot serve. Binding with ``SO_REUSEADDR``, as gRPC does,
    fails on Linux only where a socket listens."""
    from namespace.errors import Unavailable

    host, _, port = address.rpartition(":")
    try:
        family, kind, proto, _, where = socket.getaddrinfo(host.strip("[]") or None, int(port),
                                                           type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(where)
    except (OSError, ValueError) as exc:
        raise Unavailable(f"cannot listen on {address} ({getattr(exc, 'strerror', None) or exc})") from None


def _options(tls_dir: Path | None) -> list[tuple[str, int | str]]:
    opts = list(BASE_OPTIONS)
    if tls_dir is not None:
        from federation.tls_files import channel_options

        opts += channel_options(tls_dir)
    return opts


def aio_channel(endpoint: str, tls_dir: Path | None, identity: str) -> grpc.aio.Channel:
    """An asyncio channel (controllers forwarding to each other)."""
    if tls_dir is None:
        return grpc.aio.insecure_channel(endpoint, options=_options(None))
    from federation.tls_files import channel_credentials

    return grpc.aio.secure_channel(
        endpoint, channel_credentials(tls_dir, identity), options=_options(tls_dir)
    )


def sync_channel(endpoint: str, tls_dir: Path | None, identity: str = "client") -> grpc.Channel:
    """A blocking channel (the Python client and the CLI)."""
    if tls_dir is None:
        return grpc.insecure_channel(endpoint, options=_options(None))
    from federation.tls_files import channel_credentials

    return grpc.secure_channel(
        endpoint, channel_credentials(tls_dir, identity), options=_options(tls_dir)
    )


def tunnel_channel(tunnel: str, endpoint: str, tls_dir: Path | None, identity: str = "client") -> grpc.Channel:
    """A blocking channel to ``endpoint`` through the bulk tunnel at ``tunnel`` (a
    forwarder's CONNECT port, ``federation.controller.tunnel``). TLS, if any, runs end to
    end with ``endpoint``: the forwarder sees only ciphertext."""
    # gRPC's own CONNECT handshaker runs when this argument names a server. Unlike the public
    # ``grpc.http_proxy`` it ignores ``no_proxy``, which would silently skip the tunnel. Were
    # a release to drop it, the channel would speak HTTP/2 to the tunnel port, which answers
    # 400, and the client relays through the controller instead (``_opens``).
    opts = [*_options(tls_dir), ("grpc.http_connect_server", endpoint)]
    if tls_dir is None:
        return grpc.insecure_channel(tunnel, options=opts)
    from federation.tls_files import channel_credentials

    return grpc.secure_channel(tunnel, channel_credentials(tls_dir, identity), options=opts)


class Peers(Protocol):
    """Where a controller's forwarded calls go: a channel per endpoint (a pool, or a pool
    that also reaches edge sites down their links)."""

    def get(self, endpoint: str) -> grpc.aio.Channel: ...


class AioChannelPool:
    """One channel per endpoint, reused for every forwarded call."""

    def __init__(self, tls_dir: Path | None, identity: str) -> None:
        self.tls_dir = tls_dir
        self.identity = identity
        self._channels: dict[str, grpc.aio.Channel] = {}
        # Rotation (`gns certs rotate`): new calls dial with the renewed certificate.
        self._retired: list[grpc.aio.Channel] = []
        self._stamp = self._files_stamp()
        self._checked = time.monotonic()

    def get(self, endpoint: str) -> grpc.aio.Channel:
        if self.tls_dir is not None and time.monotonic() - self._checked > _ROTATION_CHECK_S:
            self._follow_rotation(self.tls_dir)
        ch = self._channels.get(endpoint)
        if ch is None:
            ch = self._channels[endpoint] = aio_channel(endpoint, self.tls_dir, self.identity)
        return ch

    def _files_stamp(self) -> tuple[int, ...]:
        if self.tls_dir is None:
            return ()
        from federation.tls_files import identity_stamp

        return identity_stamp(self.tls_dir, self.identity)

    def _follow_rotation(self, tls_dir: Path) -> None:
        self._checked = time.monotonic()
        stamp = self._files_stamp()
        if stamp == self._stamp:
            return
        from federation.tls import check_tls_dir
        from namespace.errors import InvalidInput

        try:
            check_tls_dir(tls_dir, self.identity)
        except InvalidInput:
            return  # mid-rotation (new key, old certificate): look again later
        self._stamp = stamp
        # Calls in flight finish on the old channels; they close with the pool.
        self._retired += self._channels.values()
        self._channels = {}

    async def close(self) -> None:
        for ch in [*self._channels.values(), *self._retired]:
            await ch.close()
        self._channels.clear()
        self._retired.clear()
