"""The put path: stream a file's new content, then make it durable and visible at once.

A put streams into a temp file while hashing (``blobs.TempBlob``), fsyncs it, renames it to
``blobs/<sha[:2]>/<sha>`` (directory fsynced), and only then commits its catalog row (files
row, journal row, version + 1). Puts that reach the commit together share ONE catalog
transaction (``group_commit``), each in its own savepoint. A crash leaves the old or the new
file, never a part; nothing is acknowledged before its commit is durable.

Set ``GNS_STORAGE_FAULT`` to ``before_install``, ``after_install`` or ``after_commit`` to make
the process SIGKILL itself at that point of a put (crash tests only).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from types import TracebackType
from typing import Self

from namespace.errors import Conflict, InvalidInput

from . import catalog as cat
from .blobs import TempBlob
from .checks import check_mode, check_path
from .gc import BlobCollector
from .group_commit import GroupCommitter, Request
from .models import FileMeta
from .state import VolumeState

FAULT_ENV = "GNS_STORAGE_FAULT"


def fault(point: str) -> None:
    """Crash-test hook: SIGKILL this process at ``point`` when ``GNS_STORAGE_FAULT`` says so."""
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


class PutWriter:
    """Streams one file's new content; nothing is visible until ``commit``."""

    def __init__(self, puts: Puts, path: str, temp: TempBlob) -> None:
        self._puts = puts
        self.path = path
        self._temp = temp
        self._done = False

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._temp.size

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        if self._done:
            raise ValueError(f"writer for {self.path!r} is finished")
        self._temp.write(chunk)

    def commit(
        self,
        *,
        mtime: float | None = None,
        expect_sha256: str | None = None,
        version: int | None = None,
        mode: int | None = None,
        if_absent: bool = False,
    ) -> FileMeta:
        """Make the content durable and visible as one new volume version.

        ``if_absent`` (exclusive create) refuses with Conflict when the file exists.

        ``version`` (replicas) applies exactly that version number, which must be above the
        current one. A sha256 other than ``expect_sha256`` commits nothing.
        """
        if self._done:
            raise ValueError(f"writer for {self.path!r} is finished")
        self._done = True
        try:
            sha = self._temp.finish()
            if expect_sha256 is not None and expect_sha256.lower() != sha:
                raise InvalidInput(
                    f"sha256 mismatch for {self.path!r}: expected {expect_sha256}, got {sha}"
                )
            fault("before_install")
            return self._puts.commit_put(
                self.path, self._temp, sha, self._temp.size, mtime, version, mode, if_absent
            )
        finally:
            self._temp.discard()

    def abort(self) -> None:
        """Drop what was written; the volume is unchanged."""
        if not self._done:
            self._done = True
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


class Puts:
    """Starts puts and commits them in groups."""

    def __init__(self, state: VolumeState, gc: BlobCollector) -> None:
        self._state = state
        self._gc = gc
        self.committer: GroupCommitter[sqlite3.Connection, FileMeta] = GroupCommitter(
            self.run_batch
        )

    def writer(self, path: str) -> PutWriter:
        """Start a put; a path where a directory is, or below a file, fails now."""
        check_path(path)
        cat.check_put_shape(self._state.catalog.conn(), path)
        return PutWriter(self, path, self._state.blobs.new_temp())

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
        with self.writer(path) as w:
            w.write(data)
            return w.commit(
                mtime=mtime, expect_sha256=expect_sha256, version=version, mode=mode,
                if_absent=if_absent,
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
    ) -> FileMeta:
        """Install a finished temp file as blob ``sha256`` and commit it at ``path``."""
        if mtime is None:
            mtime = time.time()
        if mode is not None:
            mode = check_mode(mode)
        state = self._state
        try:
            with self._gc.hold(sha256):
                state.blobs.install(temp, sha256)
                fault("after_install")

                def apply(conn: sqlite3.Connection) -> FileMeta:
                    cat.check_put_shape(conn, path)
                    if if_absent and cat.get_file(conn, path) is not None:
                        raise Conflict(f"{path!r} exists")
                    v = state.next_version(conn, version)
                    cat.put_file(conn, path, size, sha256, mtime, v, mode)
                    cat.set_meta(conn, "version", v)
                    got = cat.get_file(conn, path)
                    assert got is not None
                    return got

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

    def run_batch(self, batch: list[Request[sqlite3.Connection, FileMeta]]) -> None:
        """The puts waiting together (``group_commit``): one transaction, one savepoint each,
        so one fsync makes them all durable and a failing put fails alone."""
        state = self._state
        with state.lock:
            with state.write_txn() as conn:
                for req in batch:
                    conn.execute("SAVEPOINT put")
                    try:
                        req.result = req.apply(conn)
                    except Exception as exc:  # noqa: BLE001 - this put only: its savepoint is undone
                        conn.execute("ROLLBACK TO put")
                        req.error = exc
                    finally:
                        conn.execute("RELEASE put")
                version = state.txn_version(conn)
            state.version = version
            fault("after_commit")
            self._gc.collect_locked()
