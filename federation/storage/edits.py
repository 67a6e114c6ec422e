"""Namespace edits of one volume: delete, rename, mkdir, rmdir, chmod/utime.

Each edit is ONE new version: one write transaction under the volume's lock that changes
``files``/``dirs`` rows and appends journal rows (``catalog``), then the cached version moves
and blobs that lost their last reference are collected. POSIX rules apply (a directory
replaces only an empty one, nothing moves below itself, ``rmdir`` needs an empty directory).
Edits never touch blob content: a rename moves rows, not bytes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from namespace.errors import Conflict, FileNotFound, InvalidInput

from . import catalog as cat
from .checks import check_mode, check_path
from .gc import BlobCollector
from .models import FileMeta
from .state import VolumeState


class NamespaceEdits:
    """Mutations of paths and attributes (content arrives through ``puts.py``)."""

    def __init__(self, state: VolumeState, gc: BlobCollector) -> None:
        self._state = state
        self._gc = gc

    def delete(
        self,
        path: str,
        *,
        recursive: bool = False,
        version: int | None = None,
        keep_parent: bool = False,
        collect: bool = True,
    ) -> int:
        """Delete a file, or with ``recursive`` a directory's files as ONE version.

        ``keep_parent`` (POSIX ``unlink``): a parent directory that this leaves empty stays,
        as an explicit directory, instead of vanishing with its last file. ``collect``
        False leaves the blobs it freed to the caller's collection (on a full disk, the
        volume runs it apart, so that a failed collection never looks like a failed,
        retryable delete)."""
        check_path(path)
        now = time.time()
        with self._state.lock:
            with self._state.write_txn() as conn:
                v = self._state.next_version(conn, version)
                if cat.get_file(conn, path) is not None:
                    cat.delete_file(conn, path, now, v)
                    if keep_parent:
                        _keep_parent(conn, path, now, v)
                elif cat.is_dir(conn, path):
                    if not recursive:
                        raise InvalidInput.naming("{} is a directory; use -r", path)
                    removed = cat.delete_tree(conn, path, now, v)
                    if path:
                        removed += cat.remove_dir(conn, path, now, v)
                    if removed == 0:
                        return self._state.version  # the empty root: nothing to commit
                else:
                    raise FileNotFound.naming("no such file or directory: {}", path)
                cat.set_meta(conn, "version", v)
            self._state.version = v
            if collect:
                self._gc.collect_locked()
        return v

    def _mutate(self, change: Callable[[sqlite3.Connection, int], bool], version: int | None) -> int:
        """Run ``change(conn, v)`` as ONE new version; it returns False to commit nothing."""
        with self._state.lock:
            with self._state.write_txn() as conn:
                v = self._state.next_version(conn, version)
                if not change(conn, v):
                    conn.execute("ROLLBACK")
                    return self._state.version
                cat.set_meta(conn, "version", v)
            self._state.version = v
            self._gc.collect_locked()
        return v

    def rename(self, src: str, dst: str, *, version: int | None = None) -> int:
        """Move a file or a directory (with everything below it) to ``dst`` as ONE version.

        POSIX ``rename`` rules: a file replaces a file; a directory replaces only an empty
        directory (Conflict otherwise, as for a file onto a directory or the other way
        round); nothing moves below itself. Journal rows carry kind ``rename`` (and the put
        row the old path), so followers see a rename and mirrors need no new bytes."""
        check_path(src)
        check_path(dst)
        if not src or not dst:
            raise InvalidInput("cannot rename the root of a volume")
        if dst.startswith(src + "/"):
            raise InvalidInput.naming("cannot move {} below itself ({})", src, dst)
        now = time.time()

        def change(conn: sqlite3.Connection, v: int) -> bool:
            f = cat.get_file(conn, src)
            if f is None and not cat.is_dir(conn, src):  # the source first, as rename(2)
                raise FileNotFound.naming("no such file or directory: {}", src)
            if src == dst:
                return False
            anc = cat.file_ancestor(conn, dst)
            if anc is not None:
                raise InvalidInput.naming("cannot move to {}: {} is a file", dst, anc)
            # The destination is there and of the other kind: a conflict with what exists
            # (exit 4, as mv's "cannot overwrite"), not a malformed request.
            if f is not None:
                if cat.is_dir(conn, dst):
                    raise Conflict.naming(
                        "cannot overwrite directory {} with non-directory {}", dst, src)
                _move_file(conn, f, dst, v, now)
            else:
                if cat.get_file(conn, dst) is not None:
                    raise Conflict.naming(
                        "cannot overwrite non-directory {} with directory {}", dst, src)
                if cat.has_below(conn, dst):
                    raise Conflict.naming("cannot move {} to {}: directory not empty", src, dst)
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
            _keep_parent(conn, src, now, v)
            return True

        return self._mutate(change, version)

    def mkdir(
        self, path: str, *, mode: int = 0o755, mtime: float | None = None,
        version: int | None = None,
    ) -> int:
        """Make an (empty) explicit directory; it persists until ``rmdir``."""
        check_path(path)
        mode = check_mode(mode)
        if not path:
            raise Conflict("the volume root exists")

        def change(conn: sqlite3.Connection, v: int) -> bool:
            if cat.get_file(conn, path) is not None or cat.is_dir(conn, path):
                raise Conflict.naming("{} exists", path)
            anc = cat.file_ancestor(conn, path)
            if anc is not None:
                raise InvalidInput.naming("cannot make {}: {} is a file", path, anc)
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
                raise InvalidInput.naming("{} is not a directory", path)
            if cat.has_below(conn, path):
                raise Conflict.naming("directory {} is not empty", path)
            if not cat.remove_dir(conn, path, now, v):
                raise FileNotFound.naming("no such directory: {}", path)
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
            mode = check_mode(mode)
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
                raise FileNotFound.naming("no such file or directory: {}", path)
            old_mode, old_mtime = cat.get_dir(conn, path) or (cat.DEFAULT_DIR_MODE, time.time())
            cat.make_dir(
                conn, path, old_mode if mode is None else mode,
                old_mtime if mtime is None else mtime, v, kind="dirattr",
            )
            return True

        return self._mutate(change, version)


def _move_file(conn: sqlite3.Connection, f: FileMeta, dst: str, v: int, now: float) -> None:
    cat.delete_file(conn, f.path, now, v, kind="rename")
    cat.put_file(conn, dst, f.size, f.sha256, f.mtime, v, f.mode, kind="rename", src=f.path)


def _keep_parent(conn: sqlite3.Connection, path: str, now: float, v: int) -> None:
    """A directory that a move or unlink leaves empty stays (POSIX), as an explicit one."""
    parent = path.rpartition("/")[0]
    if parent and not cat.is_dir(conn, parent):
        cat.make_dir(conn, parent, cat.DEFAULT_DIR_MODE, now, v)

