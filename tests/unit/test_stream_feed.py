"""``feed_blocking``: an async stream fed to blocking code on a thread, and both ends stop
when either fails; ``checked_parts``: a relayed upload's parts end in an error, never short."""
from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from cloud_adapters.base import checked_parts
from cloud_adapters.errors import IntegrityError
from federation.stream_feed import feed_blocking


class Boom(Exception):
    pass


def run(coro_fn, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    """Run on a fresh loop in a thread of its own: a hang fails the test in ``timeout``
    (a producer stuck in ``finally`` would stall ``asyncio.wait_for``'s cancellation too)."""
    outcome: dict[str, object] = {}

    def main() -> None:
        try:
            outcome["value"] = asyncio.run(coro_fn())
        except BaseException as exc:  # handed to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s: hung"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]


async def numbers(n: int, read: list[int], fail_at: int | None = None) -> AsyncIterator[int]:
    for i in range(n):
        if i == fail_at:
            raise Boom(f"stream broke at {i}")
        read.append(i)
        yield i
        await asyncio.sleep(0)


def test_items_arrive_in_order_and_the_result_comes_back() -> None:
    read: list[int] = []
    with ThreadPoolExecutor(2) as pool:
        got = run(lambda: feed_blocking(lambda items: list(items), numbers(50, read), pool))
    assert got == list(range(50)) and read == list(range(50))


def test_the_stream_is_read_at_most_depth_ahead_of_the_consumer() -> None:
    read: list[int] = []
    ahead: list[int] = []
    release = threading.Event()

    def slow(items: Iterator[int]) -> int:
        total = 0
        for i in items:
            if i == 0:
                release.wait(5)  # the stream may fill the queue meanwhile, no further
            ahead.append(len(read) - i)
            total += i
        return total

    async def go() -> int:
        task = asyncio.ensure_future(feed_blocking(slow, numbers(40, read), depth=3))
        while len(read) < 5 and not task.done():
            await asyncio.sleep(0.01)
        for _ in range(20):  # it stays stopped: nothing more is read while the consumer waits
            await asyncio.sleep(0.005)
        stopped_at = len(read)
        release.set()
        result = await task
        assert stopped_at <= 1 + 3 + 1, stopped_at  # taken, queued, the one waiting to go in
        return result

    assert run(go) == sum(range(40))
    assert max(ahead) <= 5


def test_a_consumer_that_fails_stops_the_stream_at_once() -> None:
    """The hang this replaced: the producer waited for room in a queue nobody emptied."""
    read: list[int] = []

    def fails(items: Iterator[int]) -> None:
        next(items)
        raise Boom("disk full")

    with pytest.raises(Boom, match="disk full"):
        run(lambda: feed_blocking(fails, numbers(10_000, read), depth=2))
    assert len(read) < 10


def test_a_consumer_that_ends_early_stops_the_stream_and_its_result_comes_back() -> None:
    read: list[int] = []
    assert run(lambda: feed_blocking(lambda items: next(items), numbers(10_000, read), depth=2)) == 0
    assert len(read) < 10


def test_a_failing_stream_reaches_the_consumer_which_cleans_up() -> None:
    seen: list[object] = []

    def consume(items: Iterator[int]) -> None:
        try:
            for i in items:
                seen.append(i)
        except Boom as exc:
            seen.append(f"cleaned up after: {exc}")
            raise

    with pytest.raises(Boom, match="broke at 3"):
        run(lambda: feed_blocking(consume, numbers(10, [], fail_at=3)))
    assert seen == [0, 1, 2, "cleaned up after: stream broke at 3"]


def test_a_cancelled_caller_ends_the_consumer_too() -> None:
    ended = threading.Event()
    started = threading.Event()

    def consume(items: Iterator[int]) -> None:
        try:
            for _ in items:
                started.set()
        except asyncio.CancelledError:
            ended.set()
            raise

    async def endless() -> AsyncIterator[int]:
        while True:
            yield 1
            await asyncio.sleep(0.001)

    async def go() -> None:
        task = asyncio.ensure_future(feed_blocking(consume, endless()))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(go)
    assert ended.is_set()


# -- checked_parts ------------------------------------------------------------------------------
PARTS = [b"a" * 10, b"b" * 10, b"c" * 5]
WHOLE = b"".join(PARTS)
SHA = hashlib.sha256(WHOLE).hexdigest()


def test_whole_parts_pass_unchanged() -> None:
    assert list(checked_parts(iter(PARTS), len(WHOLE), SHA, "s3://b/k")) == PARTS


def test_a_stream_that_ends_short_raises_after_its_last_part() -> None:
    got: list[bytes] = []
    with pytest.raises(IntegrityError, match="gave 20 bytes, expected 25"):
        for p in checked_parts(iter(PARTS[:2]), len(WHOLE), SHA, "s3://b/k"):
            got.append(p)
    assert got == PARTS[:2]


def test_the_final_part_is_held_back_when_the_bytes_do_not_match() -> None:
    got: list[bytes] = []
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        for p in checked_parts(iter(PARTS[:2] + [b"x" * 5]), len(WHOLE), SHA, "s3://b/k"):
            got.append(p)
    assert got == PARTS[:2]  # the upload never gets its last part: it cannot complete


def test_more_bytes_than_promised_raise() -> None:
    with pytest.raises(IntegrityError, match="gave 30 bytes, expected 25"):
        list(checked_parts(iter(PARTS + [b"d" * 5]), len(WHOLE), SHA, "s3://b/k"))
