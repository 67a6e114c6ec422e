"""Open files of a mount: remote reads with read-ahead, and writes staged on local disk.

* :class:`RemoteReader` reads a committed file in windows (ranged ``Read`` calls, each
  bounded by the client timeout, so a dead owner costs at most one timeout, never a hang).
  A sequential reader gets the next window prefetched while it consumes this one; memory
  per handle is at most two windows whatever the file size.
* :class:`StagedFile` is a file open for writing: its bytes live in a staging file on disk
  (filled from the committed file first unless truncated), random writes, appends and
  truncation act on it, and :meth:`StagedFile.commit` sends it as ONE atomic put. Several
  descriptors of one path share one StagedFile, so they see each other's writes.
* :class:`StreamingPut`: a new (or truncated) file written front to back, as ``cp``,
  ``dd`` and most writers do, is also streamed to the owner while it is written, so close
  only finishes a put that is already under way; the first out-of-order write or
  truncation aborts that put (nothing committed) and close sends the staged file instead.
"""
from __future__ import annotations

import bisect
import errno
import itertools
import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, cast

from federation.fuse.staging import Staging, StagingFile

if TYPE_CHECKING:
    from federation.client import Client, FileInfo

WINDOW = 8 << 20
STREAM_CHUNK = 1 << 20
STREAM_QUEUE = 8  # chunks in flight to the owner: the memory bound of a streaming put


class _Abort(Exception):
    """Raised inside a streaming put's source to cancel it (nothing gets committed)."""


class StreamingPut:
    """A put fed chunk by chunk from FUSE writes, in a thread of its own (joined by
    :meth:`finish` or :meth:`abort`)."""

    _END = b""

    def __init__(self, client: Client, gpath: str, mode: int, exclusive: bool) -> None:
        self.q: queue.Queue[bytes | None] = queue.Queue(maxsize=STREAM_QUEUE)
        self.result: FileInfo | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(client, gpath, mode, exclusive), daemon=True,
            name="gns-fuse-put")
        self._thread.start()

    def _run(self, client: Client, gpath: str, mode: int, exclusive: bool) -> None:
        try:
            # put only read()s a source that is not seekable(); _QueueSource is that much of IO.
            source = cast("IO[bytes]", _QueueSource(self.q))
            self.result = client.put(source, gpath, mode=mode, if_absent=exclusive)
        except BaseException as exc:  # noqa: BLE001 - handed to the writer by finish()
            self.error = exc
            while True:  # unblock a writer waiting on a full queue
                try:
                    if self.q.get_nowait() in (None, self._END):
                        break
                except queue.Empty:
                    break

    def full(self) -> bool:
        return self.q.full()

    def push(self, chunk: bytes) -> None:
        """Blocks while the owner is behind (call from a worker thread when ``full()``)."""
        if self.error is None:
            self.q.put(chunk)

    def finish(self) -> FileInfo:
        if self.error is None:
            self.q.put(self._END)
        self._thread.join()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    def abort(self) -> None:
        if self._thread.is_alive():
            try:
                self.q.put(None, timeout=30)
            except queue.Full:
                pass
            self._thread.join(30)


class _QueueSource:
    """A read()-able source over the queue; ``None`` aborts the put."""

    def __init__(self, q: queue.Queue[bytes | None]) -> None:
        self.q = q
        self.done = False

    def read(self, n: int = -1) -> bytes:
        if self.done:
            return b""
        data = self.q.get()
        if data is None:
            raise _Abort("write was not sequential: the streamed put is abandoned")
        if not data:
            self.done = True
        return data

    def seekable(self) -> bool:
        return False


class _Window:
    """One window of a file as the messages it came in (views into them, never joined):
    a slice inside one message is a view too, so the kernel's copy of it is the only one."""

    def __init__(self, pieces: list[memoryview]) -> None:
        self._pieces = pieces
        self._starts = list(itertools.accumulate((len(p) for p in pieces), initial=0))

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, span: slice) -> bytes | memoryview:
        start, stop = max(span.start or 0, 0), min(span.stop, len(self))
        if start >= stop:
            return b""
        i = bisect.bisect_right(self._starts, start) - 1
        first = self._pieces[i][start - self._starts[i]:stop - self._starts[i]]
        if self._starts[i] + len(self._pieces[i]) >= stop:
            return first
        pieces = [first]  # a slice across messages: joined, the one copy
        while (i := i + 1) < len(self._pieces) and self._starts[i] < stop:
            pieces.append(self._pieces[i][:stop - self._starts[i]])
        return b"".join(pieces)


