"""The SQLite catalog of one volume: current files, the change journal, and volume metadata.

``catalog.sqlite`` (WAL, ``synchronous=FULL``) is the commit point of every mutation: one
transaction upserts/deletes ``files`` rows, appends ``journal`` rows and bumps ``version``.
Each journal row also records the file's previous state (``prev_*``), so the state at any
version still covered by the journal is reconstructible from rows *after* it alone
(``snapshot_files``), and net changes between two versions are one grouped query.

Tables::

    files(path PK, size, sha256, mtime, version)          current state, index on sha256
    journal(seq PK, version, op, path, size, sha256, mtime,
            prev_size, prev_sha256, prev_mtime, prev_version)   prev_* NULL = did not exist
    meta(key PK, value)       version, epoch, journal_floor, role
    gc_pending(sha256 PK)     blobs that lost their last reference, not yet unlinked
    staged(sha256 PK, ts)     blobs ingested for a coming reset_to/apply (kept by the sweep)
    dirs(path PK, mode, mtime)  directories made explicitly (mkdir, or chmod/utime of one):
                              they persist while empty; other directories stay implicit
    inline_blobs(sha256 PK, data)  small blobs kept in the catalog (``inline.py``); an older
                              catalog gets the (empty) table at open

Later columns (added in place to older catalogs): ``files.mode``; ``journal.mode``,
``journal.kind`` (NULL for a plain put/delete; ``rename``, ``chmod``, ``utime`` for file
rows; ``mkdir``, ``rmdir``, ``dirattr`` for directory rows, which file-level queries skip)
and ``journal.src`` (a rename's old path, on the row that puts the new one).

Directory queries use the half-open range ``[p + '/', p + '0')``: '0' follows '/' in byte
order, so the range is exactly the paths below ``p`` and is served by the primary key.

This module only speaks SQL: it must never touch blob files, take the volume's write lock,
or commit a transaction it did not begin (callers own BEGIN/COMMIT).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from namespace.errors import InvalidInput

from .models import FileMeta

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS files(
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    mtime REAL NOT NULL,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_sha256 ON files(sha256);
CREATE TABLE IF NOT EXISTS journal(
    seq INTEGER PRIMARY KEY,
    version INTEGER NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('put', 'delete')),
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    mtime REAL NOT NULL,
    prev_size INTEGER,
    prev_sha256 TEXT,
    prev_mtime REAL,
    prev_version INTEGER
);
CREATE INDEX IF NOT EXISTS journal_version ON journal(version);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gc_pending(sha256 TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS staged(sha256 TEXT PRIMARY KEY, ts REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dirs(
    path TEXT PRIMARY KEY,
    mode INTEGER NOT NULL,
    mtime REAL NOT NULL
) WITHOUT ROWID;
-- A rowid table, not WITHOUT ROWID: rows of up to 64 KiB live in overflow pages, which
-- SQLite advises against for WITHOUT ROWID tables.
CREATE TABLE IF NOT EXISTS inline_blobs(sha256 TEXT PRIMARY KEY, data BLOB NOT NULL);
"""

FILE_COLS = "path, size, sha256, mtime, version, mode"
DEFAULT_FILE_MODE = 0o644
DEFAULT_DIR_MODE = 0o755
DIR_KINDS = ("mkdir", "rmdir", "dirattr")
# Journal rows that describe files (what mirroring copies and deletes).
_FILE_ROWS = "(kind IS NULL OR kind NOT IN ('mkdir', 'rmdir', 'dirattr'))"
_ADDED_COLUMNS = (
    ("files", "mode", f"INTEGER NOT NULL DEFAULT {DEFAULT_FILE_MODE}"),
    ("journal", "mode", "INTEGER"),
    ("journal", "kind", "TEXT"),
    ("journal", "src", "TEXT"),
    ("journal", "prev_mode", "INTEGER"),
)


def below(path: str) -> tuple[str, str]:
    """The key range ``[lo, hi)`` holding every path strictly below directory ``path``."""
    if path == "":
        return "", "\U0010ffff"
    return path + "/", path + "0"


