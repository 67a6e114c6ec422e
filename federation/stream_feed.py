"""Feed an async stream to blocking code on a pool thread, a few items ahead.

Storage and object-store SDK calls consume plain iterators (``ingest_blob``, multipart
uploads) and block, so they run on a pool thread, while the bytes they consume arrive on
the event loop (a gRPC stream). :func:`feed_blocking` joins the two through a bounded queue,
so a large blob never sits whole in memory, and it ends both sides when either fails:

* the consumer fails (a disk error, a refused upload): the stream is read no further and
  the consumer's error is raised at once. A producer that simply waited for room in the
  queue would wait forever, and the call with it, until its deadline;
* the stream fails (the peer went away): the consumer's iterator raises the same error,
  so it cleans up (a temporary file, a multipart upload) before the error is raised here.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable, Iterator
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_END = object()


class _Failed:
    """The stream's error, handed to the consumer in its place."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


async def feed_blocking(consume: Callable[[Iterator[T]], R], source: AsyncIterable[T],
                        executor: Executor | None = None, *, depth: int = 4) -> R:
    """``consume(items)`` on a thread of ``executor``, ``items`` being ``source``'s, at most
    ``depth`` of them waiting between the two; its result, or the first error of either."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=depth)

    def items() -> Iterator[T]:
        while (item := asyncio.run_coroutine_threadsafe(queue.get(), loop).result()) is not _END:
            if isinstance(item, _Failed):
                raise item.error
            yield item

    task = loop.run_in_executor(executor, lambda: consume(items()))

    async def hand(item: Any) -> bool:
        """Queue ``item``; False once the consumer has ended (it takes nothing more)."""
        if task.done():
            return False
        try:
            queue.put_nowait(item)
            return True
        except asyncio.QueueFull:
            pass
        put = asyncio.ensure_future(queue.put(item))
        try:
            await asyncio.wait((put, task), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not put.done():
                put.cancel()
        return put.done() and not put.cancelled()

    try:
        async for item in source:
            if not await hand(item):
                break
        else:
            await hand(_END)
    except BaseException as exc:
        # The consumer must not wait forever for the rest: it gets the error too, and ends.
        await asyncio.shield(hand(_Failed(exc)))
        await asyncio.wait((task,))
        if not task.cancelled():
            task.exception()  # its reaction to the error: retrieved, the stream's is raised
        raise
    return await task
