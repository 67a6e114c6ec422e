"""Replica ingest: blobs arriving ahead of the version that uses them, then that version.

A replica (or a hydrating owner) first stores each blob with ``ingest_blob`` (marked
``staged``, so neither the sweep at open nor collection takes it), then applies one primary
version's net changes (``apply_changes``) or replaces the whole state (``reset_to``) in ONE
transaction. A file whose blob is missing (neither inline nor a file) aborts the whole
transaction: nothing changes.

Content up to ``inline.INLINE_MAX`` is staged as an inline row, in the same transaction as
its ``staged`` row, as the put path stores it: a mirror pass of many small files then costs
a replica one small transaction per blob instead of a temp file, its fsync, a rename and a
directory fsync each. Staging skips the WAL fsync (a staged blob lost in a crash only costs
a re-copy: the sender asks ``Lacks`` again); the apply that uses it commits with
``synchronous=FULL``, and that fsync of the WAL covers every frame written before it.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import sqlite3
import time
from collections.abc import Iterable

from namespace.errors import FileNotFound, InvalidInput

from . import catalog as cat
from . import inline
from .blobs import SHA256_RE
from .checks import check_path, check_sha256
from .gc import BlobCollector
from .models import FileMeta
from .state import VolumeState

log = logging.getLogger(__name__)


class ReplicaIngest:
    """Blob ingest and whole-version application for replicas and hydration."""

    def __init__(self, state: VolumeState, gc: BlobCollector) -> None:
        self._state = state
        self._gc = gc

    def ingest_blob(self, chunks: Iterable[bytes | memoryview], expect_sha256: str | None = None) -> str:
        """Stage a blob for a coming ``reset_to``/``apply_changes``; return its sha256.

        The blob is marked staged, so the sweep at open keeps it until a reset or apply
        makes use of it (an interrupted replica sync does not lose what arrived). Inline-sized
        content is gathered in memory and staged as an inline row; larger content streams to
        a blob file.
        """
        rest = iter(chunks)
        head: list[bytes | memoryview] = []
        size = 0
        for chunk in rest:
            head.append(chunk)
            size += len(chunk)
            if size > inline.INLINE_MAX:
                return self._ingest_file(itertools.chain(head, rest), expect_sha256)
        data = b"".join(head)
        sha = hashlib.sha256(data).hexdigest()
        check_sha256("a blob", expect_sha256, sha)
        self._stage(sha, data)
        return sha

    def _ingest_file(self, chunks: Iterable[bytes | memoryview], expect_sha256: str | None) -> str:
        temp = self._state.blobs.new_temp()
        try:
            for chunk in chunks:
                temp.write(chunk)
            sha = temp.finish()
            check_sha256("a blob", expect_sha256, sha)
            with self._gc.hold(sha):
                self._state.blobs.install(temp, sha)
                self._stage(sha, None)
            return sha
        finally:
            temp.discard()

    def _stage(self, sha256: str, data: bytes | None) -> None:
        """The ``staged`` row, and the inline row when ``data`` is given, in one transaction
        under the volume's lock (collection, which holds it, never sees one without the
        other)."""
        state = self._state
        with state.lock:
            conn = state.catalog.conn()
            # Losing these rows in a crash only costs a re-copy: skip the WAL fsync.
            conn.execute("PRAGMA synchronous=NORMAL")
            try:
                with state.write_txn() as txn:
                    if data is not None:
                        inline.store_many(txn, [(sha256, data)])
                    txn.execute(
                        "INSERT OR REPLACE INTO staged(sha256, ts) VALUES (?, ?)",
                        (sha256, time.time()),
                    )
            finally:
                conn.execute("PRAGMA synchronous=FULL")

    def has_blob(self, sha256: str) -> bool:
        """Whether a blob with this content is stored, inline or as a file (lets a mirror
        skip sending it)."""
        return self._stored(self._state.catalog.conn(), sha256)

    def holds_intact(self, sha256: str) -> bool:
        """Whether this blob is stored *and* its bytes still hash to its name (``gns mirror
        verify --deep`` of a cluster target; a disk or a hand can change a file under us).
        A blob file that no longer matches is set aside, so no read serves it again and the
        repair that follows can install a good copy; a mismatching inline row is dropped."""
        if not SHA256_RE.match(sha256):
            return False
        state = self._state
        data = inline.load(state.catalog.conn(), sha256)
        if data is not None:
            if hashlib.sha256(data).hexdigest() == sha256:
                return True
            with state.lock, state.write_txn() as txn:
                inline.delete(txn, [sha256])
            log.error("volume %s: inline blob %s did not match its sha256: dropped",
                      state.name, sha256)
            return False
        try:
            f = state.blobs.open(sha256)
        except FileNotFoundError:
            return False
        with f:
            digest = hashlib.sha256()
            while block := f.read(1 << 20):
                digest.update(block)
        if digest.hexdigest() == sha256:
            return True
        with state.lock:  # not while a put or collection moves this name
            aside = state.blobs.set_aside(sha256)
        log.error("volume %s: blob %s did not match its sha256: set aside at %s",
                  state.name, sha256, aside)
        return False

    def _stored(self, conn: sqlite3.Connection, sha256: str) -> bool:
        if not SHA256_RE.match(sha256):
            return False
        return inline.exists(conn, sha256) or self._state.blobs.exists(sha256)

    def apply_changes(
        self,
        files: Iterable[FileMeta],
        deleted: Iterable[str],
        version: int,
        dirs: Iterable[tuple[str, int, float]] | None = None,
        *,
        collect: bool = True,
    ) -> int:
        """Replicas: apply one primary version's net changes in one transaction.

        Blobs must have been stored (``ingest_blob``) first. Deletions of paths that are
        already absent are ignored. Journal rows are written, as for local mutations.
        ``collect`` False leaves the blobs it freed to the caller's collection.
        """
        now = time.time()
        with self._state.lock:
            with self._state.write_txn() as conn:
                v = self._state.next_version(conn, version)
                for path in deleted:
                    check_path(path)
                    if cat.get_file(conn, path) is not None:
                        cat.delete_file(conn, path, now, v)
                    elif cat.is_dir(conn, path):
                        cat.delete_tree(conn, path, now, v)
                for f in files:
                    check_path(f.path)
                    self._require_blob(conn, f)
                    cat.remove_dir(conn, f.path, now, v)  # a directory renamed away, then a file
                    cat.check_put_shape(conn, f.path)
                    cat.put_file(conn, f.path, f.size, f.sha256, f.mtime, v, f.mode)
                if dirs is not None:
                    replace_dirs(conn, dirs, now, v)
                conn.execute("DELETE FROM staged WHERE sha256 IN (SELECT sha256 FROM files)")
                cat.set_meta(conn, "version", v)
            self._state.version = v
            if collect:
                self._gc.collect_locked()
        return v

    def reset_to(
        self,
        files: Iterable[FileMeta],
        version: int,
        dirs: Iterable[tuple[str, int, float]] | None = None,
    ) -> None:
        """Make the state exactly ``files`` at ``version`` (journal emptied, floor = version).

        For replicas and hydration, after the blobs were stored with ``ingest_blob``. A file
        whose blob is missing, or a path that is both a file and a directory, aborts the
        whole reset (nothing changes).
        """
        with self._state.lock:
            with self._state.write_txn() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO gc_pending(sha256) "
                    "SELECT DISTINCT sha256 FROM files UNION SELECT sha256 FROM staged"
                )
                conn.execute("DELETE FROM files")
                conn.execute("DELETE FROM staged")
                conn.execute("DELETE FROM journal")
                for f in files:
                    check_path(f.path)
                    if f.path == "":
                        raise InvalidInput("reset_to: a file cannot be the volume root")
                    self._require_blob(conn, f)
                    try:
                        conn.execute(
                            "INSERT INTO files(path, size, sha256, mtime, version, mode) "
                            "VALUES (?, ?, ?, ?, ?, ?)",
                            (f.path, f.size, f.sha256, f.mtime, min(f.version, version), f.mode),
                        )
                    except sqlite3.IntegrityError as exc:
                        raise InvalidInput(f"reset_to: duplicate path {f.path!r}") from exc
                bad = conn.execute(
                    "SELECT a.path FROM files a WHERE EXISTS (SELECT 1 FROM files b "
                    "WHERE b.path >= a.path || '/' AND b.path < a.path || '0') LIMIT 1"
                ).fetchone()
                if bad is not None:
                    raise InvalidInput(f"reset_to: {bad[0]!r} is both a file and a directory")
                conn.execute("DELETE FROM dirs")
                for dpath, dmode, dmtime in dirs or ():
                    check_path(dpath)
                    if dpath and cat.get_file(conn, dpath) is None:
                        conn.execute(
                            "INSERT OR REPLACE INTO dirs(path, mode, mtime) VALUES (?, ?, ?)",
                            (dpath, dmode, dmtime),
                        )
                cat.set_meta(conn, "version", version)
                cat.set_meta(conn, "journal_floor", version)
            self._state.version = version
            self._state.floor = version
            self._gc.collect_locked()

    def _require_blob(self, conn: sqlite3.Connection, f: FileMeta) -> None:
        if not self._stored(conn, f.sha256):
            raise FileNotFound(
                f"volume {self._state.name!r}: no blob {f.sha256} for {f.path!r}; ingest it first"
            )


def replace_dirs(
    conn: sqlite3.Connection, dirs: Iterable[tuple[str, int, float]], now: float, v: int
) -> None:
    """Make the explicit directories exactly ``dirs`` (replicas), journaling differences."""
    want = {p: (m, t) for p, m, t in dirs if p and cat.get_file(conn, p) is None}
    have = {p: (m, t) for p, m, t in cat.iter_dirs(conn)}
    for p in have.keys() - want.keys():
        cat.remove_dir(conn, p, now, v)
    for p, (m, t) in want.items():
        if have.get(p) != (m, t):
            check_path(p)
            cat.make_dir(conn, p, m, t, v)