def row_meta(row: tuple[Any, ...]) -> FileMeta:
    """A ``FILE_COLS`` row (sqlite3 rows are untyped) as a ``FileMeta``."""
    return FileMeta(
        path=row[0], size=row[1], sha256=row[2], mtime=row[3], version=row[4], mode=row[5]
    )


def ancestors(path: str) -> list[str]:
    """``a/b/c`` -> ``['a', 'a/b']``."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


CONVERT_MAX_BYTES = 256 << 20
"""Largest catalog made without ``auto_vacuum`` that opening rewrites with it (``VACUUM``
copies the whole file, once: 0.8 s for 190 MiB here)."""

RECLAIM_FREE_PAGES = 256
"""Free pages (1 MiB at SQLite's 4 KiB) before ``reclaim`` gives them back: below that,
SQLite's own reuse of them for the next small files costs less than moving pages."""


class Catalog:
    """Connections to one ``catalog.sqlite``: one per thread, plus private ones for streams."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._closed = False
        self._reclaims: bool | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise ValueError(f"catalog {self.path} is closed")
        conn = sqlite3.connect(
            self.path, timeout=60.0, isolation_level=None, check_same_thread=False
        )
        # Takes effect only in a new, empty file (before WAL's header is written): a
        # catalog made by an older release is rewritten at open (``convert_to_reclaiming``).
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        with self._all_lock:
            self._all.append(conn)
        return conn

    def conn(self) -> sqlite3.Connection:
        """This thread's connection, for short queries and write transactions."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def private(self) -> sqlite3.Connection:
        """A connection of its own for a long read (a stream that may hop threads)."""
        return self._connect()

    def release(self, conn: sqlite3.Connection) -> None:
        """Close a connection from ``private``."""
        with self._all_lock:
            if conn in self._all:
                self._all.remove(conn)
        conn.close()

    def close(self) -> None:
        self._closed = True
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.ProgrammingError:
                pass

    @property
    def reclaims(self) -> bool:
        """Whether this file can give freed pages back (made with auto_vacuum=INCREMENTAL)."""
        if self._reclaims is None:
            self._reclaims = self.conn().execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        return self._reclaims

    def convert_to_reclaiming(self) -> bool:
        """Rewrite a catalog made before ``auto_vacuum`` (an older release) so that it can
        give freed pages back (``reclaim``); whether it can now. Only at open, with no other
        connection: ``VACUUM`` copies the file, so it is done only up to
        ``CONVERT_MAX_BYTES`` and when the disk has room for the copy twice over (the copy
        and its WAL); a catalog left as it is still reuses its free pages for new rows."""
        conn = self.conn()
        if self.reclaims:
            return True
        pages, page_size = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
        size = int(pages) * int(page_size)
        st = os.statvfs(self.path.parent)
        if size > CONVERT_MAX_BYTES or st.f_bavail * st.f_frsize < 2 * size + (64 << 20):
            log.info("%s: made without auto_vacuum; left as it is (%d MiB; rewritten at open "
                     "only up to %d MiB with room for two copies)", self.path, size >> 20,
                     CONVERT_MAX_BYTES >> 20)
            return False
        try:
            conn.executescript("PRAGMA auto_vacuum=INCREMENTAL; VACUUM;")
        except sqlite3.Error as exc:  # a full disk, most likely: the file is as it was
            log.warning("%s: could not rewrite it with auto_vacuum: %s", self.path, exc)
            return False
        self._reclaims = None
        log.info("%s: rewritten with auto_vacuum (%d MiB), so deleted small files give their "
                 "space back", self.path, size >> 20)
        return self.reclaims

    def init_schema(self, *, epoch: int, role: str) -> None:
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            for key, value in (
                ("version", "0"),
                ("epoch", str(epoch)),
                ("journal_floor", "0"),
                ("role", role),
            ):
                conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (key, value))
            _add_columns(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _add_columns(conn: sqlite3.Connection) -> None:
    """Bring a catalog made by an older release up to the current columns (in place)."""
    for table, column, decl in _ADDED_COLUMNS:
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")


def reclaim(conn: sqlite3.Connection) -> int:
    """Give the file system back the pages deleted rows freed, once they are more than
    ``RECLAIM_FREE_PAGES``: small files live in this file (``inline_blobs``), and without
    this a volume whose small files were all deleted kept their size on disk for good
    (SQLite only reuses free pages itself). Outside any transaction, under the volume's
    lock; the file shrinks at the checkpoint that follows. Returns the pages given back."""
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    if free < RECLAIM_FREE_PAGES or conn.in_transaction:
        return 0
    # executescript runs the pragma to its end: execute() steps it once, which frees one page.
    conn.executescript(f"PRAGMA incremental_vacuum({free});")
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    return free


# ---------------------------------------------------------------- reads (any connection)


def read_meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def set_meta(conn: sqlite3.Connection, key: str, value: str | int) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, str(value)),
    )


