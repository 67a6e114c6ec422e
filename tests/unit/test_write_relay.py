"""Write data messages stay the bytes they came in; everything else is parsed (issue 14)."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

import pytest

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.controller import write_relay
from namespace.errors import InvalidInput, Unavailable


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 1 << 20, (1 << 20) + 7])
def test_data_messages_stay_raw_and_yield_their_payload(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    raw = pb.WriteChunk(data=payload).SerializeToString()
    got = write_relay.deserialize(raw)
    assert got is raw  # (an empty oneof bytes field still encodes its tag: raw too)
    assert bytes(write_relay.data_of(got)) == payload
    assert write_relay.serialized(got) is raw


def test_headers_and_unexpected_shapes_are_parsed() -> None:
    head = pb.WriteChunk(header=pb.WriteHeader(target=pb.Target(global_path="/a/b")))
    got = write_relay.deserialize(head.SerializeToString())
    assert isinstance(got, pb.WriteChunk) and got.header.target.global_path == "/a/b"
    with pytest.raises(InvalidInput):
        write_relay.data_of(got)
    # a data field followed by more bytes (e.g. an unknown field) is not a plain data message
    odd = pb.WriteChunk(data=b"xyz").SerializeToString() + b"\x18\x01"
    parsed = write_relay.deserialize(odd)
    assert isinstance(parsed, pb.WriteChunk) and parsed.data == b"xyz"
    assert write_relay.serialized(parsed) == pb.WriteChunk.FromString(odd).SerializeToString()


def _raw(data: bytes) -> bytes:
    raw: bytes = pb.WriteChunk(data=data).SerializeToString()
    return raw


async def _messages(chunks: list[bytes]) -> AsyncIterator[bytes | pb.WriteChunk]:
    for c in chunks:
        yield write_relay.deserialize(_raw(c))


def test_store_writes_every_payload_in_order_in_few_pool_calls() -> None:
    chunks = [bytes([i]) * (1 << 20) for i in range(9)] + [b"tail"]
    written: list[bytes] = []
    calls = 0
    received: list[int] = []

    async def run(fn: Callable[..., object], *args: object) -> object:
        nonlocal calls
        calls += 1
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    asyncio.run(write_relay.store(_messages(chunks), lambda d: written.append(bytes(d)), run,
                                  received.append))
    assert written == chunks
    assert received == [len(c) for c in chunks]
    assert calls == 3  # 4 MiB, 4 MiB, then the rest


def test_store_leaves_no_write_running_when_the_stream_fails() -> None:
    release = threading.Event()
    running = threading.Event()
    finished: list[int] = []

    def slow_write(data: bytes | memoryview) -> None:
        running.set()
        release.wait(5)
        finished.append(len(data))

    async def failing() -> AsyncIterator[bytes | pb.WriteChunk]:
        for _ in range(4):
            yield write_relay.deserialize(_raw(bytes(1 << 20)))
        await asyncio.to_thread(running.wait, 5)  # the first batch is being written now
        asyncio.get_running_loop().call_later(0.05, release.set)
        raise InvalidInput("client went away")

    async def run(fn: Callable[..., object], *args: object) -> object:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    with pytest.raises(InvalidInput):
        asyncio.run(write_relay.store(failing(), slow_write, run, lambda n: None))
    assert finished == [1 << 20] * 4  # the batch in flight finished before store() raised


async def _collect(stream: AsyncIterator[bytes | pb.WriteChunk]) -> list[bytes]:
    return [bytes(write_relay.data_of(m)) async for m in stream]


@pytest.mark.parametrize("parsed", [False, True])
def test_a_promised_end_is_consumed_and_the_data_before_it_passes(parsed: bool) -> None:
    async def stream() -> AsyncIterator[bytes | pb.WriteChunk]:
        for c in (b"a", b"bc", b""):
            raw = _raw(c)
            yield pb.WriteChunk.FromString(raw) if parsed else write_relay.deserialize(raw)

    assert asyncio.run(_collect(write_relay.until_end(stream(), promised=True))) == [b"a", b"bc"]


def test_a_stream_that_stops_before_its_promised_end_is_a_cut_one() -> None:
    # What a grpc.aio handler sees when the sender is killed mid-stream: a clean end.
    with pytest.raises(Unavailable, match="stopped before its end"):
        asyncio.run(_collect(write_relay.until_end(_messages([b"a", b"b"]), promised=True)))
    with pytest.raises(Unavailable):  # the header alone came
        asyncio.run(_collect(write_relay.until_end(_messages([]), promised=True)))


def test_data_after_the_end_is_refused() -> None:
    with pytest.raises(InvalidInput, match="after its end"):
        asyncio.run(_collect(write_relay.until_end(_messages([b"a", b"", b"b"]), promised=True)))


def test_without_the_promise_the_stream_end_is_the_end() -> None:
    # an older sender: every message is data, empty ones included
    got = asyncio.run(_collect(write_relay.until_end(_messages([b"a", b"", b"b"]), promised=False)))
    assert got == [b"a", b"", b"b"]


def test_a_refused_writes_rest_is_drained_within_its_bounds() -> None:
    """A refused write reads what the sender still sends before answering (the status then
    reaches it as itself), but never past its byte or time bound, and a broken stream ends it."""
    taken: list[int] = []

    async def stream(n: int, *, stall: bool = False, broken: bool = False) -> AsyncIterator[bytes]:
        for i in range(n):
            taken.append(i)
            yield b"x" * 1000
        if broken:
            raise Unavailable("cut")
        if stall:
            await asyncio.sleep(3600)

    asyncio.run(write_relay.drain(stream(50)))
    assert len(taken) == 50  # all of it
    taken.clear()
    asyncio.run(write_relay.drain(stream(50), limit=10_000))
    assert len(taken) == 10  # stops at the byte bound
    taken.clear()
    asyncio.run(write_relay.drain(stream(5, stall=True), seconds=0.05))  # a sender that stalls
    assert len(taken) == 5
    taken.clear()
    asyncio.run(write_relay.drain(stream(5, broken=True)))  # swallowed: nothing left to read
    assert len(taken) == 5


def test_a_step_that_refuses_the_write_drains_the_rest_and_raises_its_error() -> None:
    read: list[int] = []

    async def stream() -> AsyncIterator[bytes]:
        for i in range(4):
            read.append(i)
            yield b"x"

    async def step(fail: bool) -> None:
        messages = stream()
        async with write_relay.drained_on_error(messages):
            if fail:
                raise OSError(28, "No space left on device")

    asyncio.run(step(False))
    assert read == []  # nothing read when the step succeeds
    with pytest.raises(OSError, match="No space"):
        asyncio.run(step(True))
    assert read == [0, 1, 2, 3]
