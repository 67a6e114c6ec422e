"""Clean-ups that must run although the call they belong to was cancelled (its client went
away). On a busy controller the pool job of a clean-up is often still queued when the cancel
lands, and ``run_in_executor`` drops a queued job with its future: an interrupted upload's
temp file stayed on disk, open, for good (found under CI's load, not on an idle machine)."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from federation.controller.handler_io import IOPool, settled


@pytest.mark.parametrize("to_end", [False, True])
def test_a_clean_up_runs_though_its_caller_is_cancelled_while_it_waits_in_the_queue(to_end: bool) -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    started, release, ran = threading.Event(), threading.Event(), threading.Event()
    io = IOPool(pool)

    def blocker() -> None:  # takes the one thread until released
        started.set()
        release.wait(10)

    async def main() -> None:
        blocked = asyncio.ensure_future(io.run(blocker))
        await asyncio.to_thread(started.wait, 10)
        task = asyncio.ensure_future((io.run_to_end if to_end else io.run)(ran.set))
        await asyncio.sleep(0)  # the task submits its job, which queues behind the blocker
        task.cancel()
        if to_end:  # waits for its job, so the blocker must end first
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:  # the cancellation lands while the job still queues: released only after
            with pytest.raises(asyncio.CancelledError):
                await task
            release.set()
        await blocked
        await io.run(lambda: None)  # whatever was queued has run by now
        # run drops the queued job with its cancelled future; run_to_end runs it
        assert ran.is_set() == to_end

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()


def test_a_write_in_flight_is_waited_for_through_a_cancellation() -> None:
    """``store``'s last wait, cancelled itself, must not leave a pool thread writing into a
    writer the caller then aborts."""
    release = threading.Event()
    pool = ThreadPoolExecutor(max_workers=1)

    started = threading.Event()

    def write() -> None:
        started.set()
        release.wait(10)

    async def main() -> None:
        job = asyncio.ensure_future(IOPool(pool).run(write))
        await asyncio.to_thread(started.wait, 10)
        waiter = asyncio.ensure_future(settled(job))
        await asyncio.sleep(0)  # waiting
        waiter.cancel()
        for _ in range(3):
            await asyncio.sleep(0)
        assert not waiter.done()  # still waiting for the write
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await waiter  # the cancellation, passed on once the write ended
        assert job.done() and not job.cancelled()

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()