def get_file(conn: sqlite3.Connection, path: str) -> FileMeta | None:
    row = conn.execute(f"SELECT {FILE_COLS} FROM files WHERE path = ?", (path,)).fetchone()
    return row_meta(row) if row else None


def is_dir(conn: sqlite3.Connection, path: str) -> bool:
    """True when some file lies below ``path`` (the root is always a directory)."""
    if path == "":
        return True
    if get_dir(conn, path) is not None:
        return True
    return has_below(conn, path)


def has_below(conn: sqlite3.Connection, path: str) -> bool:
    """True when some file or explicit directory lies strictly below ``path``."""
    lo, hi = below(path)
    for table in ("files", "dirs"):
        row = conn.execute(
            f"SELECT 1 FROM {table} WHERE path >= ? AND path < ? LIMIT 1", (lo, hi)
        ).fetchone()
        if row is not None:
            return True
    return False


def get_dir(conn: sqlite3.Connection, path: str) -> tuple[int, float] | None:
    """(mode, mtime) of an explicit directory, None for an implicit or absent one."""
    row = conn.execute("SELECT mode, mtime FROM dirs WHERE path = ?", (path,)).fetchone()
    return (int(row[0]), float(row[1])) if row else None


def file_ancestor(conn: sqlite3.Connection, path: str) -> str | None:
    """The first ancestor of ``path`` that is a file, if any."""
    anc = ancestors(path)
    if not anc:
        return None
    marks = ",".join("?" * len(anc))
    row = conn.execute(
        f"SELECT path FROM files WHERE path IN ({marks}) ORDER BY path LIMIT 1", anc
    ).fetchone()
    return row[0] if row else None


def check_put_shape(conn: sqlite3.Connection, path: str) -> None:
    """Refuse a put where a directory is, or below a file."""
    put_target(conn, path)


def put_target(conn: sqlite3.Connection, path: str) -> FileMeta | None:
    """The file a put at ``path`` replaces (None: a new file); refuses a put where a
    directory is, or below a file.

    Why one statement: every put runs this inside its commit, and the five lookups as
    separate queries cost more CPU than the put's own rows.
    """
    if path == "":
        raise InvalidInput.naming("cannot write {}: it is a directory", path)
    lo, hi = below(path)
    anc = ancestors(path)
    marks = ",".join("?" * len(anc))
    ancestor_sql = (
        f"(SELECT path FROM files WHERE path IN ({marks}) ORDER BY path LIMIT 1)"
        if anc else "NULL"
    )
    row = conn.execute(
        "SELECT EXISTS(SELECT 1 FROM dirs WHERE path = ?) "
        "OR EXISTS(SELECT 1 FROM files WHERE path >= ? AND path < ?) "
        "OR EXISTS(SELECT 1 FROM dirs WHERE path >= ? AND path < ?), "
        f"{ancestor_sql}, f.size, f.sha256, f.mtime, f.version, f.mode "
        "FROM (SELECT 1) LEFT JOIN files f ON f.path = ?",
        (path, lo, hi, lo, hi, *anc, path),
    ).fetchone()
    if row[0]:
        raise InvalidInput.naming("cannot write {}: it is a directory", path)
    if row[1] is not None:
        raise InvalidInput.naming("cannot write {}: {} is a file", path, row[1])
    if row[3] is None:
        return None
    return FileMeta(
        path=path, size=row[2], sha256=row[3], mtime=row[4], version=row[5], mode=row[6]
    )


