"""The state every part of a volume shares: its catalog, blobs, write lock and cached meta.

Why one object: the journal, puts, namespace edits, replica ingest and garbage collection
all commit through the same SQLite catalog under the same lock, and all must see the same
cached ``version``/``epoch``/``journal_floor``/``role`` (the catalog's ``meta`` rows, kept in
memory so reading them costs no query). Each part gets this object in its constructor.

Rules: a write transaction (``write_txn``) is only opened with ``lock`` held, and the cached
values are only changed with ``lock`` held, right after the transaction that wrote them
committed. Reads (``read_txn``, ``stream``) need no lock.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from namespace.errors import Conflict

from . import catalog as cat
from .blobs import BlobStore

T = TypeVar("T")


class ConnStream(Iterator[T]):
    """An iterator over one read transaction on a private connection; closes it when done."""

    def __init__(
        self, catalog: cat.Catalog, conn: sqlite3.Connection, it: Iterator[T]
    ) -> None:
        self._cat = catalog
        self._conn: sqlite3.Connection | None = conn
        self._it = it

    def __iter__(self) -> ConnStream[T]:
        return self

    def __next__(self) -> T:
        if self._conn is None:
            raise StopIteration
        try:
            return next(self._it)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        close_it = getattr(self._it, "close", None)  # generators have one; plain iterators not
        if close_it is not None:
            with contextlib.suppress(Exception):
                close_it()
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("COMMIT")
        with contextlib.suppress(sqlite3.Error):
            self._cat.release(conn)

    def __del__(self) -> None:
        self.close()


class VolumeState:
    """One volume's catalog, blob store, write lock and the catalog's meta values."""

    def __init__(self, root: Path, name: str) -> None:
        """No I/O here: ``VolumeStorage.open`` creates the layout and calls ``load_meta``."""
        self.root = root
        self.name = name
        self.blobs = BlobStore(root)
        self.catalog = cat.Catalog(root / "catalog.sqlite")
        self.lock = threading.Lock()
        self.version = 0
        self.epoch = 1
        self.floor = 0
        self.role = "primary"

    def load_meta(self) -> None:
        meta = cat.read_meta(self.catalog.conn())
        self.version = int(meta["version"])
        self.epoch = int(meta["epoch"])
        self.floor = int(meta["journal_floor"])
        self.role = meta["role"]

    @contextlib.contextmanager
    def write_txn(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT on this thread's connection; caller holds ``lock``.
        A body that rolled back itself (a change that turned out to be none) is not
        committed."""
        conn = self.catalog.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            if conn.in_transaction:
                conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def read_txn(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for a few short queries on this thread's connection."""
        conn = self.catalog.conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def stream(self, setup: Callable[[sqlite3.Connection], Iterator[T]]) -> Iterator[T]:
        """Run ``setup`` (checks happen now) in a read transaction that the stream owns."""
        conn = self.catalog.private()
        try:
            conn.execute("BEGIN")
            conn.execute("SELECT 1 FROM meta LIMIT 1").fetchone()  # the snapshot starts now
            it = setup(conn)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self.catalog.release(conn)
            raise
        return ConnStream(self.catalog, conn, it)

    @staticmethod
    def txn_version(conn: sqlite3.Connection) -> int:
        """The version as the open transaction sees it (the cache may lag inside a batch)."""
        row = conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        return int(row[0])

    def next_version(self, conn: sqlite3.Connection, version: int | None) -> int:
        """Current + 1, or exactly ``version`` (replicas), which must be above current."""
        current = self.txn_version(conn)
        if version is None:
            return current + 1
        if version <= current:
            raise Conflict(
                f"volume {self.name!r}: cannot apply version {version}, already at {current}"
            )
        return version
