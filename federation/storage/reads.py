"""The get path: stat, listings and streaming reads of one volume's current state.

A read resolves the path to a blob and opens it before returning, so a concurrent replace
or delete never tears it (blobs are immutable; POSIX keeps an open inode alive). Small
content stored inline is read in the same snapshot that resolved the path, so it is
always there. Reads take no lock: each runs in its own SQLite read snapshot.
"""

from __future__ import annotations

import io
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import BinaryIO, Self

from namespace.errors import FileNotFound, InvalidInput

from . import catalog as cat
from . import inline
from .blobs import SHA256_RE
from .checks import basename, check_path
from .cold_reads import MIN_RANGE, ColdReads
from .models import DirEntry, FileMeta
from .state import VolumeState

# A blob can be collected between resolving a path and opening its blob (the file was
# replaced meanwhile); resolving again finds the new one. More misses than this in a row
# mean the content really is gone.
_OPEN_ATTEMPTS = 8
REREAD_S = 600.0
"""A large blob read again within this long is read buffered (and so cached)."""
_RECENT_MAX = 4096


# Journal rows that change which paths exist (put, delete, rename, mkdir, rmdir), not only
# the attributes of one (chmod, utime, dirattr): what moves a directory's mtime in POSIX.
_TREE_ROWS = "(kind IS NULL OR kind NOT IN ('chmod', 'utime', 'dirattr'))"
# The newest rows of the newest version that changed the tree. Bounded: an `rm -r` or a
# directory rename is one version of as many rows as files, all of one time.
_LAST_TREE_CHANGE = (
    "SELECT MAX(mtime) FROM (SELECT mtime FROM journal WHERE "
    f"{_TREE_ROWS} AND version = (SELECT version FROM journal WHERE {_TREE_ROWS} "
    "ORDER BY seq DESC LIMIT 1) ORDER BY seq DESC LIMIT 64)"
)


def _last_tree_change(conn: sqlite3.Connection) -> float:
    """When the volume's tree last changed (what its root's mtime shows): the newest time
    that the last version to add, replace, remove or rename something recorded. Its
    delete rows (a remove, the old half of a rename) hold the commit time; a put row holds
    the file's mtime, which is the commit time unless the writer gave one. 0 when the
    journal holds no such row (a new volume, or one reset from a copy): the caller knows
    better. Index walks from the end, whatever the volume's size."""
    row = conn.execute(_LAST_TREE_CHANGE).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