def list_children(
    conn: sqlite3.Connection, path: str
) -> Iterator[tuple[str, bool, int, float, int]]:
    """(name, is_dir, size, mtime, mode) of each child of ``path``, skipping whole subtrees.

    Directories found through files come with mtime 0 and mode 0 (implicit); explicit
    directories (``dir_children``) are listed apart and merged by the caller.

    Cost is one indexed seek per sub-directory plus the files themselves, never the number
    of files deeper down. Yields in path order, which is not quite name order
    (``a-b`` < ``a/x``), so callers sort.
    """
    lo, hi = below(path)
    plen = len(lo)
    cursor = lo
    while True:
        rows = conn.execute(
            "SELECT path, size, mtime, mode FROM files WHERE path >= ? AND path < ? "
            "ORDER BY path LIMIT 512",
            (cursor, hi),
        ).fetchall()
        if not rows:
            return
        jumped = False
        for p, size, mtime, mode in rows:
            rest = p[plen:]
            slash = rest.find("/")
            if slash < 0:
                yield rest, False, size, mtime, mode
                cursor = p + "\x00"
            else:
                name = rest[:slash]
                yield name, True, 0, 0.0, 0
                cursor = lo + name + "0"
                jumped = True
                break
        if not jumped and len(rows) < 512:
            return


def dir_children(conn: sqlite3.Connection, path: str) -> dict[str, tuple[int, float]]:
    """Explicit directories directly below ``path`` (or holding one deeper): name -> (mode,
    mtime); an implicit intermediate directory gets (0, 0.0)."""
    lo, hi = below(path)
    out: dict[str, tuple[int, float]] = {}
    for p, mode, mtime in conn.execute(
        "SELECT path, mode, mtime FROM dirs WHERE path >= ? AND path < ? ORDER BY path", (lo, hi)
    ):
        rest = p[len(lo):]
        if "/" in rest:
            out.setdefault(rest.split("/", 1)[0], (0, 0.0))
        else:
            out[rest] = (int(mode), float(mtime))
    return out


def iter_dirs(conn: sqlite3.Connection) -> Iterator[tuple[str, int, float]]:
    """Every explicit directory (path, mode, mtime) in path order."""
    yield from conn.execute("SELECT path, mode, mtime FROM dirs ORDER BY path")


def iter_files(conn: sqlite3.Connection, prefix: str) -> Iterator[FileMeta]:
    """Current files at or below ``prefix`` (a directory-style prefix), in path order."""
    if prefix == "":
        cur = conn.execute(f"SELECT {FILE_COLS} FROM files ORDER BY path")
        for row in cur:
            yield row_meta(row)
        return
    f = get_file(conn, prefix)
    if f is not None:
        yield f
        return
    lo, hi = below(prefix)
    cur = conn.execute(
        f"SELECT {FILE_COLS} FROM files WHERE path >= ? AND path < ? ORDER BY path", (lo, hi)
    )
    for row in cur:
        yield row_meta(row)


def is_referenced(conn: sqlite3.Connection, sha256: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM files WHERE sha256 = ? UNION ALL SELECT 1 FROM staged WHERE sha256 = ? "
        "LIMIT 1",
        (sha256, sha256),
    ).fetchone()
    return row is not None


# ---------------------------------------------------------------- writes (inside BEGIN)


_PUT_JOURNAL_SQL = (
    "INSERT INTO journal(version, op, path, size, sha256, mtime, "
    "prev_size, prev_sha256, prev_mtime, prev_version, mode, kind, src, prev_mode) "
    "VALUES (?, 'put', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_PUT_FILE_SQL = (
    "INSERT INTO files(path, size, sha256, mtime, version, mode) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(path) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, "
    "mtime = excluded.mtime, version = excluded.version, mode = excluded.mode"
)

