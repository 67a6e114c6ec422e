"""The on-disk staging area of one mount: files opened for writing live here until commit.

Staged data is on disk, never in memory, so memory does not grow with file size. Each
mount owns ``<cache-dir>/mount-<pid>-<nonce>/``; it is removed at unmount, and a directory
whose process is gone (a crash, kill -9) is removed when the next mount starts. What was
staged and never committed is never sent anywhere: it was not closed, so it is not claimed.
``max_bytes`` bounds the space used: a write past it fails with ENOSPC.

A staging file is kept for the next file written (up to ``keep_bytes`` of them, for
``keep_idle`` seconds; none when ``max_bytes`` bounds the area) instead of deleted. Why:
its pages stay in the page cache, and writing over cached pages is a copy, where a new
file's pages come from the kernel's free list. On a virtual machine that gives free pages
back to its host (virtio-balloon's free page reporting, as here) each such page is faulted
in again: staging 256 MiB cost the mount 0.35 to 3 CPU-s per GiB in a new file against 0.15
over a kept one, and held a write through the mount to about 40% of a ``gns put``. A kept
file holds bytes of an earlier file past the new one's length:
:class:`~federation.fuse.handles.StagedFile` never shows or sends them (reads stop at its
size; a gap, a truncation up and a commit from the file cut them off first). A write that
finds the disk full gives every kept file back and tries once more. Kept files' pages are
dirty, so the kernel may write them back while they are kept: at most ``keep_bytes`` per
dirty expiry (30 s by default).
"""
from __future__ import annotations

import errno
import logging
import math
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from federation.pids import pid_alive

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gns" / "fuse"


KEEP_BYTES = 256 << 20
"""Staging files kept for reuse, in bytes of their lengths together, at most."""
KEEP_FILES = 16
"""Staging files kept for reuse, in number, at most (each an open descriptor)."""
KEEP_IDLE_S = 20.0
"""A kept file unused this long is deleted (before the kernel's 30 s dirty expiry writes it)."""


class StagingFile(NamedTuple):
    """A staging file: ``fd`` open read-write, and its ``length`` (a kept file's old bytes)."""

    fd: int
    path: Path
    length: int


class _Kept(NamedTuple):
    file: StagingFile
    since: float


class Staging:
    """Temp files for open-for-write handles, under a directory this mount owns."""

    def __init__(self, cache_dir: Path, max_bytes: int = 0, keep_bytes: int = KEEP_BYTES,
                 keep_files: int = KEEP_FILES, keep_idle: float = KEEP_IDLE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cache_dir = Path(cache_dir)
        self.max_bytes = max_bytes
        # A bounded staging area keeps nothing: a kept file's bytes would be on top of it.
        self.keep_bytes = 0 if max_bytes else keep_bytes
        self.keep_files = keep_files
        self.keep_idle = keep_idle
        self.dir = self.cache_dir / f"mount-{os.getpid()}-{secrets.token_hex(4)}"
        self._clock = clock
        self._used = 0
        self._lock = threading.Lock()
        self._n = 0
        self._kept: list[_Kept] = []  # last kept last: its pages were written most recently
        self._kept_bytes = 0

    def open(self) -> None:
        """Create our directory and sweep those of dead mounts."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        for d in self.cache_dir.glob("mount-*"):
            try:
                pid = int(d.name.split("-")[1])
            except (IndexError, ValueError):
                continue
            if not pid_alive(pid):
                log.warning("removing staging left by a crashed mount (pid %d): %s", pid, d)
                shutil.rmtree(d, ignore_errors=True)
        self.dir.mkdir(mode=0o700)

    def close(self) -> None:
        self.give_back()
        shutil.rmtree(self.dir, ignore_errors=True)

    def new_file(self) -> StagingFile:
        """A staging file: the one kept last, else a fresh, empty one."""
        with self._lock:
            if self._kept:
                file = self._kept.pop().file
                self._kept_bytes -= file.length
                return file
            self._n += 1
            path = self.dir / f"f{self._n}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        return StagingFile(fd, path, 0)

    def recycle(self, file: StagingFile) -> None:
        """``file`` is no longer used: keep it for the next one (cut to the bytes left of
        ``keep_bytes``), or delete it. Expired kept files go now too."""
        self.sweep()
        with self._lock:
            room = self.keep_bytes - self._kept_bytes
            if len(self._kept) < self.keep_files and room > 0 and _cut(file, room):
                file = file._replace(length=min(file.length, room))
                self._kept.append(_Kept(file, self._clock()))
                self._kept_bytes += file.length
                return
        _delete(file)

    def sweep(self) -> None:
        """Delete kept files unused for ``keep_idle`` seconds (the mount's timer calls this)."""
        self._delete_kept(since_before=self._clock() - self.keep_idle)

    def give_back(self) -> bool:
        """Delete every kept file now (the disk is full); whether there was any."""
        return self._delete_kept(since_before=math.inf)

    def _delete_kept(self, since_before: float) -> bool:
        with self._lock:
            gone = [k for k in self._kept if k.since <= since_before]
            if not gone:
                return False
            self._kept = [k for k in self._kept if k.since > since_before]
            self._kept_bytes = sum(k.file.length for k in self._kept)
        for k in gone:
            _delete(k.file)
        return True

    @property
    def kept(self) -> int:
        """Staging files kept for reuse now."""
        return len(self._kept)

    def reserve(self, old_size: int, new_size: int) -> None:
        """Account for a staged file growing; ENOSPC past ``max_bytes``."""
        with self._lock:
            grow = max(0, new_size) - max(0, old_size)
            if self.max_bytes and grow > 0 and self._used + grow > self.max_bytes:
                raise OSError(errno.ENOSPC, "gns fuse staging area is full")
            self._used += grow

    def release(self, size: int) -> None:
        with self._lock:
            self._used = max(0, self._used - size)


def _cut(file: StagingFile, length: int) -> bool:
    """Whether ``file`` is at most ``length`` bytes long, cut to it if it was longer."""
    if file.length <= length:
        return True
    try:
        os.ftruncate(file.fd, length)
    except OSError:
        return False
    return True


def _delete(file: StagingFile) -> None:
    try:
        os.close(file.fd)
    except OSError:
        pass
    file.path.unlink(missing_ok=True)
