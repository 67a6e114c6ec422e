"""Group commit: puts that arrive together share one catalog transaction (one WAL fsync).

Why: every put must be durable before it is acknowledged, and the catalog's commit (an
fsync of SQLite's WAL) is the one step writers take in turn. With eight writers each
paying its own fsync under the volume lock, the lock is held mostly waiting on the disk;
one fsync for all the puts waiting at that moment gives the same guarantee for each.

How: leader/follower. A caller queues its work and waits; whoever finds no batch running
becomes the leader, takes everything queued (up to ``max_batch``) and hands it to
``run_batch``, which applies each item in its own savepoint inside ONE transaction, so an
item that fails (a conflict, a shape error) fails alone, and commits once. Every caller
returns only after that commit: nothing is acknowledged before it is durable, and a crash
mid-batch loses the whole uncommitted batch, of which nobody was told anything. Each item
still gets its own version (+1 per put), in queue order.

An event loop can queue without a thread of its own (``submit_async``): its request joins
the same queue and resolves an asyncio future once its batch committed. A drain scheduled on
the caller's executor leads batches while such requests wait, so a batch costs one thread
wake-up and one loop wake-up however many requests it holds, where a blocking ``submit`` per
request costs a pool hop each way and a condition wake-up per waiter (issue 14).

A drain may also wait a little before it takes a batch (``linger``), as PostgreSQL's
``commit_delay`` does when ``commit_siblings`` transactions are active: only when the
previous batch held several requests, so puts are arriving concurrently, and only until as
many are queued again. A batch's fixed cost (BEGIN, the version row, the gc checks, COMMIT)
is then shared by more puts, and the CPU it frees serves more of them; a lone writer's
batches hold one request and never wait.

This module knows nothing about SQLite or volumes: ``VolumeStorage`` supplies ``run_batch``.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar, cast

T = TypeVar("T")
C = TypeVar("C")


class Request(Generic[C, T]):
    """One queued item: ``apply(ctx)`` runs inside the batch; its result or error lands here."""

    __slots__ = ("apply", "result", "error", "done", "future")

    def __init__(self, apply: Callable[[C], T], future: asyncio.Future[T] | None = None) -> None:
        self.apply = apply
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = False
        self.future = future  # set for submit_async: settled on its loop after the batch


class GroupCommitter(Generic[C, T]):
    """Batches concurrent ``submit`` calls into calls of ``run_batch(requests)``.

    ``run_batch`` must set ``result`` or ``error`` on every request and return only once
    the batch is durable (or raise: then every request without an error gets that one).
    """

    def __init__(self, run_batch: Callable[[list[Request[C, T]]], None],
                 max_batch: int = 256, linger: float = 0.0) -> None:
        self._run_batch = run_batch
        self.max_batch = max_batch  # benchmarks compare with 1 (one commit per put)
        self.linger = linger  # seconds a drain may wait for a batch as big as the last
        self._last = 0  # requests in the last batch
        self._gathering = False  # a drain waits for requests (submit_async wakes it)
        self._cond = threading.Condition()
        self._queue: list[Request[C, T]] = []
        self._busy = False
        self._draining = False  # a drain is scheduled or running (submit_async)
        self.batches = 0  # for tests and benchmarks: how many commits ran
        self.items = 0

    def submit(self, apply: Callable[[C], T]) -> T:
        """Run ``apply`` in the next batch; return its result once the batch committed."""
        req: Request[C, T] = Request(apply)
        with self._cond:
            self._queue.append(req)
        while True:  # more than once only if we led a batch our own request did not fit in
            with self._cond:
                while not req.done and self._busy:
                    self._cond.wait()
                if req.done:
                    return self._outcome(req)
                batch = self._take_locked()
            self._lead(batch)

    def submit_async(
        self, apply: Callable[[C], T], schedule: Callable[[Callable[[], None]], object]
    ) -> asyncio.Future[T]:
        """Queue ``apply`` from an event loop; the future resolves once its batch committed.

        ``schedule(fn)`` runs ``fn`` on a worker thread (an executor's ``submit``): it leads
        batches until the queue is empty. Cancelling the future does not withdraw the request.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        req = Request(apply, future)
        with self._cond:
            self._queue.append(req)
            start, self._draining = not self._draining, True
            if self._gathering and len(self._queue) >= self._last:
                self._cond.notify_all()
        if start:
            try:
                schedule(self._drain)
            except BaseException:  # e.g. the executor shut down: refused, so never applied
                with self._cond:
                    self._draining = False
                    if req in self._queue:
                        self._queue.remove(req)
                raise
        return future

    def _drain(self) -> None:
        gathered = False
        while True:
            with self._cond:
                while self._busy:  # a blocking submitter leads; its batch may hold ours
                    self._cond.wait()
                if not self._queue:
                    self._draining = False
                    return
                if not gathered and self.linger and self._last > max(1, len(self._queue)):
                    self._gather_locked()
                    gathered = True
                    continue  # the lock was let go: a blocking submitter may have led
                gathered = False
                batch = self._take_locked()
            self._lead(batch)

    def _gather_locked(self) -> None:
        """Wait up to ``linger`` until as many requests are queued as the last batch held,
        or until another leader took them."""
        deadline = time.monotonic() + self.linger
        batches = self.batches
        self._gathering = True
        try:
            while len(self._queue) < self._last and not self._busy and self.batches == batches:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)
        finally:
            self._gathering = False

    def _take_locked(self) -> list[Request[C, T]]:
        self._busy = True
        batch = self._queue[: self.max_batch]
        del self._queue[: self.max_batch]
        return batch

    def _lead(self, batch: list[Request[C, T]]) -> None:
        try:
            self._run_batch(batch)
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter of the batch
            for r in batch:
                if r.error is None:
                    r.error = exc
        finally:
            with self._cond:
                for r in batch:
                    r.done = True
                self.batches += 1
                self.items += len(batch)
                self._last = len(batch)
                self._busy = False
                self._cond.notify_all()
            _settle_futures(batch)

    @staticmethod
    def _outcome(req: Request[C, T]) -> T:
        if req.error is not None:
            raise req.error
        # done without an error: run_batch set the result (which may itself be None)
        return cast(T, req.result)


def _settle_futures(batch: list[Request[C, T]]) -> None:
    """Hand the batch's asyncio requests their outcomes: one loop wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Request[C, T]]] = {}
    for r in batch:
        if r.future is not None:
            by_loop.setdefault(r.future.get_loop(), []).append(r)
    for loop, reqs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_on_loop, reqs)
        except RuntimeError:  # the loop closed meanwhile: nobody is waiting any more
            pass


def _settle_on_loop(reqs: list[Request[C, T]]) -> None:
    for r in reqs:
        future = r.future
        assert future is not None
        if future.done():  # cancelled: the caller went away (the put itself stands)
            continue
        if r.error is not None:
            future.set_exception(r.error)
        else:
            future.set_result(cast(T, r.result))