JournalRow = tuple[Any, ...]
FileRow = tuple[str, int, str, float, int, int]


def put_rows(
    path: str,
    size: int,
    sha256: str,
    mtime: float,
    version: int,
    mode: int | None,
    old: FileMeta | None,
    kind: str | None = None,
    src: str | None = None,
) -> tuple[JournalRow, FileRow, int]:
    """The journal row and files row of a put replacing ``old`` (None: a new file), and the
    mode written: ``mode`` None keeps a replaced file's mode bits (a new file gets 0644)."""
    if mode is None:
        mode = old.mode if old else DEFAULT_FILE_MODE
    journal = (
        version, path, size, sha256, mtime,
        old.size if old else None,
        old.sha256 if old else None,
        old.mtime if old else None,
        old.version if old else None,
        mode, kind, src,
        old.mode if old else None,
    )
    return journal, (path, size, sha256, mtime, version, mode), mode


def put_file(
    conn: sqlite3.Connection,
    path: str,
    size: int,
    sha256: str,
    mtime: float,
    version: int,
    mode: int | None = None,
    *,
    kind: str | None = None,
    src: str | None = None,
    old: FileMeta | None | Literal["lookup"] = "lookup",
) -> int:
    """Create or replace one file, journal it, and queue the old blob if now unreferenced.

    ``mode`` None keeps a replaced file's mode bits (a new file gets 0644); the mode written
    is returned. ``old`` is the file being replaced when the caller looked it up already
    (None: there is none); by default it is looked up here."""
    if old == "lookup":
        old = get_file(conn, path)
    journal, file, mode = put_rows(path, size, sha256, mtime, version, mode, old, kind, src)
    conn.execute(_PUT_JOURNAL_SQL, journal)
    conn.execute(_PUT_FILE_SQL, file)
    if old is not None and old.sha256 != sha256:
        queue_if_unreferenced(conn, [old.sha256])
    return mode


def put_files_many(
    conn: sqlite3.Connection, journal: list[JournalRow], files: list[FileRow],
    replaced: list[str],
) -> None:
    """``put_file`` for many puts at once (rows from ``put_rows``, in version order), with
    the shas they replaced: three statements for a whole batch of small puts."""
    conn.executemany(_PUT_JOURNAL_SQL, journal)
    conn.executemany(_PUT_FILE_SQL, files)
    if replaced:
        queue_if_unreferenced(conn, replaced)


def delete_file(
    conn: sqlite3.Connection, path: str, mtime: float, version: int, *, kind: str | None = None
) -> bool:
    old = get_file(conn, path)
    if old is None:
        return False
    conn.execute(
        "INSERT INTO journal(version, op, path, size, sha256, mtime, "
        "prev_size, prev_sha256, prev_mtime, prev_version, kind, prev_mode) "
        "VALUES (?, 'delete', ?, 0, '', ?, ?, ?, ?, ?, ?, ?)",
        (version, path, mtime, old.size, old.sha256, old.mtime, old.version, kind, old.mode),
    )
    conn.execute("DELETE FROM files WHERE path = ?", (path,))
    queue_if_unreferenced(conn, [old.sha256])
    return True


def delete_tree(conn: sqlite3.Connection, path: str, mtime: float, version: int) -> int:
    """Delete every file below directory ``path`` (set-based); returns how many."""
    lo, hi = below(path)
    n = conn.execute(
        "INSERT INTO journal(version, op, path, size, sha256, mtime, "
        "prev_size, prev_sha256, prev_mtime, prev_version, prev_mode) "
        "SELECT ?, 'delete', path, 0, '', ?, size, sha256, mtime, version, mode FROM files "
        "WHERE path >= ? AND path < ? ORDER BY path",
        (version, mtime, lo, hi),
    ).rowcount
    conn.execute(
        "INSERT OR IGNORE INTO gc_pending(sha256) SELECT DISTINCT sha256 FROM files "
        "WHERE path >= ? AND path < ?",
        (lo, hi),
    )
    conn.execute("DELETE FROM files WHERE path >= ? AND path < ?", (lo, hi))
    # Shas still used elsewhere are dropped from the queue at sweep time (re-checked there).
    for (d,) in conn.execute(
        "SELECT path FROM dirs WHERE path >= ? AND path < ? ORDER BY path DESC", (lo, hi)
    ).fetchall():
        n += remove_dir(conn, d, mtime, version)
    return n


