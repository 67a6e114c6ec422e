"""The on-disk staging area of one mount: files opened for writing live here until commit.

Staged data is on disk, never in memory, so memory does not grow with file size. Each
mount owns ``<cache-dir>/mount-<pid>-<nonce>/``; it is removed at unmount, and a directory
whose process is gone (a crash, kill -9) is removed when the next mount starts. What was
staged and never committed is never sent anywhere: it was not closed, so it is not claimed.
``max_bytes`` bounds the space used: a write past it fails with ENOSPC.
"""
from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import threading
from pathlib import Path

from federation.pids import pid_alive

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gns" / "fuse"


class Staging:
    """Temp files for open-for-write handles, under a directory this mount owns."""

    def __init__(self, cache_dir: Path, max_bytes: int = 0) -> None:
        self.cache_dir = Path(cache_dir)
        self.max_bytes = max_bytes
        self.dir = self.cache_dir / f"mount-{os.getpid()}-{secrets.token_hex(4)}"
        self._used = 0
        self._lock = threading.Lock()
        self._n = 0

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
        shutil.rmtree(self.dir, ignore_errors=True)

    def new_file(self) -> tuple[int, Path]:
        """A fresh, empty staging file: (fd opened read-write, its path)."""
        with self._lock:
            self._n += 1
            path = self.dir / f"f{self._n}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        return fd, path

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
