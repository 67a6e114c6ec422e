"""A full disk: recognising it whichever layer met it, and keeping room to recover from it.

Why: a volume's writes meet a full disk deep inside a put, a blob's ingest or a catalog
commit, each as its own exception, and each already leaves nothing behind (a put's
temporary file is removed, a blob's ingest unlinks its partial file, a transaction rolls
back). What was missing:

* saying so plainly: the controller's error mapping asks :func:`disk_full_reason` and
  reports ``OutOfSpace`` instead of an internal error;
* a way out. Deleting a file is itself a write here (a catalog transaction and a journal
  row), so on a disk filled to the last block even ``rm`` failed, and the only way to free
  space was to go behind gns's back. The volumes of a data directory keep
  :data:`HEADROOM_BYTES` allocated in one file (:class:`Headroom`, as ext4 keeps blocks
  back for root and ZFS keeps slop space for deletes, per file system): a put can never
  take it, and a delete that meets a full disk gives it back and commits. New content is
  refused, in every volume of the disk, until the headroom is taken again, once the disk
  has room. One for all volumes, not one each: they share the disk that fills, and 4 MiB
  a volume was 4 GiB of a disk holding a thousand.
"""
from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)

HEADROOM_BYTES = 4 << 20
"""Kept back per data directory: a delete's transaction (its journal rows, a recursive
delete's catalog pages, the WAL frames) fits many times over."""
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_MAX_CHAIN = 16  # causes followed at most (a chain can loop through __context__)

T = TypeVar("T")


def disk_full_reason(exc: BaseException) -> str | None:
    """What the system said, if ``exc`` or an error it came from (its ``__cause__`` or
    ``__context__``) is a full disk or an exhausted quota; else None."""
    current: BaseException | None = exc
    for _ in range(_MAX_CHAIN):
        if current is None:
            return None
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return current.strerror or os.strerror(current.errno)
        if isinstance(current, sqlite3.Error) and (getattr(current, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL:
            return str(current)
        current = current.__cause__ or current.__context__
    return None


class Headroom:
    """Space kept back on a disk for deletes, in the file at ``path``: one per data
    directory, shared by its volumes (a volume opened on its own keeps one of its own).

    Safe from any thread: puts on many threads, in any volume, may find it given back and
    try to take it again at once (one of them does; the lock keeps them off each other's
    file)."""

    def __init__(self, path: Path, size: int = HEADROOM_BYTES) -> None:
        self.path = path
        self.size = size
        self.held = False
        self._warned = False  # said once that there is no room to take it back yet
        self._lock = threading.Lock()

    def restore(self) -> bool:
        """Take the space back if the disk has it; whether it is held now."""
        if self.held:
            return True
        with self._lock:
            return self._restore_locked()

    def _restore_locked(self) -> bool:
        if self.held:
            return True
        partial = self.path.with_name(self.path.name + ".new")
        try:
            if self.path.stat().st_size == self.size:
                partial.unlink(missing_ok=True)  # a process killed while it made one
                self.held = True
                return True
        except FileNotFoundError:
            pass
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)  # real blocks: a sparse file reserves none
            finally:
                os.close(fd)
            os.replace(partial, self.path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            if disk_full_reason(exc) is None:
                raise
            if not self._warned:
                log.warning("%s: the disk has no room for the %d MiB kept back for deletes yet; "
                            "new content is refused until it has", self.path.parent, self.size >> 20)
                self._warned = True
            return False
        self.held = True
        self._warned = False
        return True

    def check_room(self) -> None:
        """Before new content: refuse it (``ENOSPC``) while the headroom is not held and
        cannot be taken back, so that the space a delete freed, or the little left at open,
        goes to deletes and not to the next put."""
        if not self.held and not self.restore():
            raise OSError(errno.ENOSPC, f"No space left on device; its last {self.size >> 20} MiB are kept for deletes")

    def release(self) -> bool:
        """Give the space to the disk; whether there was any to give."""
        with self._lock:
            self.held = False
            try:
                had = self.path.stat().st_size > 0
                self.path.unlink()
            except FileNotFoundError:
                return False
            return had

    def freeing(self, op: Callable[[], T]) -> T:
        """Run ``op``, a change that frees space (a delete, a collection of blobs). If the
        disk is too full even for it, give the headroom back and run it once more (so
        ``op`` must change nothing when it fails). ``restore`` takes the space again."""
        was_held = self.held
        try:
            return op()
        except (OSError, sqlite3.Error) as exc:
            if disk_full_reason(exc) is None:
                raise
            if self.release():
                log.warning("%s: disk full; gave back the %d MiB kept for deletes, so this one can commit",
                            self.path.parent, self.size >> 20)
            elif not was_held:
                raise  # nothing was freed since this began: it would fail the same way
            # Given back by this call, or by a delete in another volume while it ran: what
            # that freed may be enough for this one too (op changed nothing: safe to retry).
            return op()
