"""One volume on local disk: atomic durable puts, streaming reads, a change journal, pins.

``VolumeStorage`` ties the blob files (``blobs.py``) to the SQLite catalog (``catalog.py``):

* a put streams into a temp file while hashing, fsyncs it, renames it to
  ``blobs/<sha[:2]>/<sha>`` (directory fsynced), and only then commits one SQLite transaction
  (files row, journal row, version + 1). A crash leaves the old or the new file, never a part;
  leftovers (temp files, blobs no row references) are swept at the next open;
* a read resolves the path to a blob and opens it before returning, so a concurrent replace
  or delete never tears it (blobs are immutable; POSIX keeps an open inode alive);
* a blob is unlinked only once no ``files`` row, no staged ingest and no in-flight put needs
  it, and not at all while a pin is held (deletions wait in ``gc_pending``).

Writers are serialised by one lock around the commit transaction only; the streaming of
several puts, and all reads, run in parallel. One process owns a volume directory at a time
(an ``flock`` on ``<root>/lock`` enforces it).

Set ``GNS_STORAGE_FAULT`` to ``before_install``, ``after_install`` or ``after_commit`` to make
the process SIGKILL itself at that point of a put (crash tests only).

This module must never touch etcd, the network, or the gRPC layer; never hold a file's
content in memory; never rewrite a blob in place; never let a failed put change anything
visible.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self, TypeVar

from namespace.errors import Conflict, FileNotFound, InvalidInput, StaleEpoch

from . import catalog as cat
from .blobs import SHA256_RE, BlobStore, TempBlob, fsync_dir
from .group_commit import GroupCommitter, Request
from .models import DirEntry, FileMeta, JournalEntry

log = logging.getLogger(__name__)

T = TypeVar("T")

FAULT_ENV = "GNS_STORAGE_FAULT"
ROLES = ("primary", "replica")
DIVERGED_DIR = ".gns/diverged"


def _fault(point: str) -> None:
    """Crash-test hook: SIGKILL this process at ``point`` when ``GNS_STORAGE_FAULT`` says so."""
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def check_path(path: str) -> str:
    """Refuse a volume-relative path that the caller should have normalised."""
    if not isinstance(path, str):
        raise InvalidInput(f"path must be a string, not {type(path).__name__}")
    if path == "":
        return path
    if path.startswith("/") or path.endswith("/") or "//" in path or "\x00" in path:
        raise InvalidInput(f"malformed volume path {path!r}")
    for part in path.split("/"):
        if part in (".", ".."):
            raise InvalidInput(f"malformed volume path {path!r}: '{part}' component")
    return path


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


class BlobReader:
    """Chunks of one open blob between ``start`` and ``end``; the descriptor is already open."""

    def __init__(self, f: BinaryIO, start: int, end: int, chunk_size: int) -> None:
        self._f: BinaryIO | None = f
        self._pos = start
        self._end = end
        self._chunk = chunk_size
        if start:
            f.seek(start)

    def __iter__(self) -> BlobReader:
        return self

    def __next__(self) -> bytes:
        f = self._f
        if f is None:
            raise StopIteration
        remaining = self._end - self._pos
        if remaining <= 0:
            self.close()
            raise StopIteration
        data = f.read(min(self._chunk, remaining))
        if not data:
            self.close()
            raise StopIteration
        self._pos += len(data)
        return data

    def close(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            f.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class _ConnStream(Iterator[T]):
    """An iterator over one read transaction on a private connection; closes it when done."""

    def __init__(self, catalog: cat.Catalog, conn: sqlite3.Connection, it: Iterator[T]) -> None:
        self._cat = catalog
        self._conn: sqlite3.Connection | None = conn
        self._it = it

    def __iter__(self) -> _ConnStream[T]:
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
        with contextlib.suppress(Exception):
            self._it.close()  # type: ignore[attr-defined]
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("COMMIT")
        with contextlib.suppress(sqlite3.Error):
            self._cat.release(conn)

    def __del__(self) -> None:
        self.close()


class PutWriter:
    """Streams one file's new content; nothing is visible until ``commit``."""

    def __init__(self, volume: VolumeStorage, path: str, temp: TempBlob) -> None:
        self._volume = volume
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
            _fault("before_install")
            return self._volume._commit_put(
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


class VolumeStorage:
    """A volume's files, journal and metadata under one directory ``root``."""

    def __init__(self, root: Path, name: str) -> None:
        """No I/O here: use ``VolumeStorage.open``."""
        self.root = root
        self.name = name
        self._blobs = BlobStore(root)
        self._cat = cat.Catalog(root / "catalog.sqlite")
        self._lock = threading.Lock()
        self._inflight: Counter[str] = Counter()
        self._puts: GroupCommitter[sqlite3.Connection, FileMeta] = GroupCommitter(
            self._run_put_batch)
        self._pins: dict[int, int] = {}
        self._pin_ids = itertools.count(1)
        self._version = 0
        self._epoch = 1
        self._floor = 0
        self._role = "primary"
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(
        cls,
        root: Path,
        name: str,
        *,
        create: bool = False,
        epoch: int = 1,
        role: str = "primary",
    ) -> VolumeStorage:
        """Open (or with ``create``, create) the volume at ``root``; recover after a crash."""
        root = Path(root)
        if role not in ROLES:
            raise InvalidInput(f"volume role must be one of {ROLES}, not {role!r}")
        if not (root / "catalog.sqlite").is_file():
            if not create:
                raise FileNotFound(f"volume {name!r} has no storage at {root}")
            root.mkdir(parents=True, exist_ok=True)
        vol = cls(root, name)
        try:
            vol._open(epoch=epoch, role=role)
        except BaseException:
            vol.close()
            raise
        return vol

    def _open(self, *, epoch: int, role: str) -> None:
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Conflict(f"volume {self.name!r} at {self.root} is open in another process") from None
        self._lock_fd = fd
        self._blobs.ensure_layout()
        self._cat.init_schema(epoch=epoch, role=role)
        fsync_dir(self.root)
        self._load_meta(self._cat.conn())
        swept = self._blobs.sweep_tmp()
        orphans = self._sweep_orphans()
        with self._lock:
            self._gc_locked()
        if swept or orphans:
            log.info(
                "volume %s: recovered at open: %d temp files, %d unreferenced blobs removed",
                self.name,
                swept,
                orphans,
            )

    def close(self) -> None:
        """Close every catalog connection and release the directory lock."""
        self._cat.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load_meta(self, conn: sqlite3.Connection) -> None:
        meta = cat.read_meta(conn)
        self._version = int(meta["version"])
        self._epoch = int(meta["epoch"])
        self._floor = int(meta["journal_floor"])
        self._role = meta["role"]

    # ------------------------------------------------------------------ metadata

    @property
    def version(self) -> int:
        """Committed mutations so far (0 = a new, empty volume)."""
        return self._version

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def role(self) -> str:
        return self._role

    @property
    def journal_floor(self) -> int:
        """Oldest version from which the journal still describes every change."""
        return self._floor

    def set_epoch(self, epoch: int) -> None:
        """Record a new owner epoch; epochs never go down."""
        with self._lock:
            if epoch < self._epoch:
                raise StaleEpoch(
                    f"volume {self.name!r}: epoch {epoch} is older than current {self._epoch}"
                )
            with self._write_txn() as conn:
                cat.set_meta(conn, "epoch", epoch)
            self._epoch = epoch

    def set_role(self, role: str) -> None:
        if role not in ROLES:
            raise InvalidInput(f"volume role must be one of {ROLES}, not {role!r}")
        with self._lock:
            with self._write_txn() as conn:
                cat.set_meta(conn, "role", role)
            self._role = role

    # ------------------------------------------------------------------ transactions

    @contextlib.contextmanager
    def _write_txn(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT on this thread's connection; caller holds the lock."""
        conn = self._cat.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _read_txn(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for a few short queries on this thread's connection."""
        conn = self._cat.conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def _stream(self, setup: Callable[[sqlite3.Connection], Iterator[T]]) -> Iterator[T]:
        """Run ``setup`` (checks happen now) in a read transaction that the stream owns."""
        conn = self._cat.private()
        try:
            conn.execute("BEGIN")
            conn.execute("SELECT 1 FROM meta LIMIT 1").fetchone()  # the snapshot starts now
            it = setup(conn)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._cat.release(conn)
            raise
        return _ConnStream(self._cat, conn, it)

    @staticmethod
    def _txn_version(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        return int(row[0])

    def _next_version(self, conn: sqlite3.Connection, version: int | None) -> int:
        current = self._txn_version(conn)
        if version is None:
            return current + 1
        if version <= current:
            raise Conflict(
                f"volume {self.name!r}: cannot apply version {version}, already at {current}"
            )
        return version

    @contextlib.contextmanager
    def _hold_blob(self, sha256: str) -> Iterator[None]:
        """Keep GC away from a blob that is about to be referenced."""
        with self._lock:
            self._inflight[sha256] += 1
        try:
            yield
        finally:
            with self._lock:
                self._inflight[sha256] -= 1
                if self._inflight[sha256] <= 0:
                    del self._inflight[sha256]

    # ------------------------------------------------------------------ writes

    def writer(self, path: str) -> PutWriter:
        """Start a put; a path where a directory is, or below a file, fails now."""
        check_path(path)
        cat.check_put_shape(self._cat.conn(), path)
        return PutWriter(self, path, self._blobs.new_temp())

    def put_bytes(self, path: str, data: bytes, **kw: object) -> FileMeta:
        with self.writer(path) as w:
            w.write(data)
            return w.commit(**kw)  # type: ignore[arg-type]

    def _commit_put(
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
        if mtime is None:
            mtime = time.time()
        if mode is not None:
            mode = _check_mode(mode)
        try:
            with self._hold_blob(sha256):
                self._blobs.install(temp, sha256)
                _fault("after_install")

                def apply(conn: sqlite3.Connection) -> FileMeta:
                    cat.check_put_shape(conn, path)
                    if if_absent and cat.get_file(conn, path) is not None:
                        raise Conflict(f"{path!r} exists")
                    v = self._next_version(conn, version)
                    cat.put_file(conn, path, size, sha256, mtime, v, mode)
                    cat.set_meta(conn, "version", v)
                    got = cat.get_file(conn, path)
                    assert got is not None
                    return got

                try:
                    meta = self._puts.submit(apply)
                except BaseException:
                    with self._lock:
                        self._queue_unless_used_locked(sha256)
                    raise
        except BaseException:
            with self._lock:  # the refused blob is no longer held: collect it
                self._gc_locked()
            raise
        assert meta is not None
        return meta

    def _run_put_batch(self, batch: list[Request[sqlite3.Connection, FileMeta]]) -> None:
        """The puts waiting together (``group_commit``): one transaction, one savepoint each,
        so one fsync makes them all durable and a failing put fails alone."""
        with self._lock:
            with self._write_txn() as conn:
                for req in batch:
                    conn.execute("SAVEPOINT put")
                    try:
                        req.result = req.apply(conn)
                    except Exception as exc:  # noqa: BLE001 - this put only: its savepoint is undone
                        conn.execute("ROLLBACK TO put")
                        req.error = exc
                    finally:
                        conn.execute("RELEASE put")
                version = self._txn_version(conn)
            self._version = version
            _fault("after_commit")
            self._gc_locked()

    def delete(
        self,
        path: str,
        *,
        recursive: bool = False,
        version: int | None = None,
        keep_parent: bool = False,
    ) -> int:
        """Delete a file, or with ``recursive`` a directory's files as ONE version.

        ``keep_parent`` (POSIX ``unlink``): a parent directory that this leaves empty stays,
        as an explicit directory, instead of vanishing with its last file."""
        check_path(path)
        now = time.time()
        with self._lock:
            with self._write_txn() as conn:
                v = self._next_version(conn, version)
                if cat.get_file(conn, path) is not None:
                    cat.delete_file(conn, path, now, v)
                    if keep_parent:
                        _keep_parent(conn, path, now, v)
                elif cat.is_dir(conn, path):
                    if not recursive:
                        shown = path or "/"
                        raise InvalidInput(f"{shown!r} is a directory; use -r")
                    removed = cat.delete_tree(conn, path, now, v)
                    if path:
                        removed += cat.remove_dir(conn, path, now, v)
                    if removed == 0:
                        return self._version  # the empty root: nothing to commit
                else:
                    raise FileNotFound(f"no such file or directory: {path!r}")
                cat.set_meta(conn, "version", v)
            self._version = v
            self._gc_locked()
        return v

    def ingest_blob(self, chunks: Iterable[bytes], expect_sha256: str | None = None) -> str:
        """Store a blob durably for a coming ``reset_to``/``apply_changes``; return its sha256.

        The blob is marked staged, so the sweep at open keeps it until a reset or apply
        makes use of it (an interrupted replica sync does not lose what arrived).
        """
        temp = self._blobs.new_temp()
        try:
            for chunk in chunks:
                temp.write(chunk)
            sha = temp.finish()
            if expect_sha256 is not None and expect_sha256.lower() != sha:
                raise InvalidInput(f"sha256 mismatch: expected {expect_sha256}, got {sha}")
            with self._hold_blob(sha):
                self._blobs.install(temp, sha)
                conn = self._cat.conn()
                # Losing this row in a crash only costs a re-copy: skip the WAL fsync.
                conn.execute("PRAGMA synchronous=NORMAL")
                try:
                    conn.execute(
                        "INSERT OR REPLACE INTO staged(sha256, ts) VALUES (?, ?)",
                        (sha, time.time()),
                    )
                finally:
                    conn.execute("PRAGMA synchronous=FULL")
            return sha
        finally:
            temp.discard()

    def has_blob(self, sha256: str) -> bool:
        """Whether a blob with this content is on disk (lets a mirror skip sending it)."""
        return bool(SHA256_RE.match(sha256)) and self._blobs.exists(sha256)

    def apply_changes(
        self,
        files: Iterable[FileMeta],
        deleted: Iterable[str],
        version: int,
        dirs: Iterable[tuple[str, int, float]] | None = None,
    ) -> int:
        """Replicas: apply one primary version's net changes in one transaction.

        Blobs must have been stored (``ingest_blob``) first. Deletions of paths that are
        already absent are ignored. Journal rows are written, as for local mutations.
        """
        now = time.time()
        with self._lock:
            with self._write_txn() as conn:
                v = self._next_version(conn, version)
                for path in deleted:
                    check_path(path)
                    if cat.get_file(conn, path) is not None:
                        cat.delete_file(conn, path, now, v)
                    elif cat.is_dir(conn, path):
                        cat.delete_tree(conn, path, now, v)
                for f in files:
                    check_path(f.path)
                    self._require_blob(f)
                    cat.remove_dir(conn, f.path, now, v)  # a directory renamed away, then a file
                    cat.check_put_shape(conn, f.path)
                    cat.put_file(conn, f.path, f.size, f.sha256, f.mtime, v, f.mode)
                if dirs is not None:
                    _replace_dirs(conn, dirs, now, v)
                conn.execute("DELETE FROM staged WHERE sha256 IN (SELECT sha256 FROM files)")
                cat.set_meta(conn, "version", v)
            self._version = v
            self._gc_locked()
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
        with self._lock:
            with self._write_txn() as conn:
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
                    self._require_blob(f)
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
            self._version = version
            self._floor = version
            self._gc_locked()

    def _require_blob(self, f: FileMeta) -> None:
        if not SHA256_RE.match(f.sha256) or not self._blobs.exists(f.sha256):
            raise FileNotFound(
                f"volume {self.name!r}: no blob {f.sha256} for {f.path!r}; ingest it first"
            )

    def diverge(self, after_version: int, epoch: int) -> list[str]:
        """Copy every file changed after ``after_version`` to ``.gns/diverged/<epoch>/``.

        The copies are ordinary files sharing the same blobs (no data is copied) and are
        committed as ONE new version. Files already under ``.gns/`` are not copied again;
        deleted files have no content to keep. Returns the new paths.
        """
        out: list[str] = []
        with self._lock:
            with self._write_txn() as conn:
                current = self._txn_version(conn)
                floor = int(cat.read_meta(conn)["journal_floor"])
                if after_version < floor:
                    raise Conflict(
                        f"volume {self.name!r}: journal truncated at {floor}, "
                        f"cannot tell what changed after {after_version}"
                    )
                if after_version > current:
                    raise InvalidInput(
                        f"volume {self.name!r}: version {after_version} is in the future "
                        f"(current {current})"
                    )
                changed = [
                    row
                    for row in cat.net_changes(conn, after_version, current)
                    if row[1] == "put" and not row[0].startswith(".gns/")
                ]
                if not changed:
                    return []
                v = current + 1
                for path, _op, size, sha, mtime, _ver, _existed, mode in changed:
                    target = f"{DIVERGED_DIR}/{epoch}/{path}"
                    cat.check_put_shape(conn, target)
                    cat.put_file(conn, target, size, sha, mtime, v, mode)
                    out.append(target)
                cat.set_meta(conn, "version", v)
            self._version = v
        log.warning(
            "volume %s: kept %d diverged files aside under %s/%d/",
            self.name,
            len(out),
            DIVERGED_DIR,
            epoch,
        )
        return out

    # ------------------------------------------------------------------ namespace edits

    def _mutate(self, change: Callable[[sqlite3.Connection, int], bool], version: int | None) -> int:
        """Run ``change(conn, v)`` as ONE new version; it returns False to commit nothing."""
        with self._lock:
            with self._write_txn() as conn:
                v = self._next_version(conn, version)
                if not change(conn, v):
                    conn.execute("ROLLBACK")
                    return self._version
                cat.set_meta(conn, "version", v)
            self._version = v
            self._gc_locked()
        return v

    def rename(self, src: str, dst: str, *, version: int | None = None) -> int:
        """Move a file or a directory (with everything below it) to ``dst`` as ONE version.

        POSIX rules: a file replaces a file; a directory replaces only an empty directory;
        nothing moves below itself. Journal rows carry kind ``rename`` (and the put row the
        old path), so followers see a rename and mirrors need no new bytes."""
        check_path(src)
        check_path(dst)
        if not src or not dst:
            raise InvalidInput("cannot rename the root of a volume")
        if dst.startswith(src + "/"):
            raise InvalidInput(f"cannot move {src!r} below itself ({dst!r})")
        now = time.time()

        def change(conn: sqlite3.Connection, v: int) -> bool:
            if src == dst:
                if cat.get_file(conn, src) is None and not cat.is_dir(conn, src):
                    raise FileNotFound(f"no such file or directory: {src!r}")
                return False
            anc = cat.file_ancestor(conn, dst)
            if anc is not None:
                raise InvalidInput(f"cannot move to {dst!r}: {anc!r} is a file")
            f = cat.get_file(conn, src)
            if f is not None:
                if cat.is_dir(conn, dst):
                    raise InvalidInput(f"cannot move file {src!r} over directory {dst!r}")
                _move_file(conn, f, dst, v, now)
            elif cat.is_dir(conn, src):
                if cat.get_file(conn, dst) is not None:
                    raise InvalidInput(f"cannot move directory {src!r} over file {dst!r}")
                if cat.has_below(conn, dst):
                    raise Conflict(f"cannot move {src!r} to {dst!r}: directory not empty")
                cat.remove_dir(conn, dst, now, v)
                lo, hi = cat.below(src)
                moved = [
                    cat.row_meta(r)
                    for r in conn.execute(
                        f"SELECT {cat.FILE_COLS} FROM files WHERE path >= ? AND path < ? "
                        "ORDER BY path",
                        (lo, hi),
                    ).fetchall()
                ]
                for m in moved:
                    _move_file(conn, m, dst + m.path[len(src):], v, now)
                dirs = conn.execute(
                    "SELECT path, mode, mtime FROM dirs WHERE path = ? OR "
                    "(path >= ? AND path < ?) ORDER BY path",
                    (src, lo, hi),
                ).fetchall()
                for dpath, dmode, dmtime in dirs:
                    cat.remove_dir(conn, dpath, now, v)
                    cat.make_dir(conn, dst + dpath[len(src):], dmode, dmtime, v)
            else:
                raise FileNotFound(f"no such file or directory: {src!r}")
            _keep_parent(conn, src, now, v)
            return True

        return self._mutate(change, version)

    def mkdir(
        self, path: str, *, mode: int = 0o755, mtime: float | None = None,
        version: int | None = None,
    ) -> int:
        """Make an (empty) explicit directory; it persists until ``rmdir``."""
        check_path(path)
        mode = _check_mode(mode)
        if not path:
            raise Conflict("the volume root exists")

        def change(conn: sqlite3.Connection, v: int) -> bool:
            if cat.get_file(conn, path) is not None or cat.is_dir(conn, path):
                raise Conflict(f"{path!r} exists")
            anc = cat.file_ancestor(conn, path)
            if anc is not None:
                raise InvalidInput(f"cannot make {path!r}: {anc!r} is a file")
            cat.make_dir(conn, path, mode, time.time() if mtime is None else mtime, v)
            return True

        return self._mutate(change, version)

    def rmdir(self, path: str, *, version: int | None = None) -> int:
        """Remove an empty directory (POSIX ``rmdir``)."""
        check_path(path)
        if not path:
            raise InvalidInput("cannot remove the root of a volume")
        now = time.time()

        def change(conn: sqlite3.Connection, v: int) -> bool:
            if cat.get_file(conn, path) is not None:
                raise InvalidInput(f"{path!r} is not a directory")
            if cat.has_below(conn, path):
                raise Conflict(f"directory {path!r} is not empty")
            if not cat.remove_dir(conn, path, now, v):
                raise FileNotFound(f"no such directory: {path!r}")
            return True

        return self._mutate(change, version)

    def set_attrs(
        self, path: str, *, mode: int | None = None, mtime: float | None = None,
        version: int | None = None,
    ) -> int:
        """``chmod`` and/or ``utimens``: new mode bits or mtime, content untouched, ONE version.

        A directory that gets attributes becomes explicit (it keeps them while empty)."""
        check_path(path)
        if mode is not None:
            mode = _check_mode(mode)
        if mode is None and mtime is None:
            raise InvalidInput("set_attrs needs a mode or an mtime")

        def change(conn: sqlite3.Connection, v: int) -> bool:
            f = cat.get_file(conn, path) if path else None
            if f is not None:
                cat.put_file(
                    conn, path, f.size, f.sha256, f.mtime if mtime is None else mtime, v,
                    f.mode if mode is None else mode,
                    kind="chmod" if mtime is None else "utime",
                )
                return True
            if not path:
                return False  # the volume root has fixed attributes
            if not cat.is_dir(conn, path):
                raise FileNotFound(f"no such file or directory: {path!r}")
            old_mode, old_mtime = cat.get_dir(conn, path) or (cat.DEFAULT_DIR_MODE, time.time())
            cat.make_dir(
                conn, path, old_mode if mode is None else mode,
                old_mtime if mtime is None else mtime, v, kind="dirattr",
            )
            return True

        return self._mutate(change, version)

    def dirs(self) -> list[tuple[str, int, float]]:
        """Every explicit directory as (path, mode, mtime): what a cluster replica mirrors."""
        with self._read_txn() as conn:
            return [(str(p), int(m), float(t)) for p, m, t in cat.iter_dirs(conn)]

    # ------------------------------------------------------------------ reads

    def stat(self, path: str) -> FileMeta | DirEntry:
        check_path(path)
        if path == "":
            return DirEntry(name="", type="dir", size=0)
        with self._read_txn() as conn:
            meta = cat.get_file(conn, path)
            if meta is not None:
                return meta
            explicit = cat.get_dir(conn, path)
            if explicit is not None:
                mode, mtime = explicit
                return DirEntry(name=_basename(path), type="dir", size=0, mtime=mtime, mode=mode)
            if cat.is_dir(conn, path):
                return DirEntry(name=_basename(path), type="dir", size=0)
        raise FileNotFound(f"no such file or directory: {path!r}")

    def listdir(self, path: str) -> list[DirEntry]:
        """Children of a directory sorted by name; a file lists as itself."""
        check_path(path)
        with self._read_txn() as conn:
            meta = cat.get_file(conn, path) if path else None
            if meta is not None:
                return [
                    DirEntry(
                        name=_basename(path), type="file", size=meta.size, mtime=meta.mtime,
                        mode=meta.mode,
                    )
                ]
            explicit = cat.dir_children(conn, path)
            by_name: dict[str, DirEntry] = {}
            for name, d, size, mtime, mode in cat.list_children(conn, path):
                if d:
                    mode, mtime = explicit.pop(name, (0, 0.0))
                by_name[name] = DirEntry(
                    name=name, type="dir" if d else "file", size=size, mtime=mtime, mode=mode
                )
            for name, (mode, mtime) in explicit.items():
                by_name[name] = DirEntry(name=name, type="dir", size=0, mtime=mtime, mode=mode)
            if not by_name and path != "" and cat.get_dir(conn, path) is None:
                raise FileNotFound(f"no such file or directory: {path!r}")
        return [by_name[n] for n in sorted(by_name)]

    def read(
        self, path: str, start: int = 0, end: int | None = None, chunk_size: int = 1 << 20
    ) -> BlobReader:
        """Stream ``[start, end)`` of a file; the blob is open when this returns."""
        check_path(path)
        if start < 0 or (end is not None and end < start) or chunk_size <= 0:
            raise InvalidInput(f"bad byte range [{start}, {end}) for {path!r}")
        for _attempt in range(8):
            with self._read_txn() as conn:
                meta = cat.get_file(conn, path) if path else None
                if meta is None:
                    if cat.is_dir(conn, path):
                        raise InvalidInput(f"cannot read {path or '/'!r}: it is a directory")
                    raise FileNotFound(f"no such file: {path!r}")
            try:
                f = self._blobs.open(meta.sha256)
            except FileNotFoundError:
                continue  # replaced and collected in between: resolve again
            stop = meta.size if end is None else min(end, meta.size)
            return BlobReader(f, min(start, stop), stop, chunk_size)
        raise FileNotFound(f"volume {self.name!r}: content of {path!r} is missing")

    def open_blob(self, sha256: str) -> BinaryIO:
        """Open a blob by hash (mirror copies of a pinned version)."""
        try:
            return self._blobs.open(sha256)
        except FileNotFoundError as exc:
            raise FileNotFound(f"volume {self.name!r}: no blob {sha256}") from exc

    def usage(self) -> tuple[int, int]:
        """(files, bytes) of the current state: one aggregate query (a table scan)."""
        with self._read_txn() as conn:
            row = conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files").fetchone()
        return int(row[0]), int(row[1])

    def files(self, prefix: str = "") -> Iterator[FileMeta]:
        """Current files at or below directory ``prefix``, by path, from one snapshot.

        The snapshot is taken now and held (a SQLite read transaction on a connection of the
        stream's own, so it may be advanced from any thread) until the iterator is exhausted
        or closed: close it promptly, as it keeps the WAL from being checkpointed past it.
        """
        check_path(prefix)
        return self._stream(lambda conn: cat.iter_files(conn, prefix))

    def journal(self, after_version: int) -> Iterator[JournalEntry]:
        """Journal entries with version > ``after_version``, in commit order."""

        def setup(conn: sqlite3.Connection) -> Iterator[JournalEntry]:
            floor = int(cat.read_meta(conn)["journal_floor"])
            if after_version < floor:
                raise Conflict(
                    f"volume {self.name!r}: journal truncated (floor {floor}, "
                    f"asked after {after_version})"
                )
            cur = conn.execute(
                "SELECT version, op, path, size, sha256, mtime, kind, src, mode FROM journal "
                "WHERE version > ? ORDER BY seq",
                (after_version,),
            )
            return (
                JournalEntry(
                    version=r[0], op=r[1], path=r[2], size=r[3], sha256=r[4], mtime=r[5],
                    kind=r[6] or "", src=r[7] or "", mode=r[8] or 0,
                )
                for r in cur
            )

        return self._stream(setup)

    def existed_at(self, after_version: int, upto_version: int) -> set[str]:
        """Of the paths changed in (after, upto], those that existed at ``after``: lets the
        mirror engine tell overwrites from new paths without asking the target (issue 14)."""
        with self._read_txn() as conn:
            return {row[0] for row in cat.net_changes(conn, after_version, upto_version)
                    if row[6]}

    def changes_since(
        self, after_version: int, upto_version: int
    ) -> tuple[list[FileMeta], list[str]]:
        """Net effect of versions (after, upto]: files to copy (as of upto) and paths deleted.

        Computed from the journal alone (grouped by path), so its cost follows the number of
        changed paths, not the volume's size; both lists are held in memory. A path created
        and deleted within the range appears in neither list.
        """
        copies: list[FileMeta] = []
        deleted: list[str] = []
        with self._read_txn() as conn:
            meta = cat.read_meta(conn)
            floor, current = int(meta["journal_floor"]), int(meta["version"])
            if after_version < floor:
                raise Conflict(
                    f"volume {self.name!r}: journal truncated (floor {floor}, "
                    f"asked after {after_version})"
                )
            if upto_version > current or upto_version < after_version:
                raise InvalidInput(
                    f"volume {self.name!r}: bad version range ({after_version}, "
                    f"{upto_version}] (current {current})"
                )
            for path, op, size, sha, mtime, ver, existed, mode in cat.net_changes(
                conn, after_version, upto_version
            ):
                if op == "put":
                    copies.append(
                        FileMeta(
                            path=path, size=size, sha256=sha, mtime=mtime, version=ver,
                            mode=cat.DEFAULT_FILE_MODE if mode is None else mode,
                        )
                    )
                elif existed:
                    deleted.append(path)
        return copies, deleted

    def snapshot_files(self, version: int) -> Iterator[FileMeta]:
        """The files as of ``version`` by path: current rows merged with the journal's
        ``prev_*`` of paths changed since. Blobs of an old version are only guaranteed to
        exist while a pin at (or below) that version is held.
        """

        def setup(conn: sqlite3.Connection) -> Iterator[FileMeta]:
            meta = cat.read_meta(conn)
            floor, current = int(meta["journal_floor"]), int(meta["version"])
            if version > current:
                raise InvalidInput(
                    f"volume {self.name!r}: version {version} is in the future ({current})"
                )
            if version == current:
                return cat.iter_files(conn, "")
            if version < floor:
                raise Conflict(
                    f"volume {self.name!r}: version {version} is older than the journal "
                    f"floor {floor}"
                )
            return _merge_states(cat.iter_files(conn, ""), cat.states_before(conn, version))

        return self._stream(setup)

    # ------------------------------------------------------------------ pins, GC, journal

    def pin(self) -> tuple[int, object]:
        """Hold the current version's blobs until ``unpin``; returns (version, token)."""
        with self._lock:
            token = next(self._pin_ids)
            self._pins[token] = self._version
            return self._version, token

    def unpin(self, token: object) -> None:
        with self._lock:
            if self._pins.pop(token, None) is None:  # type: ignore[call-overload]
                raise InvalidInput(f"volume {self.name!r}: unknown pin {token!r}")
            if not self._pins:
                self._gc_locked()

    def truncate_journal(self, upto_version: int) -> None:
        """Drop journal rows up to ``upto_version``; kept back to the oldest pin if any."""
        with self._lock:
            limit = min([upto_version, self._version, *self._pins.values()])
            if limit <= self._floor:
                return
            with self._write_txn() as conn:
                conn.execute("DELETE FROM journal WHERE version <= ?", (limit,))
                cat.set_meta(conn, "journal_floor", limit)
            self._floor = limit

    def _queue_unless_used_locked(self, sha256: str) -> None:
        """After a failed commit: the installed blob may be nobody's; let GC decide."""
        conn = self._cat.conn()
        if not conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                cat.queue_if_unreferenced(conn, [sha256])

    def _gc_locked(self) -> int:
        """Unlink queued blobs nothing needs any more; deferred while any pin is held."""
        if self._pins:
            return 0
        conn = self._cat.conn()
        removed = 0
        last = ""
        while True:
            shas = [
                r[0]
                for r in conn.execute(
                    "SELECT sha256 FROM gc_pending WHERE sha256 > ? ORDER BY sha256 LIMIT 1000",
                    (last,),
                )
            ]
            if not shas:
                return removed
            last = shas[-1]
            done = []
            for sha in shas:
                if sha in self._inflight:
                    continue
                if not cat.is_referenced(conn, sha) and self._blobs.unlink(sha):
                    removed += 1
                done.append(sha)
            if done:
                with self._write_txn() as wconn:
                    wconn.executemany(
                        "DELETE FROM gc_pending WHERE sha256 = ?", [(s,) for s in done]
                    )

    def _sweep_orphans(self) -> int:
        """At open: unlink blobs no row references (a put killed before its commit)."""
        conn = self._cat.conn()
        removed = 0
        for name in self._blobs.iter_all():
            if not SHA256_RE.match(name):
                log.warning("volume %s: stray file in blobs/: %s", self.name, name)
                continue
            if not cat.is_referenced(conn, name) and self._blobs.unlink(name):
                removed += 1
        return removed


def _check_mode(mode: int) -> int:
    if not isinstance(mode, int) or mode < 0 or mode > 0o7777:
        raise InvalidInput(f"mode must be permission bits within 0o7777, not {mode!r}")
    return mode


def _move_file(conn: sqlite3.Connection, f: FileMeta, dst: str, v: int, now: float) -> None:
    cat.delete_file(conn, f.path, now, v, kind="rename")
    cat.put_file(conn, dst, f.size, f.sha256, f.mtime, v, f.mode, kind="rename", src=f.path)


def _keep_parent(conn: sqlite3.Connection, path: str, now: float, v: int) -> None:
    """A directory that a move or unlink leaves empty stays (POSIX), as an explicit one."""
    parent = path.rpartition("/")[0]
    if parent and not cat.is_dir(conn, parent):
        cat.make_dir(conn, parent, cat.DEFAULT_DIR_MODE, now, v)


def _replace_dirs(
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


def _merge_states(
    current: Iterator[FileMeta], before: Iterator[tuple[str, FileMeta | None]]
) -> Iterator[FileMeta]:
    """Merge two path-ordered streams; ``before`` (a path's older state) wins on a tie."""
    a = next(current, None)
    b = next(before, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a.path < b[0]):
            assert a is not None
            yield a
            a = next(current, None)
        else:
            if a is not None and a.path == b[0]:
                a = next(current, None)
            if b[1] is not None:
                yield b[1]
            b = next(before, None)
