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

This module knows nothing about SQLite or volumes: ``VolumeStorage`` supplies ``run_batch``.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar, cast

T = TypeVar("T")
C = TypeVar("C")


class Request(Generic[C, T]):
    """One queued item: ``apply(ctx)`` runs inside the batch; its result or error lands here."""

    __slots__ = ("apply", "result", "error", "done")

    def __init__(self, apply: Callable[[C], T]) -> None:
        self.apply = apply
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = False


class GroupCommitter(Generic[C, T]):
    """Batches concurrent ``submit`` calls into calls of ``run_batch(requests)``.

    ``run_batch`` must set ``result`` or ``error`` on every request and return only once
    the batch is durable (or raise: then every request without an error gets that one).
    """

    def __init__(self, run_batch: Callable[[list[Request[C, T]]], None],
                 max_batch: int = 256) -> None:
        self._run_batch = run_batch
        self.max_batch = max_batch  # benchmarks compare with 1 (one commit per put)
        self._cond = threading.Condition()
        self._queue: list[Request[C, T]] = []
        self._busy = False
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
                self._busy = True
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
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
                    self._busy = False
                    self._cond.notify_all()

    @staticmethod
    def _outcome(req: Request[C, T]) -> T:
        if req.error is not None:
            raise req.error
        # done without an error: run_batch set the result (which may itself be None)
        return cast(T, req.result)