_EMPTY = _Window([])


class RemoteReader:
    """Windowed ranged reads of one committed file, prefetching the next window."""

    def __init__(self, client: Client, gpath: str, size: int, pool: ThreadPoolExecutor,
                 timeout: float, window: int = WINDOW) -> None:
        self.client, self.gpath, self.size = client, gpath, size
        self._pool, self._timeout, self._window = pool, timeout, window
        self._buf = _EMPTY
        self._buf_off = 0
        self._next: tuple[int, Future[_Window]] | None = None
        self._lock = threading.Lock()

    def _fetch(self, off: int) -> _Window:
        length = min(self._window, self.size - off)
        if length <= 0:
            return _EMPTY
        return _Window(list(self.client.read_views(self.gpath, offset=off, length=length,
                                                   timeout=self._timeout)))

    def cached(self, off: int, size: int) -> bytes | memoryview | None:
        """The bytes if this window already holds them (no I/O: safe on the event loop), as
        a view into the window: the kernel's copy is the only one."""
        end = min(off + size, self.size)
        if off >= self.size:
            return b""
        with self._lock:
            if self._buf_off <= off and end <= self._buf_off + len(self._buf):
                data = self._buf[off - self._buf_off:end - self._buf_off]
                self._maybe_prefetch(end)
                return data
        return None

    def read(self, off: int, size: int) -> bytes | memoryview:
        end = min(off + size, self.size)
        if off >= self.size:
            return b""
        with self._lock:
            pieces: list[bytes | memoryview] = []
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
                pieces.append(take)
                pos += len(take)
            self._maybe_prefetch(pos)
            # Within one window (the usual case) a view; across two, the one copy that joins.
            return pieces[0] if len(pieces) == 1 else b"".join(pieces)

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
            self._buf = _EMPTY


