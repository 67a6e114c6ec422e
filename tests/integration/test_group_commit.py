"""Group commit of concurrent puts (issue 14): one transaction per batch, a failing put
fails alone, every acknowledged put survives kill -9, and nothing partial is ever visible.

The kill test runs a real writer subprocess with eight threads and SIGKILLs it mid-stream.
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from federation.storage import FileMeta, VolumeStorage
from federation.storage import catalog as cat
from federation.storage.group_commit import GroupCommitter, Request
from federation.storage.puts import Batch
from namespace.errors import Conflict, InvalidInput, Unavailable

REPO = Path(__file__).resolve().parents[2]


def _read(vol: VolumeStorage, path: str) -> bytes:
    with vol.read(path) as r:
        return b"".join(r)


def test_concurrent_puts_share_commits_and_each_gets_one_version(tmp_path: Path) -> None:
    vol = VolumeStorage.open(tmp_path / "v", "gc", create=True)
    try:
        versions: list[int] = []
        lock = threading.Lock()

        def run(k: int) -> None:
            for i in range(25):
                m = vol.put_bytes(f"t{k}/f{i}", f"{k}-{i}".encode())
                with lock:
                    versions.append(m.version)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(versions) == list(range(1, 201))  # +1 per put, none shared
        assert vol.version == 200
        assert vol.put_committer.items == 200 and vol.put_committer.batches <= 200
        for k in range(8):
            assert _read(vol, f"t{k}/f24") == f"{k}-24".encode()
    finally:
        vol.close()


def test_a_failing_put_fails_alone_in_its_batch(tmp_path: Path) -> None:
    vol = VolumeStorage.open(tmp_path / "v", "gc", create=True)
    try:
        vol.put_bytes("taken", b"first")
        gate = threading.Event()
        committer = vol.put_committer
        real = committer._run_batch

        def slow_first(batch: list[Request[Batch, FileMeta]]) -> None:
            gate.wait(5)  # let the others queue up behind this batch
            real(batch)

        committer._run_batch = slow_first
        errors: dict[str, BaseException] = {}

        def put(path: str, if_absent: bool = False) -> None:
            try:
                vol.put_bytes(path, path.encode(), if_absent=if_absent)
            except Conflict as exc:
                errors[path] = exc

        threads = [threading.Thread(target=put, args=("a",))]
        threads[0].start()
        time.sleep(0.2)
        threads += [threading.Thread(target=put, args=(p,), kwargs=kw) for p, kw in
                    (("b", {}), ("taken", {"if_absent": True}), ("c", {}))]
        for t in threads[1:]:
            t.start()
        deadline = time.monotonic() + 5
        while len(committer._queue) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.set()
        for t in threads:
            t.join()
        assert set(errors) == {"taken"}
        assert _read(vol, "taken") == b"first"
        assert vol.version == 4 and {_read(vol, p) for p in "abc"} == {b"a", b"b", b"c"}
        assert committer.batches == 3  # "taken", then "a" alone, then b, taken and c together
    finally:
        vol.close()


def _boom(batch: list[Request[None, int]]) -> None:
    raise OSError("disk gone")


def test_committer_gives_every_waiter_the_batch_error() -> None:
    gc: GroupCommitter[None, int] = GroupCommitter(_boom)
    with pytest.raises(OSError):
        gc.submit(lambda _: 1)


def _hold_batches(vol: VolumeStorage) -> threading.Event:
    """Make every batch wait (at most 5 s) until the returned event is set, so that the
    requests queued meanwhile land together in the next one."""
    release = threading.Event()
    real = vol.put_committer._run_batch

    def held(batch: list[Request[Batch, FileMeta]]) -> None:
        release.wait(5)
        real(batch)

    vol.put_committer._run_batch = held
    return release


# -- queued from an event loop (submit_async / put_small_async) ------------------------------
@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    """Where loop puts' drains run (the controller passes its I/O pool)."""
    executor = ThreadPoolExecutor(4)
    try:
        yield executor
    finally:
        executor.shutdown()


