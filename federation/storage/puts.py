"""The put path: stream a file's new content, then make it durable and visible at once.

Small content (up to ``inline.INLINE_MAX``) is buffered in memory and stored as an inline
blob row in the same savepoint as its files row: no file, rename or directory fsync.
Larger content streams into a temp file while hashing (``blobs.TempBlob``), is fsynced,
renamed to ``blobs/<sha[:2]>/<sha>`` (directory fsynced), and only then its catalog row is
committed. Either way the catalog commit (files row, journal row, version + 1) is the
point of visibility. Puts that reach the commit together share ONE catalog transaction
(``group_commit``), each in its own savepoint. A crash leaves the old or the new file, never
a part; nothing is acknowledged before its commit is durable.

Set ``GNS_STORAGE_FAULT`` to ``before_install``, ``after_install`` or ``after_commit`` to make
the process SIGKILL itself at that point of a put (crash tests only; a small put has no
install, and the first two points come right before it is queued for commit).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

from namespace.errors import Conflict

from . import catalog as cat
from . import inline
from .blobs import BlobStore, TempBlob
from .checks import check_mode, check_path, check_sha256
from .gc import BlobCollector
from .group_commit import GroupCommitter, Request
from .models import FileMeta
from .state import VolumeState

FAULT_ENV = "GNS_STORAGE_FAULT"


def fault(point: str) -> None:
    """Crash-test hook: SIGKILL this process at ``point`` when ``GNS_STORAGE_FAULT`` says so."""
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _stamp(mtime: float | None, mode: int | None) -> tuple[float, int | None]:
    """A put's mtime (None: now) and its checked mode bits (None: keep the replaced file's)."""
    return (time.time() if mtime is None else float(mtime)), (
        None if mode is None else check_mode(mode))


class PutWriter:
    """Streams one file's new content; nothing is visible until ``commit``.

    Content stays in memory while it fits ``inline.INLINE_MAX``; the first write past that
    moves it to a temp blob file and streams from then on (memory stays bounded).
    """

    def __init__(self, puts: Puts, path: str, blobs: BlobStore) -> None:
        self._puts = puts
        self.path = path
        self._blobs = blobs
        self._small: bytearray | None = bytearray()
        self._temp: TempBlob | None = None
        self._done = False
        self.size = 0  # bytes written so far

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        if self._done:
            raise ValueError(f"writer for {self.path!r} is finished")
        self.size += len(chunk)
        small = self._small
        if small is not None:
            if len(small) + len(chunk) <= inline.INLINE_MAX:
                small += chunk
                return
            self._temp = self._blobs.new_temp()
            self._small = None
            if small:
                self._temp.write(small)
        assert self._temp is not None
        self._temp.write(chunk)

    def commit(
        self,
        *,
        mtime: float | None = None,
        expect_sha256: str | None = None,
        version: int | None = None,
        mode: int | None = None,
        if_absent: bool = False,
        gate: Callable[[], object] | None = None,
    ) -> FileMeta:
        """Make the content durable and visible as one new volume version.

        ``if_absent`` (exclusive create) refuses with Conflict when the file exists.

        ``version`` (replicas) applies exactly that version number, which must be above the
        current one. A sha256 other than ``expect_sha256`` commits nothing. ``gate()`` runs
        inside the commit's batch, after the content is durable, just before its rows: what
        raises there commits nothing.
        """
        if self._done:
            raise ValueError(f"writer for {self.path!r} is finished")
        self._done = True
        small, temp = self._small, self._temp
        self._small = None
        try:
            if small is not None:
                sha = hashlib.sha256(small).hexdigest()
            else:
                assert temp is not None
                sha = temp.finish()
            check_sha256(repr(self.path), expect_sha256, sha)
            fault("before_install")
            if small is not None:
                fault("after_install")
                return self._puts.commit_inline(
                    self.path, small, sha, mtime, version, mode, if_absent, gate
                )
            assert temp is not None
            return self._puts.commit_put(
                self.path, temp, sha, temp.size, mtime, version, mode, if_absent, gate
            )
        finally:
            if temp is not None:
                temp.discard()

    def abort(self) -> None:
        """Drop what was written; the volume is unchanged."""
        if not self._done:
            self._done = True
            self._small = None
            if self._temp is not None:
                self._temp.discard()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


class Batch:
    """The leader's open transaction while it applies one batch of puts.

    ``version`` is the volume version as of the puts applied so far: read once per batch
    and written to ``meta`` once at its end, instead of once per put.

    Small puts (``SmallPut``) check their path when applied but leave their rows here, and
    ``flush`` writes the rows of all of them with three statements. Why: a statement costs
    the batch's thread a GIL hand-off against the busy event loop, and a small put was six
    statements. A put whose path meets a pending one (the same path, an ancestor, a
    descendant) flushes first, so every check sees the puts before it, as it would alone. A
    failed flush fails the batch: nothing of it commits, and every put in it gets the error.
    """

    __slots__ = ("conn", "version", "_journal", "_files", "_blobs", "_replaced", "_paths",
                 "_above")

    def __init__(self, conn: sqlite3.Connection, version: int) -> None:
        self.conn = conn
        self.version = version
        self._journal: list[cat.JournalRow] = []
        self._files: list[cat.FileRow] = []
        self._blobs: list[tuple[str, bytes]] = []
        self._replaced: list[str] = []
        self._paths: set[str] = set()  # pending puts' paths
        self._above: set[str] = set()  # their ancestors

    def flush_if_meets(self, path: str) -> None:
        """Flush first if a put at ``path`` could see a pending put (the same path, an
        ancestor, a descendant). Outside any put's own error handling: a failed flush fails
        the whole batch, as it holds puts already answered as applied."""
        paths = self._paths
        if paths and (path in paths or path in self._above
                      or any(a in paths for a in cat.ancestors(path))):
            self.flush()

    def defer(self, journal: cat.JournalRow, file: cat.FileRow, blob: tuple[str, bytes],
              replaced: str | None) -> None:
        self._journal.append(journal)
        self._files.append(file)
        self._blobs.append(blob)
        if replaced is not None:
            self._replaced.append(replaced)
        self._paths.add(file[0])
        self._above.update(cat.ancestors(file[0]))

    def flush(self) -> None:
        """Write the pending puts' rows (in version order); the batch may go on after."""
        if not self._paths:
            return
        inline.store_many(self.conn, self._blobs)
        cat.put_files_many(self.conn, self._journal, self._files, self._replaced)
        self._journal, self._files, self._blobs, self._replaced = [], [], [], []
        self._paths, self._above = set(), set()

    def claim(self, name: str, path: str, version: int | None, if_absent: bool
              ) -> tuple[FileMeta | None, int]:
        """Before a put's rows: the file it replaces (shape checked; ``if_absent`` refuses
        one) and the version it gets."""
        old = cat.put_target(self.conn, path)
        if if_absent and old is not None:
            raise Conflict(f"{path!r} exists")
        return old, self.next_version(name, version)

    def next_version(self, name: str, version: int | None) -> int:
        """Current + 1, or exactly ``version`` (replicas), which must be above current."""
        if version is None:
            return self.version + 1
        if version <= self.version:
            raise Conflict(
                f"volume {name!r}: cannot apply version {version}, already at {self.version}"
            )
        return version


