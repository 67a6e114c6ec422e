"""Garbage collection of blobs: unlink a blob once nothing can need it any more.

Blobs are files under ``blobs/`` or rows of ``inline_blobs`` (small content); one sha256
may be both, and collection removes both. A blob may be removed only when no ``files`` row
and no staged ingest references it (``catalog.is_referenced``), no put between installing
it and committing holds it (``hold``), and no pin is held at all (``Pins.held``; deletions
then wait in ``gc_pending``). At open, ``sweep_orphans`` removes blob files of puts killed before their
commit. Inline blobs need no sweep: one is written in the same transaction as the row that
references it, and the transaction that drops the last reference queues it in ``gc_pending``.

Callers hold the volume's lock around ``collect_locked``, ``queue_unless_used_locked`` and
``drop_dead_inline_locked`` (the last one inside their write transaction).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections import Counter
from collections.abc import Iterator

from . import catalog as cat
from . import inline
from .blobs import SHA256_RE
from .pins import Pins
from .space import disk_full_reason
from .state import VolumeState

log = logging.getLogger(__name__)

COLLECT_BATCH = 1000
"""Blobs settled per collection transaction."""


class BlobCollector:
    """Decides which blobs to unlink, and unlinks them."""

    def __init__(self, state: VolumeState, pins: Pins) -> None:
        self._state = state
        self._pins = pins
        self._inflight: Counter[str] = Counter()

    @contextlib.contextmanager
    def hold(self, sha256: str) -> Iterator[None]:
        """Keep collection away from a blob that is about to be referenced."""
        with self._state.lock:
            self._inflight[sha256] += 1
        try:
            yield
        finally:
            with self._state.lock:
                self._inflight[sha256] -= 1
                if self._inflight[sha256] <= 0:
                    del self._inflight[sha256]

    def queue_unless_used_locked(self, sha256: str) -> None:
        """After a failed commit: the installed blob may be nobody's; let collection decide."""
        conn = self._state.catalog.conn()
        if not conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                cat.queue_if_unreferenced(conn, [sha256])

    def drop_dead_inline_locked(self, conn: sqlite3.Connection) -> None:
        """Inside a write transaction: delete the inline blobs nothing references any more.

        Why here and not in ``collect_locked``: an inline row goes away atomically with the
        transaction that drops its last reference, so it needs no commit of its own; after
        a batch of overwrites, collection would otherwise cost a second transaction and
        WAL fsync. The ``gc_pending`` row stays only while a blob file of the same content
        exists (``collect_locked`` unlinks it after the commit). Deferred while a pin is
        held, like all collection.
        """
        if self._pins.held:
            return
        dead = [
            str(r[0])
            for r in conn.execute(
                "SELECT g.sha256 FROM gc_pending g JOIN inline_blobs b ON b.sha256 = g.sha256 "
                "WHERE NOT EXISTS (SELECT 1 FROM files f WHERE f.sha256 = g.sha256) "
                "AND NOT EXISTS (SELECT 1 FROM staged s WHERE s.sha256 = g.sha256)"
            )
        ]
        if not dead:
            return
        inline.delete(conn, dead)
        settled = [
            (sha,) for sha in dead
            if sha not in self._inflight and not self._state.blobs.exists(sha)
        ]
        conn.executemany("DELETE FROM gc_pending WHERE sha256 = ?", settled)

    def collect_locked(self, batch: int = COLLECT_BATCH) -> int:
        """Remove queued blobs nothing needs any more; deferred while any pin is held.

        Returns how many blob files were unlinked (inline rows go in the same pass). Each
        ``batch`` of them is one transaction (on a full disk, a small one fits where a large
        one does not)."""
        if self._pins.held:
            return 0
        state = self._state
        conn = state.catalog.conn()
        removed = 0
        last = ""
        while True:
            shas = [
                r[0]
                for r in conn.execute(
                    "SELECT sha256 FROM gc_pending WHERE sha256 > ? ORDER BY sha256 LIMIT ?",
                    (last, batch),
                )
            ]
            if not shas:
                self._reclaim_locked(conn)
                return removed
            last = shas[-1]
            done = []
            dead = []
            for sha in shas:
                if sha in self._inflight:
                    continue
                if not cat.is_referenced(conn, sha):
                    dead.append(sha)
                    if state.blobs.unlink(sha):
                        removed += 1
                done.append(sha)
            if done:
                with state.write_txn() as wconn:
                    inline.delete(wconn, dead)
                    wconn.executemany(
                        "DELETE FROM gc_pending WHERE sha256 = ?", [(s,) for s in done]
                    )

    def _reclaim_locked(self, conn: sqlite3.Connection) -> None:
        """Pages of deleted inline blobs back to the file system, if the catalog can give
        them (a catalog of an older release cannot: SQLite reuses them for new content).
        Best effort on a full disk: moving pages takes room in the WAL, and what is left
        free is given back by a later collection."""
        if not self._state.catalog.reclaims:
            return
        try:
            pages = cat.reclaim(conn)
        except sqlite3.Error as exc:
            if disk_full_reason(exc) is None:
                raise
            log.warning("volume %s: no room yet to give freed catalog pages back (%s)", self._state.name, exc)
            return
        if pages:
            log.debug("volume %s: %d freed catalog pages given back", self._state.name, pages)

    def sweep_orphans(self) -> int:
        """At open: unlink blobs no row references (a put killed before its commit)."""
        state = self._state
        conn = state.catalog.conn()
        removed = 0
        for name in state.blobs.iter_all():
            if not SHA256_RE.match(name):
                log.warning("volume %s: stray file in blobs/: %s", state.name, name)
                continue
            if not cat.is_referenced(conn, name) and state.blobs.unlink(name):
                removed += 1
        return removed