def test_puts_from_an_event_loop_share_batches_with_blocking_ones(vol: VolumeStorage, pool: ThreadPoolExecutor) -> None:
    """Loop puts and thread puts at once: every put gets its own version, each future and
    each call its own result, and batches mix both kinds."""
    versions: list[int] = []
    lock = threading.Lock()

    def blocking(k: int) -> None:
        for i in range(20):
            m = vol.put_bytes(f"sync{k}/f{i}", f"s{k}-{i}".encode())
            with lock:
                versions.append(m.version)

    async def from_loop() -> list[FileMeta]:
        return await asyncio.gather(*(
            vol.put_small_async(f"async/f{i}", f"a{i}".encode(), pool.submit) for i in range(120)
        ))

    threads = [threading.Thread(target=blocking, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    metas = asyncio.run(from_loop())
    for t in threads:
        t.join()
    versions += [m.version for m in metas]
    assert sorted(versions) == list(range(1, 201))
    assert [m.path for m in metas] == [f"async/f{i}" for i in range(120)]
    assert vol.put_committer.batches < 200  # loop puts shared commits
    assert _read(vol, "async/f119") == b"a119" and _read(vol, "sync3/f19") == b"s3-19"


def test_a_refused_loop_put_fails_alone_and_changes_nothing(vol: VolumeStorage, pool: ThreadPoolExecutor) -> None:
    vol.put_bytes("taken", b"first")
    fenced = Unavailable("fenced")

    def gate() -> None:
        raise fenced

    async def run() -> tuple[FileMeta | BaseException, ...]:
        return await asyncio.gather(
            vol.put_small_async("a", b"a", pool.submit),
            vol.put_small_async("taken", b"second", pool.submit, if_absent=True),
            vol.put_small_async("b", b"b", pool.submit, gate=gate),
            vol.put_small_async("taken/below", b"x", pool.submit),
            vol.put_small_async("c", b"c", pool.submit),
            return_exceptions=True,
        )

    a, taken, b, below, c = asyncio.run(run())
    assert isinstance(taken, Conflict) and b is fenced and isinstance(below, InvalidInput)
    assert isinstance(a, FileMeta) and isinstance(c, FileMeta)
    assert (a.version, c.version) == (2, 3) and vol.version == 3
    assert _read(vol, "taken") == b"first" and {f.path for f in vol.files()} == {"a", "c", "taken"}
    # checks that need no catalog fail before anything is queued
    with pytest.raises(InvalidInput, match="sha256 mismatch"):
        asyncio.run(_await(vol.put_small_async, "d", b"d", pool.submit, expect_sha256="0" * 64))
    with pytest.raises(ValueError, match="inline-sized"):
        asyncio.run(_await(vol.put_small_async, "d", bytes(64 * 1024 + 1), pool.submit))
    assert vol.version == 3


def test_a_writers_gate_runs_after_the_content_is_durable_and_refuses_the_commit(vol: VolumeStorage) -> None:
    """``PutWriter.commit(gate=)``: the controller's last check (fenced? the caller gone?)
    runs in the commit's batch, after the content's fsync; what it raises commits nothing,
    for a streamed file (a blob of its own) as for a small one."""
    vol.put_bytes("keep", b"k")
    seen: list[int] = []

    def gate() -> None:
        seen.append(vol.version)
        raise Unavailable("the caller gave up")

    for name, data in (("big", os.urandom(200 * 1024)), ("small", b"tiny")):
        w = vol.writer(name)
        w.write(data)
        with pytest.raises(Unavailable, match="gave up"):
            w.commit(gate=gate)
    assert seen == [1, 1] and vol.version == 1
    assert {f.path for f in vol.files()} == {"keep"}
    ok = vol.writer("big")
    ok.write(b"x" * (200 * 1024))
    assert ok.commit(gate=lambda: None).version == 2


async def _await(fn: Any, *args: Any, **kw: Any) -> Any:
    return await fn(*args, **kw)


def test_small_puts_in_one_batch_see_each_other_as_if_alone(vol: VolumeStorage, pool: ThreadPoolExecutor) -> None:
    """Small puts leave their rows to the end of the batch; one whose path meets a pending
    put (same path, ancestor, descendant) must still see it, and a large put between them
    too: the same outcomes, versions and journal as one put per batch."""
    release = _hold_batches(vol)
    big = os.urandom(100 * 1024)  # past INLINE_MAX: a blob file, applied in its savepoint
    release.set()
    vol.put_bytes("keep", b"k")  # version 1, alone
    release.clear()

    async def run() -> list[Any]:
        first = vol.put_small_async("p", b"one", pool.submit)
        await asyncio.sleep(0.05)  # the drain holds that batch; the rest queue behind it
        rest = [
            vol.put_small_async("p", b"two", pool.submit),  # same path: replaces "one"
            vol.put_small_async("a", b"file", pool.submit),
            vol.put_small_async("a/b", b"below a file", pool.submit),  # refused
            vol.put_small_async("x/y", b"y", pool.submit),
            vol.put_small_async("x", b"where a dir is", pool.submit),  # refused
            vol.put_small_async("new", b"n", pool.submit, if_absent=True),
            vol.put_small_async("new", b"again", pool.submit, if_absent=True),  # refused
        ]
        loop = asyncio.get_running_loop()
        large = loop.run_in_executor(None, functools.partial(vol.put_bytes, "big", big))
        while len(vol.put_committer._queue) < 8:  # the large put queued behind the seven
            await asyncio.sleep(0.005)
        tail = vol.put_small_async("big/below", b"z", pool.submit)  # refused: big is a file
        release.set()
        return await asyncio.gather(first, *rest, large, tail, return_exceptions=True)

    out = asyncio.run(run())
    p1, p2, a, ab, xy, x, new, again, large, tail = out
    assert isinstance(ab, InvalidInput) and isinstance(x, InvalidInput)
    assert isinstance(again, Conflict) and isinstance(tail, InvalidInput)
    assert _read(vol, "p") == b"two" and _read(vol, "a") == b"file"
    assert _read(vol, "x/y") == b"y" and _read(vol, "new") == b"n" and _read(vol, "big") == big
    good = [p1, p2, a, xy, new, large]
    assert sorted(m.version for m in good) == list(range(2, 8)) and vol.version == 7
    assert [m.version for m in good[:5]] == sorted(m.version for m in good[:5])  # queue order
    replaced = [e for e in vol.journal(0) if e.path == "p"]
    assert [e.sha256 for e in replaced] == [p1.sha256, p2.sha256]
    assert {f.path for f in vol.files()} == {"keep", "p", "a", "x/y", "new", "big"}


def test_a_failed_flush_fails_the_whole_batch(vol: VolumeStorage, pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows of puts already planned are written by a flush. If it fails half-way (here:
    journal rows written, files rows not), none of the batch may be answered as committed
    and nothing of it may stay: not even the half-written rows, once the failure is gone."""
    vol.put_bytes("before", b"b")
    release = _hold_batches(vol)
    real_many = cat.put_files_many
    failures = [1]

    def half_then_fail(conn: Any, journal: Any, files: Any, replaced: Any) -> None:
        if failures and len(files) == 2:  # once: the flush of x and y the second "x" forces
            failures.pop()
            conn.executemany(cat._PUT_JOURNAL_SQL, journal)
            raise sqlite3.OperationalError("disk I/O error")
        real_many(conn, journal, files, replaced)

    async def run() -> list[Any]:
        first = vol.put_small_async("hold", b"h", pool.submit)
        await asyncio.sleep(0.05)  # the drain holds that batch; these three queue together
        rest = [vol.put_small_async(p, p.encode() + b"1", pool.submit) for p in ("x", "y")]
        rest.append(vol.put_small_async("x", b"x2", pool.submit))
        release.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    monkeypatch.setattr(cat, "put_files_many", half_then_fail)
    hold, *rest = asyncio.run(run())
    assert isinstance(hold, FileMeta) and hold.version == 2  # its own batch: fine
    assert all(isinstance(r, sqlite3.OperationalError) for r in rest), rest
    assert vol.version == 2 and {f.path for f in vol.files()} == {"before", "hold"}
    assert [e.path for e in vol.journal(0)] == ["before", "hold"]
    assert vol.put_bytes("x", b"x3").version == 3  # and the volume goes on


def test_a_loop_put_whose_caller_went_away_still_commits(vol: VolumeStorage, pool: ThreadPoolExecutor) -> None:
    """Cancelling the future withdraws nobody's put (as a gRPC cancel after the send):
    the batch commits it and the settling skips the cancelled future quietly."""
    release = _hold_batches(vol)

    async def run() -> FileMeta:
        gone = vol.put_small_async("gone", b"g", pool.submit)
        kept = vol.put_small_async("kept", b"k", pool.submit)
        gone.cancel()
        release.set()
        return await kept

    assert asyncio.run(run()).path == "kept"
    pool.shutdown(wait=True)
    assert {f.path for f in vol.files()} == {"gone", "kept"}


def test_loop_waiters_get_the_batch_error_and_a_refused_schedule_leaves_no_drain(
    pool: ThreadPoolExecutor,
) -> None:
    gc: GroupCommitter[None, int] = GroupCommitter(_boom)

    def refuse(fn: Any) -> None:
        raise RuntimeError("cannot schedule new futures after shutdown")

    applied: list[int] = []

    def record(batch: list[Request[None, int]]) -> None:
        for r in batch:
            r.result = r.apply(None)
            applied.append(r.result)

    async def run() -> None:
        with pytest.raises(OSError, match="disk gone"):
            await gc.submit_async(lambda _: 1, pool.submit)
        gc._run_batch = record
        while gc._draining:  # the first drain ends just after it settled our future
            await asyncio.sleep(0.001)
        with pytest.raises(RuntimeError, match="after shutdown"):
            gc.submit_async(lambda _: 2, refuse)
        # the refused request is never applied, and no drain is thought to be running
        assert await gc.submit_async(lambda _: 3, pool.submit) == 3
        assert applied == [3]

    asyncio.run(run())


CHILD = r"""
import hashlib, os, sys, threading
from federation.storage import VolumeStorage
vol = VolumeStorage.open(sys.argv[1], "gc", create=True)
out_lock = threading.Lock()
def run(k):
    for i in range(100000):
        data = os.urandom(4096)
        m = vol.put_bytes(f"r{sys.argv[2]}/t{k}/f{i:06d}", data)
        with out_lock:
            sys.stdout.write(f"{m.path} {m.version} {hashlib.sha256(data).hexdigest()}\n")
            sys.stdout.flush()
ts = [threading.Thread(target=run, args=(k,)) for k in range(8)]
for t in ts: t.start()
for t in ts: t.join()
"""


@pytest.mark.slow
def test_kill9_mid_batch_loses_nothing_acknowledged(tmp_path: Path) -> None:
    root = tmp_path / "v"
    for round_ in range(3):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(round_)], cwd=REPO,
                                 stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(REPO)})
        acked: dict[str, tuple[int, str]] = {}
        assert child.stdout is not None
        target = 150 + 70 * round_
        for line in child.stdout:
            path, version, sha = line.split()
            acked[path] = (int(version), sha)
            if len(acked) >= target:
                break
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        with VolumeStorage.open(root, "gc") as vol:
            files = {f.path: f for f in vol.files()}
            for path, (acked_version, acked_sha) in acked.items():
                assert path in files, f"acknowledged put {path} lost"
                assert files[path].sha256 == acked_sha and files[path].version == acked_version
            # nothing partial: every visible file is whole, and one version per put
            for f in list(files.values())[:: max(1, len(files) // 50)]:
                assert hashlib.sha256(_read(vol, f.path)).hexdigest() == f.sha256
            assert vol.version == len(files)
            assert sorted(f.version for f in files.values()) == list(range(1, len(files) + 1))


# -- linger: a drain waits for a batch as big as the last one --------------------------------
def _sizes_recorder(sizes: list[int]) -> Callable[[list[Request[None, int]]], None]:
    def record(batch: list[Request[None, int]]) -> None:
        sizes.append(len(batch))
        for r in batch:
            r.result = r.apply(None)

    return record


def _const(i: int) -> Callable[[None], int]:
    return lambda _: i


async def _until_drained(gc: GroupCommitter[None, int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while gc._draining and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    return not gc._draining


async def _queued_together(gc: GroupCommitter[None, int], pool: ThreadPoolExecutor, n: int) -> list[int]:
    """``n`` loop requests queued before their drain starts, so they form one batch."""
    drains: list[Any] = []
    futures = [gc.submit_async(_const(i), drains.append) for i in range(n)]
    assert len(drains) == 1  # one drain for all of them
    pool.submit(drains[0])
    return list(await asyncio.gather(*futures))


def test_a_drain_after_a_batch_of_three_waits_until_three_are_queued(pool: ThreadPoolExecutor) -> None:
    sizes: list[int] = []
    gc: GroupCommitter[None, int] = GroupCommitter(_sizes_recorder(sizes), linger=60.0)

    async def run() -> float:
        assert await _queued_together(gc, pool, 3) == [0, 1, 2]
        assert await _until_drained(gc)
        start = time.monotonic()
        first = gc.submit_async(lambda _: 10, pool.submit)  # its drain waits for two more
        await asyncio.sleep(0.05)
        assert not first.done()
        rest = [gc.submit_async(_const(i), pool.submit) for i in (11, 12)]
        assert await asyncio.gather(first, *rest) == [10, 11, 12]
        return time.monotonic() - start

    elapsed = asyncio.run(run())
    assert sizes == [3, 3]
    assert elapsed < 30  # woken by the third request, not by the 60 s linger


def test_linger_is_bounded_and_a_lone_writer_never_waits(pool: ThreadPoolExecutor) -> None:
    sizes: list[int] = []
    gc: GroupCommitter[None, int] = GroupCommitter(_sizes_recorder(sizes), linger=0.2)

    async def run() -> tuple[float, float]:
        await _queued_together(gc, pool, 3)
        assert await _until_drained(gc)
        start = time.monotonic()
        assert await gc.submit_async(lambda _: 7, pool.submit) == 7  # waits out the linger
        waited = time.monotonic() - start
        assert await _until_drained(gc)
        gc.linger = 60.0  # the last batch held one request: the next must not wait at all
        start = time.monotonic()
        assert await gc.submit_async(lambda _: 8, pool.submit) == 8
        return waited, time.monotonic() - start

    waited, lone = asyncio.run(run())
    assert sizes == [3, 1, 1]
    assert 0.19 <= waited < 30
    assert lone < 30


def test_a_blocking_submitter_may_lead_while_a_drain_waits(pool: ThreadPoolExecutor) -> None:
    sizes: list[int] = []
    gc: GroupCommitter[None, int] = GroupCommitter(_sizes_recorder(sizes), linger=60.0)

    async def run() -> list[int]:
        await _queued_together(gc, pool, 3)
        assert await _until_drained(gc)
        waiting = gc.submit_async(lambda _: 20, pool.submit)
        await asyncio.sleep(0.05)
        # a blocking put does not wait for a batch: it leads one, taking the waiting request
        blocking = await asyncio.get_running_loop().run_in_executor(None, gc.submit, lambda _: 21)
        results = [await waiting, blocking]
        assert await _until_drained(gc)  # it saw its requests taken, not its 60 s linger out
        return results

    assert asyncio.run(run()) == [20, 21]
    assert sizes == [3, 2]