class SmallPut:
    """The apply step of an inline-sized put: checks now, rows left to ``Batch.flush``.

    It writes nothing itself, so it needs no savepoint: a refusal (a conflict, a shape
    error, the write gate) leaves the transaction as it found it.
    """

    __slots__ = ("name", "path", "data", "sha256", "mtime", "version", "mode", "if_absent",
                 "gate")

    def __init__(self, name: str, path: str, data: bytes, sha256: str, mtime: float,
                 version: int | None, mode: int | None, if_absent: bool,
                 gate: Callable[[], object] | None) -> None:
        self.name = name
        self.path = path
        self.data = data
        self.sha256 = sha256
        self.mtime = mtime
        self.version = version
        self.mode = mode
        self.if_absent = if_absent
        self.gate = gate

    def __call__(self, batch: Batch) -> FileMeta:
        """Check and plan the put; the batch must have flushed what it could see first
        (``Batch.flush_if_meets``)."""
        if self.gate is not None:
            self.gate()
        fault("before_install")  # the crash points of a put, though a small one installs nothing
        fault("after_install")
        path = self.path
        old, v = batch.claim(self.name, path, self.version, self.if_absent)
        size = len(self.data)
        journal, file, mode = cat.put_rows(path, size, self.sha256, self.mtime, v, self.mode, old)
        replaced = old.sha256 if old is not None and old.sha256 != self.sha256 else None
        batch.defer(journal, file, (self.sha256, self.data), replaced)
        return FileMeta(path=path, size=size, sha256=self.sha256, mtime=self.mtime, version=v,
                        mode=mode)