def make_dir(
    conn: sqlite3.Connection, path: str, mode: int, mtime: float, version: int,
    *, kind: str = "mkdir",
) -> None:
    """Record (or update) an explicit directory and journal it as ``kind``."""
    conn.execute(
        "INSERT INTO dirs(path, mode, mtime) VALUES (?, ?, ?) ON CONFLICT(path) DO UPDATE "
        "SET mode = excluded.mode, mtime = excluded.mtime",
        (path, mode, mtime),
    )
    conn.execute(
        "INSERT INTO journal(version, op, path, size, sha256, mtime, mode, kind) "
        "VALUES (?, 'put', ?, 0, '', ?, ?, ?)",
        (version, path, mtime, mode, kind),
    )


def remove_dir(conn: sqlite3.Connection, path: str, mtime: float, version: int) -> int:
    """Forget an explicit directory (journaled as ``rmdir``); 1 if it was there."""
    if conn.execute("DELETE FROM dirs WHERE path = ?", (path,)).rowcount == 0:
        return 0
    conn.execute(
        "INSERT INTO journal(version, op, path, size, sha256, mtime, kind) "
        "VALUES (?, 'delete', ?, 0, '', ?, 'rmdir')",
        (version, path, mtime),
    )
    return 1


def queue_if_unreferenced(conn: sqlite3.Connection, shas: Iterable[str]) -> None:
    for sha in shas:
        conn.execute(
            "INSERT OR IGNORE INTO gc_pending(sha256) SELECT ? "
            "WHERE NOT EXISTS (SELECT 1 FROM files WHERE sha256 = ?)",
            (sha, sha),
        )


# ---------------------------------------------------------------- journal queries


def net_changes(
    conn: sqlite3.Connection, after: int, upto: int
) -> Iterator[tuple[str, str, int, str, float, int, bool, int | None]]:
    """Per path changed in (after, upto]: its last row there and whether it existed at after.

    Yields (path, last_op, size, sha256, mtime, version, existed_before, mode) in path
    order (mode None for rows older than mode bits).
    """
    cur = conn.execute(
        "WITH r AS (SELECT path, MIN(seq) AS f, MAX(seq) AS l FROM journal "
        f"           WHERE version > ? AND version <= ? AND {_FILE_ROWS} GROUP BY path) "
        "SELECT r.path, jl.op, jl.size, jl.sha256, jl.mtime, jl.version, "
        "       jf.prev_sha256 IS NOT NULL, jl.mode "
        "FROM r JOIN journal jl ON jl.seq = r.l JOIN journal jf ON jf.seq = r.f "
        "ORDER BY r.path",
        (after, upto),
    )
    for row in cur:
        yield row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]), row[7]


def states_before(conn: sqlite3.Connection, after: int) -> Iterator[tuple[str, FileMeta | None]]:
    """For each path changed after version ``after``: its state at ``after`` (None: absent)."""
    cur = conn.execute(
        "SELECT j.path, j.prev_size, j.prev_sha256, j.prev_mtime, j.prev_version, j.prev_mode "
        "FROM journal j JOIN (SELECT MIN(seq) AS f FROM journal WHERE version > ? "
        f"AND {_FILE_ROWS} GROUP BY path) r ON j.seq = r.f ORDER BY j.path",
        (after,),
    )
    for path, size, sha, mtime, version, mode in cur:
        if sha is None:
            yield path, None
        else:
            yield path, FileMeta(
                path=path, size=size, sha256=sha, mtime=mtime, version=version,
                mode=DEFAULT_FILE_MODE if mode is None else mode,
            )