class BlobReader:
    """Chunks of one open blob between ``start`` and ``end``; the descriptor is already open.

    A large range that is not in the page cache is read with ``O_DIRECT`` (``cold_reads``)
    unless ``buffered``."""

    def __init__(self, f: BinaryIO, start: int, end: int, chunk_size: int, *,
                 buffered: bool = False) -> None:
        self._f: BinaryIO | None = f
        self._pos = start
        self._end = end
        self._chunk = chunk_size
        self._cold = None if buffered else ColdReads.open(f, start, end - start, chunk_size)
        if start and self._cold is None:
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
        want = min(self._chunk, remaining)
        data = f.read(want) if self._cold is None else self._cold.read(self._pos, want)
        if not data:
            self.close()
            raise StopIteration
        self._pos += len(data)
        return data

    def close(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            f.close()
        cold, self._cold = self._cold, None
        if cold is not None:
            cold.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class Reads:
    """Lookups and content of the current state."""

    def __init__(self, state: VolumeState) -> None:
        self._state = state
        # Large blobs read lately (sha256 -> monotonic time): one read again within REREAD_S
        # is read buffered, so the page cache keeps what is read more than once.
        self._recent: OrderedDict[str, float] = OrderedDict()
        self._recent_lock = threading.Lock()

    def _read_lately(self, sha256: str) -> bool:
        """Whether ``sha256`` was read within ``REREAD_S``; notes this read."""
        now = time.monotonic()
        with self._recent_lock:
            recent = self._recent
            last = recent.pop(sha256, None)
            recent[sha256] = now
            while len(recent) > _RECENT_MAX or next(iter(recent.values())) < now - REREAD_S:
                recent.popitem(last=False)
        return last is not None and now - last < REREAD_S

    def stat(self, path: str) -> FileMeta | DirEntry:
        check_path(path)
        with self._state.read_txn() as conn:
            if path == "":
                return DirEntry(name="", type="dir", size=0, mtime=_last_tree_change(conn),
                                mode=cat.DEFAULT_DIR_MODE)
            meta = cat.get_file(conn, path)
            if meta is not None:
                return meta
            explicit = cat.get_dir(conn, path)
            if explicit is not None:
                mode, mtime = explicit
                return DirEntry(name=basename(path), type="dir", size=0, mtime=mtime, mode=mode)
            if cat.is_dir(conn, path):
                return DirEntry(name=basename(path), type="dir", size=0)
        raise FileNotFound.naming("no such file or directory: {}", path)

    def listdir(self, path: str) -> list[DirEntry]:
        """Children of a directory sorted by name; a file lists as itself."""
        check_path(path)
        with self._state.read_txn() as conn:
            meta = cat.get_file(conn, path) if path else None
            if meta is not None:
                return [
                    DirEntry(
                        name=basename(path), type="file", size=meta.size, mtime=meta.mtime,
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
                raise FileNotFound.naming("no such file or directory: {}", path)
        return [by_name[n] for n in sorted(by_name)]

    def read(
        self, path: str, start: int = 0, end: int | None = None, chunk_size: int = 1 << 20
    ) -> BlobReader:
        """Stream ``[start, end)`` of a file; the blob is open when this returns."""
        check_path(path)
        if start < 0 or (end is not None and end < start) or chunk_size <= 0:
            raise InvalidInput(f"bad byte range [{start}, {end}) for {path!r}")
        for _attempt in range(_OPEN_ATTEMPTS):
            with self._state.read_txn() as conn:
                meta = cat.get_file(conn, path) if path else None
                if meta is None:
                    if cat.is_dir(conn, path):
                        raise InvalidInput.naming("cannot read {}: it is a directory", path)
                    raise FileNotFound.naming("no such file: {}", path)
                # only small content can be inline (an older volume's is a file)
                data = inline.load(conn, meta.sha256) if meta.size <= inline.INLINE_MAX else None
            f: BinaryIO
            if data is not None:
                f = io.BytesIO(data)
            else:
                try:
                    f = self._state.blobs.open(meta.sha256)
                except FileNotFoundError:
                    continue  # replaced and collected in between: resolve again
            stop = meta.size if end is None else min(end, meta.size)
            first = min(start, stop)
            buffered = data is not None or (
                stop - first >= MIN_RANGE and self._read_lately(meta.sha256))
            return BlobReader(f, first, stop, chunk_size, buffered=buffered)
        raise FileNotFound.naming(f"volume {self._state.name!r}: content of {{}} is missing", path)

    def open_blob(self, sha256: str) -> BinaryIO:
        """Open a blob by hash (mirror copies of a pinned version), inline or a file."""
        if SHA256_RE.match(sha256):
            data = inline.load(self._state.catalog.conn(), sha256)
            if data is not None:
                return io.BytesIO(data)
        try:
            return self._state.blobs.open(sha256)
        except FileNotFoundError as exc:
            raise FileNotFound(f"volume {self._state.name!r}: no blob {sha256}") from exc

    def usage(self) -> tuple[int, int]:
        """(files, bytes) of the current state: one aggregate query (a table scan)."""
        with self._state.read_txn() as conn:
            row = conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files").fetchone()
        return int(row[0]), int(row[1])

    def files(self, prefix: str = "") -> Iterator[FileMeta]:
        """Current files at or below directory ``prefix``, by path, from one snapshot."""
        check_path(prefix)
        return self._state.stream(lambda conn: cat.iter_files(conn, prefix))

    def dirs(self) -> list[tuple[str, int, float]]:
        """Every explicit directory as (path, mode, mtime): what a cluster replica mirrors."""
        with self._state.read_txn() as conn:
            return [(str(p), int(m), float(t)) for p, m, t in cat.iter_dirs(conn)]
