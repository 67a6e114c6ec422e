"""Small pieces every gRPC handler of the controller shares.

:class:`IOPool` runs blocking disk and SDK work on the controller's one bounded thread pool
(the event loop itself never blocks); :func:`settled` waits for such work to end even when
the handler is cancelled meanwhile (a clean-up must not run under it); :func:`read_header`
takes the header message that opens every client stream (writes, blobs, replica commits).
"""
from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from namespace.errors import InvalidInput

T = TypeVar("T")


class IOPool:
    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool

    async def run(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, functools.partial(fn, *args, **kw))

    async def run_to_end(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """:meth:`run` for a clean-up that must happen (a temp file deleted, a blob's
        descriptor closed). A cancelled caller (its client went away) drops a :meth:`run`
        job still waiting in the queue, and on a busy controller it often is: this job
        runs all the same, and the cancellation is passed on once it has."""
        job = asyncio.wrap_future(self.pool.submit(functools.partial(fn, *args, **kw)))
        await settled(job)
        return job.result()


async def settled(job: asyncio.Future[Any]) -> None:
    """Wait until ``job`` is done, even through cancellations of this task (a call's client
    went away, often while this very wait runs), the last passed on after; ``job``'s own
    error is left to whoever reads its result."""
    cancelled = False
    while not job.done():
        try:
            await asyncio.wait([job])
        except asyncio.CancelledError:
            cancelled = True
    if not job.cancelled():
        job.exception()  # retrieved: an unread error is not logged at exit
    if cancelled:
        raise asyncio.CancelledError


async def read_header(stream: AsyncIterator[Any], what: str) -> tuple[Any, AsyncIterator[Any]]:
    """The ``header`` of a stream's first message, and the iterator over the rest."""
    it = stream.__aiter__()
    try:
        head = await it.__anext__()
    except StopAsyncIteration:
        raise InvalidInput(f"{what} stream carried no header") from None
    if head.WhichOneof("part") != "header":
        raise InvalidInput(f"{what} stream must start with a header")
    return head.header, it
