"""Open files of a mount: remote reads with read-ahead, and writes staged on local disk.

* :class:`RemoteReader` reads a committed file in windows (ranged ``Read`` calls, each
  bounded by the client timeout, so a dead owner costs at most one timeout, never a hang).
  A sequential reader gets the next window prefetched while it consumes this one; memory
  per handle is at most two windows whatever the file size.
* :class:`StagedFile` is a file open for writing: its bytes live in a staging file on disk
  (filled from the committed file first unless truncated), random writes, appends and
  truncation act on it, and :meth:`StagedFile.commit` sends it as ONE atomic put. Several
  descriptors of one path share one StagedFile, so they see each other's writes.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from federation.fuse.staging import Staging

WINDOW = 8 << 20


class RemoteReader:
    """Windowed ranged reads of one committed file, prefetching the next window."""

    def __init__(self, client: Any, gpath: str, size: int, pool: ThreadPoolExecutor,
                 timeout: float, window: int = WINDOW) -> None:
        self.client, self.gpath, self.size = client, gpath, size
        self._pool, self._timeout, self._window = pool, timeout, window
        self._buf = b""
        self._buf_off = 0
        self._next: tuple[int, Future[bytes]] | None = None
        self._lock = threading.Lock()

    def _fetch(self, off: int) -> bytes:
        length = min(self._window, self.size - off)
        if length <= 0:
            return b""
        return b"".join(self.client.read_chunks(self.gpath, offset=off, length=length,
                                                timeout=self._timeout))

    def cached(self, off: int, size: int) -> bytes | None:
        """The bytes if this window already holds them (no I/O: safe on the event loop)."""
        end = min(off + size, self.size)
        if off >= self.size:
            return b""
        with self._lock:
            if self._buf_off <= off and end <= self._buf_off + len(self._buf):
                data = self._buf[off - self._buf_off:end - self._buf_off]
                self._maybe_prefetch(end)
                return data
        return None

    def read(self, off: int, size: int) -> bytes:
        end = min(off + size, self.size)
        if off >= self.size:
            return b""
        with self._lock:
            out = bytearray()
            pos = off
            while pos < end:
                if not (self._buf_off <= pos < self._buf_off + len(self._buf)):
                    nxt = self._next
                    self._next = None
                    if nxt is not None and nxt[0] == pos:
                        data = nxt[1].result()
                    else:
                        if nxt is not None:
                            nxt[1].cancel()
                        data = self._fetch(pos)
                    if not data:
                        break
                    self._buf, self._buf_off = data, pos
                take = self._buf[pos - self._buf_off:end - self._buf_off]
                out += take
                pos += len(take)
            self._maybe_prefetch(pos)
            return bytes(out)

    def _maybe_prefetch(self, pos: int) -> None:
        """Sequential reading near the window's end: start fetching the next one."""
        nxt_off = self._buf_off + len(self._buf)
        if (self._next is None and nxt_off < self.size and self._buf
                and pos >= self._buf_off + len(self._buf) // 2):
            self._next = (nxt_off, self._pool.submit(self._fetch, nxt_off))

    def close(self) -> None:
        with self._lock:
            if self._next is not None:
                self._next[1].cancel()
                self._next = None
            self._buf = b""


class StagedFile:
    """One path open for writing: content staged on disk until committed."""

    def __init__(self, staging: Staging, rel: str, mode: int, exists: bool) -> None:
        self.staging = staging
        self.rel = rel
        self.fd, self.file = staging.new_file()
        self.size = 0
        self.mode = mode
        self.mtime: float | None = None  # set by utimens; a later write clears it
        self.dirty = False
        self.exists_remote = exists  # committed at least once (so unlink must reach it)
        self.unlinked = False
        self.exclusive = False  # created with O_EXCL: the first commit must not replace
        self.refs = 0
        self.lock = threading.Lock()  # one commit at a time
        self.touched = time.time()

    def fill(self, client: Any, gpath: str, size: int, timeout: float) -> None:
        """Copy the committed content in (open for write without O_TRUNC), window by
        window so each call is bounded by ``timeout``."""
        self.staging.reserve(0, size)
        pos = 0
        while pos < size:
            start = pos
            for chunk in client.read_chunks(gpath, offset=pos, length=min(WINDOW, size - pos),
                                            timeout=timeout):
                os.pwrite(self.fd, chunk, pos)
                pos += len(chunk)
            if pos == start:  # the file shrank since its stat: keep what there is
                break
        self.size = pos

    def write(self, off: int, data: bytes) -> int:
        end = off + len(data)
        if end > self.size:
            self.staging.reserve(self.size, end)
        n = os.pwrite(self.fd, data, off)
        self.size = max(self.size, off + n)
        self.dirty = True
        self.mtime = None
        self.touched = time.time()
        return n

    def read(self, off: int, size: int) -> bytes:
        return os.pread(self.fd, size, off)

    def truncate(self, size: int) -> None:
        self.staging.reserve(self.size, size)
        os.ftruncate(self.fd, size)
        self.size = size
        self.dirty = True
        self.mtime = None
        self.touched = time.time()

    def commit(self, client: Any, gpath: str) -> dict[str, Any] | None:
        """Send the staged content as one atomic put (if anything changed)."""
        with self.lock:
            if not self.dirty or self.unlinked:
                return None
            with open(self.file, "rb") as fh:
                info: dict[str, Any] = client.put(fh, gpath, mode=self.mode, mtime=self.mtime,
                                                  if_absent=self.exclusive)
            self.dirty = False
            self.exclusive = False
            self.exists_remote = True
            return info

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
        self.staging.release(self.size)
        Path(self.file).unlink(missing_ok=True)
