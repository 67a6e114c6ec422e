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

Directory queries use the half-open range ``[p + '/', p + '0')``: '0' follows '/' in byte
order, so the range is exactly the paths below ``p`` and is served by the primary key.

This module only speaks SQL: it must never touch blob files, take the volume's write lock,
or commit a transaction it did not begin (callers own BEGIN/COMMIT).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from namespace.errors import InvalidInput

from .models import FileMeta

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
"""

FILE_COLS = "path, size, sha256, mtime, version"


def below(path: str) -> tuple[str, str]:
    """The key range ``[lo, hi)`` holding every path strictly below directory ``path``."""
    if path == "":
        return "", "\U0010ffff"
    return path + "/", path + "0"


def row_meta(row: tuple) -> FileMeta:  # type: ignore[type-arg]
    return FileMeta(path=row[0], size=row[1], sha256=row[2], mtime=row[3], version=row[4])


def ancestors(path: str) -> list[str]:
    """``a/b/c`` -> ``['a', 'a/b']``."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class Catalog:
    """Connections to one ``catalog.sqlite``: one per thread, plus private ones for streams."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise ValueError(f"catalog {self.path} is closed")
        conn = sqlite3.connect(
            self.path, timeout=60.0, isolation_level=None, check_same_thread=False
        )
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
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


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
    lo, hi = below(path)
    row = conn.execute(
        "SELECT 1 FROM files WHERE path >= ? AND path < ? LIMIT 1", (lo, hi)
    ).fetchone()
    return row is not None


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
    if path == "":
        raise InvalidInput("cannot write the volume root: '' is a directory")
    if is_dir(conn, path):
        raise InvalidInput(f"cannot write {path!r}: it is a directory")
    anc = file_ancestor(conn, path)
    if anc is not None:
        raise InvalidInput(f"cannot write {path!r}: {anc!r} is a file")


def list_children(conn: sqlite3.Connection, path: str) -> Iterator[tuple[str, bool, int]]:
    """(name, is_dir, size) of each child of directory ``path``, skipping whole subtrees.

    Cost is one indexed seek per sub-directory plus the files themselves, never the number
    of files deeper down. Yields in path order, which is not quite name order
    (``a-b`` < ``a/x``), so callers sort.
    """
    lo, hi = below(path)
    plen = len(lo)
    cursor = lo
    while True:
        rows = conn.execute(
            "SELECT path, size FROM files WHERE path >= ? AND path < ? ORDER BY path LIMIT 512",
            (cursor, hi),
        ).fetchall()
        if not rows:
            return
        jumped = False
        for p, size in rows:
            rest = p[plen:]
            slash = rest.find("/")
            if slash < 0:
                yield rest, False, size
                cursor = p + "\x00"
            else:
                name = rest[:slash]
                yield name, True, 0
                cursor = lo + name + "0"
                jumped = True
                break
        if not jumped and len(rows) < 512:
            return


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


def put_file(
    conn: sqlite3.Connection, path: str, size: int, sha256: str, mtime: float, version: int
) -> None:
    """Create or replace one file, journal it, and queue the old blob if now unreferenced."""
    old = get_file(conn, path)
    conn.execute(
        "INSERT INTO journal(version, op, path, size, sha256, mtime, "
        "prev_size, prev_sha256, prev_mtime, prev_version) "
        "VALUES (?, 'put', ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            version,
            path,
            size,
            sha256,
            mtime,
            old.size if old else None,
            old.sha256 if old else None,
            old.mtime if old else None,
            old.version if old else None,
        ),
    )
    conn.execute(
        "INSERT INTO files(path, size, sha256, mtime, version) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT(path) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, "
        "mtime = excluded.mtime, version = excluded.version",
        (path, size, sha256, mtime, version),
    )
    if old is not None and old.sha256 != sha256:
        queue_if_unreferenced(conn, [old.sha256])


def delete_file(conn: sqlite3.Connection, path: str, mtime: float, version: int) -> bool:
    old = get_file(conn, path)
    if old is None:
        return False
    conn.execute(
        "INSERT INTO journal(version, op, path, size, sha256, mtime, "
        "prev_size, prev_sha256, prev_mtime, prev_version) "
        "VALUES (?, 'delete', ?, 0, '', ?, ?, ?, ?, ?)",
        (version, path, mtime, old.size, old.sha256, old.mtime, old.version),
    )
    conn.execute("DELETE FROM files WHERE path = ?", (path,))
    queue_if_unreferenced(conn, [old.sha256])
    return True


def delete_tree(conn: sqlite3.Connection, path: str, mtime: float, version: int) -> int:
    """Delete every file below directory ``path`` (set-based); returns how many."""
    lo, hi = below(path)
    n = conn.execute(
        "INSERT INTO journal(version, op, path, size, sha256, mtime, "
        "prev_size, prev_sha256, prev_mtime, prev_version) "
        "SELECT ?, 'delete', path, 0, '', ?, size, sha256, mtime, version FROM files "
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
    return n


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
) -> Iterator[tuple[str, str, int, str, float, int, bool]]:
    """Per path changed in (after, upto]: its last row there and whether it existed at after.

    Yields (path, last_op, size, sha256, mtime, version, existed_before) in path order.
    """
    cur = conn.execute(
        "WITH r AS (SELECT path, MIN(seq) AS f, MAX(seq) AS l FROM journal "
        "           WHERE version > ? AND version <= ? GROUP BY path) "
        "SELECT r.path, jl.op, jl.size, jl.sha256, jl.mtime, jl.version, "
        "       jf.prev_sha256 IS NOT NULL "
        "FROM r JOIN journal jl ON jl.seq = r.l JOIN journal jf ON jf.seq = r.f "
        "ORDER BY r.path",
        (after, upto),
    )
    for row in cur:
        yield row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6])


def states_before(conn: sqlite3.Connection, after: int) -> Iterator[tuple[str, FileMeta | None]]:
    """For each path changed after version ``after``: its state at ``after`` (None: absent)."""
    cur = conn.execute(
        "SELECT j.path, j.prev_size, j.prev_sha256, j.prev_mtime, j.prev_version "
        "FROM journal j JOIN (SELECT MIN(seq) AS f FROM journal WHERE version > ? "
        "GROUP BY path) r ON j.seq = r.f ORDER BY j.path",
        (after,),
    )
    for path, size, sha, mtime, version in cur:
        if sha is None:
            yield path, None
        else:
            yield path, FileMeta(path=path, size=size, sha256=sha, mtime=mtime, version=version)
