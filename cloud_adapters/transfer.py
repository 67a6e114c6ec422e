"""A bounded worker pool for parallel transfers (many small objects, or the parts of one).

The items iterable is consumed lazily and at most ``max_in_flight`` calls are submitted at
once, so feeding it a listing of millions of keys, or the parts of a 1 TiB file, keeps memory
bounded. The first error stops new submissions, cancels what has not started, waits for what
is running and propagates. It never materialises ``items`` and never spawns unbounded threads.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["TransferPool"]

T = TypeVar("T")
R = TypeVar("R")


class TransferPool:
    """``map_unordered(fn, items)`` over ``workers`` threads, ``max_in_flight`` queued at most.

    Threads suit object-store SDK calls: they block on sockets and release the GIL, and so
    does ``hashlib`` on large buffers.
    """

    def __init__(self, workers: int = 8, max_in_flight: int | None = None) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        self.max_in_flight = max_in_flight if max_in_flight is not None else 2 * workers
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """Yield ``fn(item)`` for each item, in completion order."""
        # Each finished future posts itself to one queue: taking the next result costs
        # O(1), where ``concurrent.futures.wait`` installs a waiter on every pending future
        # per call (with many small transfers in flight that was most of this thread's CPU).
        finished: queue.SimpleQueue[Future[R]] = queue.SimpleQueue()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="gns-transfer") as ex:
            pending: set[Future[R]] = set()

            def take() -> R:
                fut = finished.get()
                pending.discard(fut)
                return fut.result()

            try:
                for item in items:
                    while len(pending) >= self.max_in_flight:
                        yield take()
                    fut = ex.submit(fn, item)
                    pending.add(fut)
                    fut.add_done_callback(finished.put)
                while pending:
                    yield take()
            finally:
                for fut in pending:
                    fut.cancel()

    def run(self, fn: Callable[[T], object], items: Iterable[T]) -> int:
        """Apply ``fn`` to every item for its side effect; return how many ran."""
        n = 0
        for _ in self.map_unordered(fn, items):
            n += 1
        return n
