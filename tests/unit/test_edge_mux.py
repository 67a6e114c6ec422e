"""The link multiplexer without servers: call frames both ways, lanes, and a dead link."""
from __future__ import annotations

import asyncio

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

        async def reqs(*items: bytes):  # type: ignore[no-untyped-def]
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

        async def reqs():  # type: ignore[no-untyped-def]
            if False:
                yield b""

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
