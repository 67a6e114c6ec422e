"""gRPC calls multiplexed over one edge link stream, in both directions.

Why it exists: an edge site only dials out, yet core controllers must reach it and it must
reach them. One ``EdgeLink.Link`` stream carries generic call frames (call id, full method
name, serialized messages, final status with trailing metadata), so any RPC crosses it
without per-method code:

- :class:`RelayHandler` is a catch-all gRPC handler: a real gRPC call arriving at it goes
  over the link as frames (the edge's "up" server; the hub's "down" server).
- :func:`replay` runs a call that arrived as frames against a real gRPC channel (the hub's
  own server or a core cluster; the edge's own server) and sends the answer back.

Both ends share :class:`LinkMux`. The edge numbers its calls odd, the hub even. Outgoing
frames wait in one bounded priority queue: link frames and live calls go before ``bulk``
calls (backlog shipping), so live traffic keeps a lane of its own while a backlog drains.
When the link dies every open call fails with UNAVAILABLE at once: nothing waits on a
dead link.

This module never talks to etcd and never decides anything from message text.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from federation.api._gen.gns.edge.v1 import edge_pb2 as epb
from federation.api.errors import kind_of, trailing_metadata
from namespace.errors import GnsError, Unavailable

log = logging.getLogger(__name__)

LANE_LINK, LANE_LIVE, LANE_BULK = 0, 1, 2
_QUEUE_FRAMES = 32
_CALL_BUFFER = 64 << 20
"""Bytes one call may hold received but not yet consumed before the link reader waits for
it. Below that, a slow consumer of one call (a core ingesting a backlog's blobs) never
stalls the frames of the others: heartbeats, live calls (no head-of-line blocking)."""
_SKIP_METADATA = {"user-agent", "content-type", "te", "grpc-accept-encoding", "grpc-timeout",
                  "grpc-encoding", "authority", ":authority"}
ON_BEHALF_OF = "gns-on-behalf-of"


def forwardable(metadata: Any) -> list[tuple[str, str]]:
    """Caller metadata worth carrying across the link (text keys, not transport ones)."""
    out = []
    for key, value in metadata or ():
        if key in _SKIP_METADATA or key.startswith(("grpc-", ":")) or key.endswith("-bin"):
            continue
        if isinstance(value, str):
            out.append((key, value))
    return out


_IDLE = epb.Frame()
"""``outgoing``'s marker for "every lane is empty"."""


class _Inbox:
    """A call's received messages, bounded in bytes (see ``_CALL_BUFFER``), not in count."""

    def __init__(self) -> None:
        self._q: asyncio.Queue[Any] = asyncio.Queue()
        self._bytes = 0
        self._room = asyncio.Event()
        self._room.set()

    async def put(self, item: Any) -> None:
        while self._bytes > _CALL_BUFFER:
            self._room.clear()
            await self._room.wait()
        if isinstance(item, bytes):
            self._bytes += len(item)
        self._q.put_nowait(item)

    def put_nowait(self, item: Any) -> None:
        """The end of a call: always accepted (it matters more than any limit)."""
        self._q.put_nowait(item)

    async def get(self) -> Any:
        item = await self._q.get()
        if isinstance(item, bytes):
            self._bytes -= len(item)
            if self._bytes <= _CALL_BUFFER:
                self._room.set()
        return item

    def clear(self) -> None:
        while not self._q.empty():
            self._q.get_nowait()
        self._bytes = 0
        self._room.set()


class LinkClosed(Unavailable):
    """The link died (or was closed) while a call used it."""


class OutCall:
    """The calling side of one relayed call."""

    def __init__(self, mux: LinkMux, call_id: int, lane: int) -> None:
        self.mux, self.id, self.lane = mux, call_id, lane
        self.inbox = _Inbox()  # bytes, then one CallEnd
        self.end: epb.CallEnd | None = None
        self.start = epb.CallStart()

    async def send(self, data: bytes) -> None:
        await self.mux.put(epb.Frame(call=self.id, data=data), self.lane)

    async def close_send(self) -> None:
        await self.mux.put(epb.Frame(call=self.id, end=epb.CallEnd()), self.lane)

    def cancel(self) -> None:
        if self.end is None and not self.mux.closed:
            self.mux.put_nowait(epb.Frame(call=self.id, cancel=True), LANE_LIVE)
        self.mux.calls.pop(self.id, None)
        self.inbox.clear()  # unblock a dispatcher waiting to hand us a frame

    async def responses(self) -> AsyncIterator[bytes]:
        while True:
            item = await self.inbox.get()
            if isinstance(item, epb.CallEnd):
                self.end = item
                self.mux.calls.pop(self.id, None)
                return
            yield item


class InCall:
    """The called side of one relayed call."""

    def __init__(self, mux: LinkMux, call_id: int, start: epb.CallStart) -> None:
        self.mux, self.id, self.start = mux, call_id, start
        self.lane = LANE_BULK if start.bulk else LANE_LIVE
        self.inbox = _Inbox()  # bytes, then None at the caller's end of sending
        self.cancelled = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def requests(self) -> AsyncIterator[bytes]:
        while True:
            item = await self.inbox.get()
            if item is None:
                return
            yield item

    async def send(self, data: bytes) -> None:
        await self.mux.put(epb.Frame(call=self.id, data=data), self.lane)

    async def finish(self, code: grpc.StatusCode, details: str, trailers: Any) -> None:
        end = epb.CallEnd(code=code.value[0], details=details or "",
                          trailers=[epb.KeyValue(key=k, value=v) for k, v in forwardable(trailers)])
        self.mux.incoming.pop(self.id, None)
        if not self.mux.closed:
            await self.mux.put(epb.Frame(call=self.id, end=end), self.lane)


Replayer = Callable[[InCall], Awaitable[None]]


class LinkMux:
    """Both directions of relayed calls over one link; owns the replay tasks it starts."""

    def __init__(self, *, odd: bool, replayer: Replayer, name: str = "") -> None:
        self.name = name
        self._ids = itertools.count(1 if odd else 2, 2)
        self.replayer = replayer
        self.calls: dict[int, OutCall] = {}
        self.incoming: dict[int, InCall] = {}
        # One queue per lane: link frames unbounded (few, small), live and bulk bounded
        # apart, so a live call never waits for room behind queued bulk frames.
        self._lanes: tuple[asyncio.Queue[epb.Frame | None], ...] = (
            asyncio.Queue(), asyncio.Queue(_QUEUE_FRAMES), asyncio.Queue(_QUEUE_FRAMES))
        self._ready = asyncio.Event()
        self.closed = False
        self.frames_in = 0
        self.frames_out = 0

    # -- sending --------------------------------------------------------------------------
    async def put(self, frame: epb.Frame, lane: int = LANE_LINK) -> None:
        if self.closed:
            raise LinkClosed(f"edge link {self.name} is down")
        await self._lanes[lane].put(frame)
        self._ready.set()

    def put_nowait(self, frame: epb.Frame, lane: int = LANE_LINK) -> None:
        try:
            self._lanes[lane].put_nowait(frame)
        except asyncio.QueueFull:
            pass  # a cancel that cannot be queued: the far side ends the call with the link
        self._ready.set()

    async def outgoing(self) -> AsyncIterator[epb.Frame]:
        """What the stream writer sends, link frames and live calls first."""
        while True:
            frame = next((q.get_nowait() for q in self._lanes if not q.empty()), _IDLE)
            if frame is _IDLE:
                self._ready.clear()
                await self._ready.wait()
                continue
            if frame is None:
                return
            self.frames_out += 1
            yield frame

    def open(self, method: str, metadata: list[tuple[str, str]], *, cluster: str = "",
             timeout: float | None = None, bulk: bool = False) -> OutCall:
        if self.closed:
            raise LinkClosed(f"edge link {self.name} is down")
        call = OutCall(self, next(self._ids), LANE_BULK if bulk else LANE_LIVE)
        self.calls[call.id] = call
        start = epb.CallStart(method=method, cluster=cluster, timeout_s=timeout or 0.0, bulk=bulk,
                              metadata=[epb.KeyValue(key=k, value=v) for k, v in metadata])
        call.start = start
        return call

    # -- receiving ------------------------------------------------------------------------
    async def feed(self, frame: epb.Frame) -> None:
        """Dispatch one call frame from the far side."""
        self.frames_in += 1
        kind = frame.WhichOneof("kind")
        out = self.calls.get(frame.call)
        if out is not None:
            if kind == "data":
                await out.inbox.put(frame.data)
            elif kind == "end":
                await out.inbox.put(frame.end)
            return
        if kind == "start":
            inc = InCall(self, frame.call, frame.start)
            self.incoming[frame.call] = inc
            inc.task = asyncio.create_task(self._run_incoming(inc), name=f"edge-call-{frame.call}")
            return
        inc2 = self.incoming.get(frame.call)
        if inc2 is None:
            return  # a late frame of a call that already ended
        if kind == "data":
            await inc2.inbox.put(frame.data)
        elif kind == "end":
            await inc2.inbox.put(None)
        elif kind == "cancel":
            inc2.cancelled.set()
            if inc2.task is not None:
                inc2.task.cancel()

    async def _run_incoming(self, inc: InCall) -> None:
        try:
            await self.replayer(inc)
        except asyncio.CancelledError:
            self.incoming.pop(inc.id, None)
        except Exception as exc:  # the replay itself broke: tell the caller, keep the link
            log.warning("link %s: relayed call %s failed: %s", self.name, inc.start.method, exc)
            try:
                await inc.finish(kind_of(exc).code, str(exc), trailing_metadata(exc))
            except LinkClosed:
                pass

    def close(self) -> None:
        """The link is gone: fail every open call now and stop the incoming ones."""
        if self.closed:
            return
        self.closed = True
        end = epb.CallEnd(code=grpc.StatusCode.UNAVAILABLE.value[0],
                          details=f"edge link {self.name} went down during the call",
                          trailers=[epb.KeyValue(key=k, value=v)
                                    for k, v in trailing_metadata(Unavailable("link down"))])
        for call in list(self.calls.values()):
            call.inbox.put_nowait(end)
        self.calls.clear()
        for inc in list(self.incoming.values()):
            if inc.task is not None:
                inc.task.cancel()
        self.incoming.clear()
        for q in self._lanes:
            while not q.empty():
                q.get_nowait()
        self._lanes[LANE_LINK].put_nowait(None)
        self._ready.set()

    async def wait_incoming(self) -> None:
        tasks = [i.task for i in self.incoming.values() if i.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def call_over(mux: LinkMux, method: str, requests: AsyncIterator[bytes], metadata: list[tuple[str, str]],
                    *, cluster: str = "", timeout: float | None = None, bulk: bool = False) -> AsyncIterator[bytes]:
    """Run one call over the link: yields response messages; raises on a non-OK end."""
    call = mux.open(method, metadata, cluster=cluster, timeout=timeout, bulk=bulk)
    await mux.put(epb.Frame(call=call.id, start=call.start), call.lane)

    async def pump() -> None:
        async for data in requests:
            await call.send(data)
        await call.close_send()

    pumper = asyncio.create_task(pump(), name=f"edge-pump-{call.id}")
    finished = False
    try:
        async for data in call.responses():
            yield data
        finished = True
    finally:
        if not pumper.done():
            pumper.cancel()
        try:
            await pumper
        except (asyncio.CancelledError, GnsError, Exception):
            pass
        if not finished:
            call.cancel()
    end = call.end
    if end is not None and end.code != 0:
        raise RelayedError(end)


class RelayedError(Exception):
    """A relayed call ended with a non-OK status (carried as is to the original caller)."""

    def __init__(self, end: epb.CallEnd) -> None:
        super().__init__(end.details)
        self.end = end

    @property
    def code(self) -> grpc.StatusCode:
        return _CODES.get(self.end.code, grpc.StatusCode.UNKNOWN)

    @property
    def trailers(self) -> tuple[tuple[str, str], ...]:
        return tuple((kv.key, kv.value) for kv in self.end.trailers)


_CODES = {c.value[0]: c for c in grpc.StatusCode}


Route = Callable[[str, dict[str, str]], tuple[LinkMux, str, bool]]
"""(method, caller metadata) -> (link, cluster to run it at, bulk); raises Unavailable."""


class RelayHandler(grpc.GenericRpcHandler):
    """Any method called on this server (or only those under ``prefix``: one service
    beside others the server runs itself) is relayed over the link ``route`` picks."""

    def __init__(self, route: Route, extra_metadata: Callable[[dict[str, str]], list[tuple[str, str]]] | None = None,
                 prefix: str = "") -> None:
        self.route = route
        self.extra_metadata = extra_metadata
        self.prefix = prefix

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if not str(method).startswith(self.prefix):
            return None

        async def relay(request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            md = forwardable(context.invocation_metadata())
            try:
                mux, cluster, bulk = self.route(method, dict(md))
                if self.extra_metadata is not None:
                    md += self.extra_metadata(dict(md))
                remaining = context.time_remaining()
                async for data in call_over(mux, method, request_iterator, md, cluster=cluster,
                                            timeout=remaining, bulk=bulk):
                    yield data
            except RelayedError as exc:
                await context.abort(exc.code, exc.end.details, trailing_metadata=exc.trailers)
            except GnsError as exc:
                await context.abort(kind_of(exc).code, str(exc), trailing_metadata=trailing_metadata(exc))

        return grpc.stream_stream_rpc_method_handler(relay, request_deserializer=None, response_serializer=None)


async def replay(inc: InCall, channel: grpc.aio.Channel, metadata: list[tuple[str, str]]) -> None:
    """Run ``inc`` as a real call on ``channel`` and send its answer back over the link."""
    start = inc.start
    mc = channel.stream_stream(start.method, request_serializer=None, response_deserializer=None)
    call = mc(inc.requests(), metadata=metadata, timeout=start.timeout_s or None)
    try:
        async for message in call:
            await inc.send(message)
        code = await call.code()
        await inc.finish(code, await call.details() or "", await call.trailing_metadata())
    except grpc.aio.AioRpcError as exc:
        await inc.finish(exc.code(), exc.details() or "", exc.trailing_metadata())
    except asyncio.CancelledError:
        call.cancel()
        raise
