"""What a :class:`~federation.client.Client` holds: settings, its loop thread, its etcd
connection and watch-fed namespace cache, and one gRPC channel per controller.

Everything here is created lazily and torn down by ``close()``; the other client modules
only borrow it.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc

from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.api.wire import read_raw
from federation.channels import sync_channel, tunnel_channel
from federation.loop_thread import LoopThread
from namespace.cache import Listener, NamespaceCache, NamespaceView, load_path_view
from namespace.control import ControlPlane
from namespace.errors import Unavailable
from namespace.etcd import Etcd, EtcdConfig

T = TypeVar("T")


class FederationStub(pb_grpc.FederationStub):
    """The generated stub, plus ``read_raw``: ``Read`` with its replies left as the bytes
    they came in, which the client takes the data out of itself (:mod:`federation.api.wire`)."""

    def __init__(self, channel: grpc.Channel) -> None:
        super().__init__(channel)  # type: ignore[no-untyped-call]  # generated, unannotated
        self.read_raw: grpc.UnaryStreamMultiCallable = read_raw(channel)


class Connection:
    """The state half of :class:`~federation.client.Client` (its base class)."""

    # Set by Client.__init__ (the constructor's signature stays on the class users call).
    etcd_config: EtcdConfig | None
    tls_dir: Path | None
    identity: str
    via: str | None
    tunnel: bool
    """Whether streams entering at ``via`` go through its bulk tunnel when it has one."""
    consistency: str
    max_staleness: float
    chunk_size: int
    _watch: bool
    _loop: LoopThread | None
    _etcd: Etcd | None
    _cache: NamespaceCache | None
    _channels: dict[str, grpc.Channel]
    # One stub per endpoint: building one makes a callable per method (~15), per request.
    _stubs: dict[str, FederationStub]
    _lock: threading.Lock
    # Tunnels that did not open, and until when they are not tried again.
    _tunnels_down: dict[str, float]

    # -- plumbing -------------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._ensure_loop().run(coro)

    def _ensure_loop(self) -> LoopThread:
        with self._lock:
            if self._loop is None:
                self._loop = LoopThread()
            return self._loop

    def _control(self) -> ControlPlane:
        if self._etcd is None:
            loop = self._ensure_loop()
            with self._lock:
                if self._etcd is None:
                    if self.etcd_config is None:  # a RemoteClient has its own _control
                        raise Unavailable("this client talks to a controller, not to etcd")
                    self._etcd = loop.run(Etcd.connect(self.etcd_config))
        return ControlPlane(self._etcd)

    def view(self) -> NamespaceView:
        """The cached namespace (watch-fed when ``watch``), loaded on first use."""
        control = self._control()
        if not self._watch:
            return self._run(control.view())
        if self._cache is None:
            loop = self._ensure_loop()  # outside the lock: it takes the lock itself
            with self._lock:
                if self._cache is None:
                    cache = NamespaceCache(control.etcd)
                    loop.run(cache.start())
                    self._cache = cache
        return self._cache.view

    def on_namespace_change(self, listener: Listener) -> None:
        """Call ``listener(kind, name, value)`` for every namespace key the watch applies
        from now on (``namespace.cache.Listener``; ``kind`` "mount": ``name`` is the mount
        path), on the client's loop thread: it must not block. A client without a watch
        has no stream to follow and never calls it."""
        self.view()  # starts the watch-fed cache
        if self._cache is not None:
            self._cache.subscribe(listener)

    def route_view(self, path: str) -> NamespaceView:
        """The view to route one request to ``path`` by. Without a watch (a one-shot command)
        only the keys on that path's way are read (a few gets, whatever the namespace's
        size); the whole view is read where routing may need more of it: ``via``,
        ``consistency="any"``, an unmounted path or a Down owner (replicas, error messages)."""
        if self._watch or self.via is not None or self.consistency == "any":
            return self.view()
        partial = self._run(load_path_view(self._control().etcd, path))
        res = partial.resolve(path)
        vol = partial.volumes.get(res.volume) if res is not None else None
        if vol is None or vol.owner not in partial.alive:
            return self.view()
        return partial

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()
        self._stubs.clear()
        if self._loop is not None:
            async def shutdown() -> None:
                if self._cache is not None:
                    await self._cache.stop()
                if self._etcd is not None:
                    await self._etcd.close()

            try:
                self._loop.run(shutdown(), timeout=10)
            except Exception:  # noqa: BLE001 - closing is best effort: the process may be busy or exiting
                pass
            finally:
                self._loop.close()
                self._loop = None
                self._etcd = self._cache = None

    def _channel(self, endpoint: str) -> grpc.Channel:
        with self._lock:
            ch = self._channels.get(endpoint)
            if ch is None:
                ch = self._channels[endpoint] = sync_channel(endpoint, self.tls_dir, self.identity)
        return ch

    def _tunnel_stub(self, tunnel: str, endpoint: str) -> FederationStub | None:
        """A stub for ``endpoint`` through the bulk tunnel at ``tunnel``, or None if that
        tunnel did not open lately (the caller then relays through the controller)."""
        key = f"{endpoint} through {tunnel}"
        stub = self._stubs.get(key)
        if stub is not None:
            return stub
        if time.monotonic() < self._tunnels_down.get(key, 0.0):
            return None
        channel = tunnel_channel(tunnel, endpoint, self.tls_dir, self.identity)
        if not _opens(channel, _TUNNEL_OPEN_S):
            channel.close()
            self._tunnels_down[key] = time.monotonic() + _TUNNEL_RETRY_S
            return None
        with self._lock:
            if key in self._channels:  # another thread opened it meanwhile
                channel.close()
            else:
                self._channels[key] = channel
            return self._stubs.setdefault(key, FederationStub(self._channels[key]))

    def _stub(self, endpoint: str) -> FederationStub:
        stub = self._stubs.get(endpoint)
        if stub is None:
            stub = FederationStub(self._channel(endpoint))
            with self._lock:
                stub = self._stubs.setdefault(endpoint, stub)
        return stub


_TUNNEL_OPEN_S = 2.0
_TUNNEL_RETRY_S = 30.0


def _opens(channel: grpc.Channel, timeout: float) -> bool:
    """Whether ``channel`` connects within ``timeout``. A refused tunnel shows at once (gRPC
    turns TRANSIENT_FAILURE), so falling back costs a round trip, not the whole timeout."""
    seen: list[grpc.ChannelConnectivity] = []
    settled = threading.Event()
    ends = (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE,
            grpc.ChannelConnectivity.SHUTDOWN)

    def note(state: grpc.ChannelConnectivity) -> None:
        if state in ends:
            seen.append(state)
            settled.set()

    channel.subscribe(note, try_to_connect=True)
    try:
        settled.wait(timeout)
    finally:
        channel.unsubscribe(note)
    return bool(seen) and seen[0] is grpc.ChannelConnectivity.READY