# How long a drain of loop puts may wait for a batch as big as the last one. 8 writers of
# 4 KiB through one owner, 5 interleaved pairs of runs: batches of 2.0 puts became 3.1, the
# owner's CPU per put went from 0.71 to 0.66 ms (medians) and puts/s from 1,404 to 1,517
# (4 pairs of 5 won). A lone writer's batches hold one put: it never waits.
_LINGER_S = 0.001


class Puts:
    """Starts puts and commits them in groups."""

    def __init__(self, state: VolumeState, gc: BlobCollector) -> None:
        self._state = state
        self._gc = gc
        self.committer: GroupCommitter[Batch, FileMeta] = GroupCommitter(
            self.run_batch, linger=_LINGER_S)

    def writer(self, path: str) -> PutWriter:
        """Start a put; a path where a directory is, or below a file, fails now."""
        check_path(path)
        cat.check_put_shape(self._state.catalog.conn(), path)
        return PutWriter(self, path, self._state.blobs)

    def put_bytes(
        self,
        path: str,
        data: bytes,
        *,
        mtime: float | None = None,
        expect_sha256: str | None = None,
        version: int | None = None,
        mode: int | None = None,
        if_absent: bool = False,
    ) -> FileMeta:
        if len(data) <= inline.INLINE_MAX:
            # Nothing streams, so checking the shape before the commit (which checks it
            # again in its transaction) would only cost a query.
            check_path(path)
            w = PutWriter(self, path, self._state.blobs)
        else:
            w = self.writer(path)
        with w:
            w.write(data)
            return w.commit(
                mtime=mtime, expect_sha256=expect_sha256, version=version, mode=mode,
                if_absent=if_absent,
            )

    def _apply(
        self,
        batch: Batch,
        path: str,
        sha256: str,
        size: int,
        mtime: float,
        version: int | None,
        mode: int | None,
        if_absent: bool,
    ) -> FileMeta:
        """The put's rows, inside the batch's transaction (its savepoint is open)."""
        old, v = batch.claim(self._state.name, path, version, if_absent)
        mode = cat.put_file(batch.conn, path, size, sha256, mtime, v, mode, old=old)
        return FileMeta(path=path, size=size, sha256=sha256, mtime=mtime, version=v, mode=mode)

    def commit_inline(
        self,
        path: str,
        data: bytes | bytearray,
        sha256: str,
        mtime: float | None,
        version: int | None,
        mode: int | None = None,
        if_absent: bool = False,
        gate: Callable[[], object] | None = None,
    ) -> FileMeta:
        """Commit small content at ``path``: its inline blob row and its files row are
        written together in the batch's transaction (``SmallPut``).

        No collection hold is needed: the blob and the row that references it become
        visible in the same commit, and a refused put leaves neither.
        """
        return self.committer.submit(
            self._small_put(path, bytes(data), sha256, mtime, version, mode, if_absent, gate)
        )

    def _small_put(self, path: str, data: bytes, sha256: str, mtime: float | None,
                   version: int | None, mode: int | None, if_absent: bool,
                   gate: Callable[[], object] | None) -> SmallPut:
        at, mode = _stamp(mtime, mode)
        return SmallPut(self._state.name, path, data, sha256, at, version, mode, if_absent, gate)

    def put_small_async(
        self,
        path: str,
        data: bytes,
        schedule: Callable[[Callable[[], None]], object],
        *,
        mtime: float | None = None,
        expect_sha256: str | None = None,
        mode: int | None = None,
        if_absent: bool = False,
        gate: Callable[[], object] | None = None,
    ) -> asyncio.Future[FileMeta]:
        """``put_bytes`` for inline-sized ``data``, queued from an event loop: the hash and
        checks run here (cheap at this size), the commit in the next batch, led on a thread
        that ``schedule`` provides. ``gate()`` runs inside that batch, just before the put's
        rows: a fencing check as close to the commit as it can be."""
        if len(data) > inline.INLINE_MAX:
            raise ValueError(f"{len(data)} bytes is not inline-sized")
        check_path(path)
        sha = hashlib.sha256(data).hexdigest()
        check_sha256(repr(path), expect_sha256, sha)
        return self.committer.submit_async(
            self._small_put(path, data, sha, mtime, None, mode, if_absent, gate), schedule
        )

    def commit_put(
        self,
        path: str,
        temp: TempBlob,
        sha256: str,
        size: int,
        mtime: float | None,
        version: int | None,
        mode: int | None = None,
        if_absent: bool = False,
        gate: Callable[[], object] | None = None,
    ) -> FileMeta:
        """Install a finished temp file as blob ``sha256`` and commit it at ``path``
        (``gate()`` first, in the batch)."""
        at, mode = _stamp(mtime, mode)
        state = self._state
        try:
            with self._gc.hold(sha256):
                state.blobs.install(temp, sha256)
                fault("after_install")

                def apply(batch: Batch) -> FileMeta:
                    if gate is not None:
                        gate()
                    return self._apply(batch, path, sha256, size, at, version, mode, if_absent)

                try:
                    meta = self.committer.submit(apply)
                except BaseException:
                    with state.lock:
                        self._gc.queue_unless_used_locked(sha256)
                    raise
        except BaseException:
            with state.lock:  # the refused blob is no longer held: collect it
                self._gc.collect_locked()
            raise
        return meta

    def run_batch(self, batch: list[Request[Batch, FileMeta]]) -> None:
        """The puts waiting together (``group_commit``): one transaction, one savepoint each,
        so one fsync makes them all durable and a failing put fails alone."""
        state = self._state
        with state.lock:
            with state.write_txn() as conn:
                ctx = Batch(conn, state.txn_version(conn))
                start = ctx.version
                for req in batch:
                    if isinstance(req.apply, SmallPut):
                        ctx.flush_if_meets(req.apply.path)
                        try:
                            meta = req.apply(ctx)
                        except Exception as exc:  # noqa: BLE001 - this put only; it wrote nothing
                            req.error = exc
                        else:
                            req.result = meta
                            ctx.version = meta.version
                        continue
                    ctx.flush()  # another kind of put sees the small ones before it
                    conn.execute("SAVEPOINT put")
                    try:
                        meta = req.apply(ctx)
                    except Exception as exc:  # noqa: BLE001 - this put only: its savepoint is undone
                        conn.execute("ROLLBACK TO put")
                        req.error = exc
                    else:
                        req.result = meta
                        ctx.version = meta.version
                    finally:
                        conn.execute("RELEASE put")
                ctx.flush()
                if ctx.version != start:
                    cat.set_meta(conn, "version", ctx.version)
                    self._gc.drop_dead_inline_locked(conn)  # overwritten small content
            state.version = ctx.version
            fault("after_commit")
            self._gc.collect_locked()