class StagedFile:
    """One path open for writing: content staged on disk until committed."""

    def __init__(self, staging: Staging, rel: str, mode: int, exists: bool) -> None:
        self.staging = staging
        self.rel = rel
        self._staged: StagingFile | None = staging.new_file()
        self.fd, self.file = self._staged.fd, self._staged.path
        self.size = 0
        # The file's length: past ``size`` a kept staging file holds an earlier file's bytes
        # (see staging.py), never shown or sent.
        self.length = self._staged.length
        self.mode = mode
        self.mtime: float | None = None  # set by utimens; a later write clears it
        self.dirty = False
        # The last commit failed (the app's close or fsync answered its error) and nothing
        # changed since: release commits nothing then (see ``Operations.release``).
        self.failed = False
        self.exists_remote = exists  # committed at least once (so unlink must reach it)
        self.unlinked = False
        self.exclusive = False  # created with O_EXCL: the first commit must not replace
        self.stream_ok = False  # set for an empty new/truncated file: may stream while written
        # Opened with O_TRUNC and nothing done since: a flush then commits nothing (a shell's
        # ``> f`` closes the descriptor it opened right after dup2, before a byte is written;
        # committing there showed readers an empty file). Release, or a later flush, does.
        self.only_truncated = False
        self.upload: StreamingPut | None = None
        # Written, not yet handed to the upload: the writes' own buffers, joined only to make
        # a chunk (a 1 MiB write, what the kernel sends a sequential writer, is one as it is).
        self._pend: list[bytes] = []
        self._pend_size = 0
        self.streamed = 0  # bytes handed to the upload
        self.refs = 0
        self.lock = threading.Lock()  # one commit at a time
        self.touched = time.time()

    def fill(self, client: Client, gpath: str, size: int, timeout: float) -> None:
        """Copy the committed content in (open for write without O_TRUNC), window by
        window so each call is bounded by ``timeout``."""
        self.staging.reserve(0, size)
        pos = 0
        while pos < size:
            start = pos
            for chunk in client.read_views(gpath, offset=pos, length=min(WINDOW, size - pos),
                                           timeout=timeout):
                self._pwrite(chunk, pos)
                pos += len(chunk)
                self.size, self.length = pos, max(self.length, pos)  # what a full disk keeps
            if pos == start:  # the file shrank since its stat: keep what there is
                break

    def write(self, off: int, data: bytes) -> int:
        end = off + len(data)
        if end > self.size:
            self.staging.reserve(self.size, end)
        if off > self.size:
            self._cut_old_bytes()  # the gap reads as zeros, not as an earlier file's bytes
        n = self._pwrite(data, off)
        self.length = max(self.length, off + n)
        self.only_truncated = False
        if self.stream_ok and off == self.streamed + self._pend_size and off == self.size:
            self._pend.append(data if n == len(data) else data[:n])
            self._pend_size += n
        elif self.stream_ok:
            self.stop_stream()
        self.size = max(self.size, off + n)
        self.dirty = True
        self.failed = False
        self.mtime = None
        self.touched = time.time()
        return n

    def stream_chunk(self, client: Client, gpath: str) -> bytes | None:
        """A full chunk for the streaming put (started with the first one), if any."""
        if not self.stream_ok or self._pend_size < STREAM_CHUNK:
            return None
        if self.upload is None:
            self.upload = StreamingPut(client, gpath, self.mode, self.exclusive)
        chunk = self._take_pending()
        self.streamed += len(chunk)
        return chunk

    def _take_pending(self) -> bytes:
        pend, self._pend, self._pend_size = self._pend, [], 0
        return pend[0] if len(pend) == 1 else b"".join(pend)

    def stop_stream(self) -> None:
        """Out of order: abandon the streamed put (commit will send the staged file)."""
        self.stream_ok = False
        self._pend.clear()
        self._pend_size = 0
        up, self.upload = self.upload, None
        if up is not None:
            up.abort()

    def read(self, off: int, size: int) -> bytes:
        return os.pread(self.fd, max(0, min(size, self.size - off)), off)

    def truncate(self, size: int) -> None:
        if self.stream_ok and size != self.size:
            self.stop_stream()
        self.staging.reserve(self.size, size)
        self._cut_old_bytes()  # growing reads as zeros
        os.ftruncate(self.fd, size)
        self.size = self.length = size
        self.dirty = True
        self.failed = False
        self.only_truncated = False
        self.mtime = None
        self.touched = time.time()

    def commit(self, client: Client, gpath: str) -> FileInfo | None:
        """Send the staged content as one atomic put (if anything changed)."""
        with self.lock:
            if not self.dirty or self.unlinked:
                self.stop_stream()
                return None
            try:
                return self._commit_locked(client, gpath)
            except BaseException:
                self.failed = True
                raise

    def _commit_locked(self, client: Client, gpath: str) -> FileInfo:
        """``commit`` of a dirty file, under the lock."""
        up = self.upload
        if up is not None and self.stream_ok and self.streamed + self._pend_size == self.size:
            if self._pend:
                up.push(self._take_pending())
            self.upload, self.stream_ok = None, False
            info: FileInfo = up.finish()
            if self.mtime is not None or (info.mode or self.mode) != self.mode:
                client.set_attrs(gpath, mode=self.mode, mtime=self.mtime)
        else:
            self.stop_stream()
            self._cut_old_bytes()  # the put sends the file to its end
            with open(self.file, "rb") as fh:
                info = client.put(fh, gpath, mode=self.mode, mtime=self.mtime,
                                  if_absent=self.exclusive)
        self.dirty = False
        self.exclusive = False
        self.exists_remote = True
        return info

    def _pwrite(self, data: bytes | memoryview, off: int) -> int:
        try:
            return os.pwrite(self.fd, data, off)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            freed = self.staging.give_back()  # the kept files' space, for this write
            if self.length > self.size:
                self._cut_old_bytes()
                freed = True
            if not freed:
                raise
            return os.pwrite(self.fd, data, off)

    def _cut_old_bytes(self) -> None:
        if self.length > self.size:
            os.ftruncate(self.fd, self.size)
            self.length = self.size

    def close(self) -> None:
        self.stop_stream()
        staged, self._staged = self._staged, None
        if staged is not None:  # once: a kept file must have one user at a time
            self.fd = -1  # a late use fails (EBADF) instead of writing into the next user's
            self.staging.release(self.size)
            self.staging.recycle(staged._replace(length=self.length))
