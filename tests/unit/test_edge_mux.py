"""The link multiplexer without servers: call frames both ways, lanes, and a dead link."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from federation.api._gen.gns.edge.v1 import edge_pb2 as epb
from federation.edge_mux import (
    LANE_BULK,
    LANE_LINK,
    LANE_LIVE,
    InCall,
    LinkMux,
    RelayedError,
    call_over,
)


def wire(a: LinkMux, b: LinkMux) -> list[asyncio.Task[None]]:
    async def pump(src: LinkMux, dst: LinkMux) -> None:
        async for frame in src.outgoing():
            await dst.feed(frame)

    return [asyncio.create_task(pump(a, b)), asyncio.create_task(pump(b, a))]


def test_calls_relay_both_ways_with_status() -> None:
    async def main() -> None:
        async def echo(inc: InCall) -> None:
            got = [m async for m in inc.requests()]
            if inc.start.method.endswith("Fail"):
                await inc.finish(grpc.StatusCode.NOT_FOUND, "nope", (("gns-error-kind", "not-found"),))
                return
            for m in got:
                await inc.send(m.upper())
            await inc.finish(grpc.StatusCode.OK, "", ())

        edge, hub = LinkMux(odd=True, replayer=echo), LinkMux(odd=False, replayer=echo)
        tasks = wire(edge, hub)

        async def reqs(*items: bytes) -> AsyncIterator[bytes]:
            for i in items:
                yield i

        assert [m async for m in call_over(edge, "/x/Echo", reqs(b"a", b"b"), [])] == [b"A", b"B"]
        assert [m async for m in call_over(hub, "/x/Echo", reqs(b"c"), [])] == [b"C"]
        try:
            [m async for m in call_over(edge, "/x/Fail", reqs(), [])]
            raise AssertionError("no error")
        except RelayedError as exc:
            assert exc.code == grpc.StatusCode.NOT_FOUND and ("gns-error-kind", "not-found") in exc.trailers
        edge.close()
        hub.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def test_live_frames_go_before_bulk_and_a_dead_link_fails_calls() -> None:
    async def main() -> None:
        async def never(inc: InCall) -> None:
            await asyncio.sleep(3600)

        mux = LinkMux(odd=True, replayer=never)
        await mux.put(epb.Frame(call=1, data=b"bulk"), LANE_BULK)
        await mux.put(epb.Frame(call=3, data=b"live"), LANE_LIVE)
        await mux.put(epb.Frame(heartbeat=epb.Heartbeat(seq=1)), LANE_LINK)
        out = mux.outgoing()
        kinds = [(await out.__anext__()) for _ in range(3)]
        assert [f.WhichOneof("kind") for f in kinds] == ["heartbeat", "data", "data"]
        assert kinds[1].data == b"live"

        async def reqs() -> AsyncIterator[bytes]:
            nothing: tuple[bytes, ...] = ()
            for item in nothing:  # an async generator that sends nothing
                yield item

        async def call() -> None:
            async for _ in call_over(mux, "/x/Y", reqs(), []):
                pass

        task = asyncio.create_task(call())
        await asyncio.sleep(0.01)
        mux.close()
        try:
            await asyncio.wait_for(task, 2)
            raise AssertionError("no error")
        except RelayedError as exc:
            assert exc.code == grpc.StatusCode.UNAVAILABLE

    asyncio.run(main())


def test_a_slow_bulk_call_stalls_neither_live_calls_nor_heartbeats() -> None:
    """Head-of-line: a bulk call whose consumer does not read must not hold up the link's
    reader (other calls' frames, heartbeats), and live frames never wait for room behind a
    full bulk queue."""

    async def main() -> None:
        release = asyncio.Event()

        async def replayer(inc: InCall) -> None:
            if inc.start.bulk:
                await release.wait()  # a core ingesting slowly: reads nothing for now
            got = [m async for m in inc.requests()]
            await inc.send(b"%d" % len(got))
            await inc.finish(grpc.StatusCode.OK, "", ())

        edge, hub = LinkMux(odd=True, replayer=replayer), LinkMux(odd=False, replayer=replayer)
        tasks = wire(edge, hub)

        async def many(n: int) -> AsyncIterator[bytes]:
            for _ in range(n):
                yield b"x" * 1024

        async def bulk() -> list[bytes]:
            return [m async for m in call_over(edge, "/x/Ship", many(500), [], bulk=True)]

        shipping = asyncio.create_task(bulk())
        await asyncio.sleep(0.05)  # 500 frames > any per-call count window of old
        live = await asyncio.wait_for(_collect(call_over(edge, "/x/Live", many(3), [])), 5)
        assert live == [b"3"] and not shipping.done()
        release.set()
        assert await asyncio.wait_for(shipping, 5) == [b"500"]

        # Live frames go out while the bulk lane is full and its writers wait for room.
        mux = LinkMux(odd=True, replayer=replayer)
        fillers = [asyncio.create_task(mux.put(epb.Frame(call=1, data=b"b"), LANE_BULK)) for _ in range(100)]
        await asyncio.sleep(0.01)
        await asyncio.wait_for(mux.put(epb.Frame(call=3, data=b"live"), LANE_LIVE), 1)
        first = await mux.outgoing().__anext__()
        assert first.data == b"live"
        mux.close()
        for t in fillers:
            t.cancel()
        for m in (edge, hub):
            m.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, *fillers, return_exceptions=True)

    asyncio.run(main())


async def _collect(it: AsyncIterator[bytes]) -> list[bytes]:
    return [m async for m in it]
