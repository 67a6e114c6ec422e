"""Write streams as the bytes they arrived in, so a forwarder relays data untouched.

Why: a controller that is not the owner of a volume forwards ``Write`` to the owner. Parsing
every 1 MiB ``WriteChunk`` only to serialise it again costs a copy each way per hop; reads
already pass the owner's serialized chunks through (``read_relay``). Here the server's
deserializer for ``Write`` leaves a message that is exactly one ``data`` field as the bytes it
came in (the header, and anything unexpected, is parsed as usual, so access checks and the
handler see a real ``WriteChunk`` first). The owner then takes the payload as a memoryview
of those bytes (no copy), and a forwarder sends them on as they are.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api.wire import DATA_TAG, payload_at
from federation.controller.handler_io import settled
from namespace.errors import InvalidInput, Unavailable

WRITE_METHOD = "/gns.federation.v1.Federation/Write"
_END = bytes((DATA_TAG, 0))  # an empty data message: the end a header with ``ends`` promises
# Payload handed to the owner's I/O pool per call (one storage stage): a pool hop costs the
# loop and a worker ~0.2 ms, so one per 1 MiB message was ~0.2 CPU-s per GiB (issue 14).
_BATCH = 4 << 20


def deserialize(raw: bytes) -> bytes | pb.WriteChunk:
    """The server-side request deserializer of ``Write``."""
    if payload_at(raw) is not None:
        return raw
    chunk: pb.WriteChunk = pb.WriteChunk.FromString(raw)
    return chunk


def data_of(msg: bytes | pb.WriteChunk) -> bytes | memoryview:
    """The payload of a data message (raw or parsed); a second header is refused."""
    if isinstance(msg, bytes):
        at = payload_at(msg)
        if at is None:  # cannot happen for what deserialize() returns raw
            return data_of(pb.WriteChunk.FromString(msg))
        return memoryview(msg)[at:]
    if msg.WhichOneof("part") != "data":
        raise InvalidInput("write stream carried a second header")
    return msg.data


def serialized(msg: bytes | pb.WriteChunk) -> bytes:
    """The message on the wire: raw bytes as they came, parsed ones encoded."""
    return msg if isinstance(msg, bytes) else msg.SerializeToString()


async def header_first(stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``stream`` with its first message parsed (a raw first message is no header)."""
    first = True
    async for msg in stream:
        if first and isinstance(msg, bytes):
            msg = pb.WriteChunk.FromString(msg)
        first = False
        yield msg


def _is_end(msg: bytes | pb.WriteChunk) -> bool:
    if isinstance(msg, bytes):
        return msg == _END
    return msg.WhichOneof("part") == "data" and not msg.data


def until_end(messages: AsyncIterator[Any], promised: bool) -> AsyncIterator[Any]:
    """The data messages of a write whose header says whether it ``promised`` an end.

    Why: a grpc.aio handler sees a sender that was killed mid-stream (the client, or a
    forwarder) as a clean end of its request stream, most of the time before the call shows
    as cancelled; committing then would make a partial file visible. With the promise, the
    data closes with one empty data message: the end is consumed here, anything after it is
    refused, and a stream that stops before it raises ``Unavailable``, so nothing is
    committed. Without it (an older sender) the end of the stream is the end, as before."""
    return _until_end(messages) if promised else messages


async def _until_end(messages: AsyncIterator[Any]) -> AsyncIterator[Any]:
    ended = False
    async for msg in messages:
        if ended:
            raise InvalidInput("write stream carried data after its end")
        if _is_end(msg):
            ended = True
        else:
            yield msg
    if not ended:
        raise Unavailable("write stream stopped before its end (the sender went away); nothing committed")


async def store(
    messages: AsyncIterator[bytes | pb.WriteChunk],
    write: Callable[[bytes | memoryview], object],
    run: Callable[..., Awaitable[object]],
    received: Callable[[int], object],
) -> None:
    """Give every payload of ``messages`` to the blocking ``write``, in order, through
    ``run`` (the I/O pool): about ``_BATCH`` bytes per pool call, the next batch received
    while the previous one is written. No write is running when this returns or raises, so
    the caller may commit or abort the writer at once."""
    in_flight: asyncio.Future[object] | None = None
    batch: list[bytes | memoryview] = []
    size = 0
    try:
        async for msg in messages:
            data = data_of(msg)
            received(len(data))
            batch.append(data)
            size += len(data)
            if size >= _BATCH:
                if in_flight is not None:
                    # Shielded: the call being cancelled (its client went away) must not
                    # cancel the task of a write a pool thread is still doing, or the wait
                    # below sees it done and the writer is aborted under that thread.
                    await asyncio.shield(in_flight)
                in_flight = asyncio.ensure_future(run(_write_each, write, batch))
                batch, size = [], 0
        if in_flight is not None:
            await asyncio.shield(in_flight)
        if batch:
            in_flight = asyncio.ensure_future(run(_write_each, write, batch))
            await asyncio.shield(in_flight)
    finally:
        if in_flight is not None:
            await settled(in_flight)  # never abort a writer a pool thread still writes


DRAIN_BYTES = 256 << 20
DRAIN_SECONDS = 5.0


@contextlib.asynccontextmanager
async def drained_on_error(messages: AsyncIterator[Any]) -> AsyncIterator[None]:
    """Around a step of a write that may refuse it: on an error, :func:`drain` what is left
    of ``messages``, then raise it. (A stream that itself raised is finished: nothing to
    drain.)"""
    try:
        yield
    except Exception:
        await drain(messages)
        raise


async def drain(messages: AsyncIterator[Any], limit: int = DRAIN_BYTES, seconds: float = DRAIN_SECONDS) -> None:
    """Read and drop what is left of a refused write's stream, up to ``limit`` bytes or
    ``seconds``, before the handler answers. Why: a status sent while the sender is still
    sending was at times seen by a grpc.aio peer as INTERNAL "Internal error from Core",
    not as the status (a put through a forwarder onto a full disk, about 1 run in 4); an
    HTTP server reads the rest of a refused body before answering for the same reason.
    Past the bound it answers anyway: a huge refused upload is not read to its end."""
    taken = 0
    try:
        async with asyncio.timeout(seconds):
            async for msg in messages:
                taken += len(msg) if isinstance(msg, bytes) else msg.ByteSize()
                if taken >= limit:
                    return
    except Exception:  # noqa: BLE001 - a broken stream or the time bound: stop reading
        return


def _write_each(write: Callable[[bytes | memoryview], object], batch: list[bytes | memoryview]) -> None:
    for data in batch:
        write(data)
