"""What a client hands out for streamed data: file objects and the change stream.

Reads are ranged streams (a seek opens a new one), writes feed one Write stream through a
bounded queue and commit on ``close()``; nothing holds a whole file in memory.
"""
from __future__ import annotations

import errno
import fcntl
import io
import mmap
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import grpc

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api.errors import from_rpc_error
from federation.client.models import Change, DirEntry, FileInfo

if TYPE_CHECKING:
    from federation.client.facade import Client

Progress = Callable[[int], None]
"""Called with the number of bytes just moved."""

# A download is staged in page-aligned blocks of this size and written with O_DIRECT.
_STAGE = 4 << 20
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)


class ChangeStream:
    """The iterator ``Client.watch`` returns: one :class:`Change` per committed change."""

    def __init__(self, call: Any, where: str) -> None:
        # ``call`` is grpc's server-stream call (an iterator of pb.Change with cancel());
        # grpc ships no types, so it is Any at this boundary.
        self._call = call
        self._where = where

    def __iter__(self) -> ChangeStream:
        return self

    def __next__(self) -> Change:
        try:
            c: pb.Change = next(self._call)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            raise from_rpc_error(exc, f"cluster {self._where}") from None
        return Change(
            version=int(c.version), op=c.op, path=c.path, src=c.src, volume=c.volume,
            relative_path=c.relative_path, size=int(c.size), mtime=c.mtime, mode=int(c.mode),
        )

    def close(self) -> None:
        self._call.cancel()

    def __enter__(self) -> ChangeStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def file_info(info: pb.FileInfo, *, mirrored_version: int | None = None) -> FileInfo:
    """The model of a FileInfo reply (``mirrored_version``: what the serving mirror holds)."""
    return FileInfo(
        path=info.path, type="dir" if info.type == "dir" else "file", size=int(info.size),
        mtime=info.mtime, sha256=info.sha256, version=int(info.version), mode=int(info.mode),
        served_by=info.served_by or None, stale=info.stale, mirrored_version=mirrored_version,
    )


def dir_entry(e: pb.DirEntry) -> DirEntry:
    return DirEntry(name=e.name, type="dir" if e.type == "dir" else "file", size=int(e.size),
                    mtime=e.mtime, mode=int(e.mode))


def seekable_source(fh: Any) -> bool:
    try:
        return bool(fh.seekable())
    except (AttributeError, ValueError):
        return False


def size_of(fh: Any) -> int:
    try:
        return max(0, os.fstat(fh.fileno()).st_size - (fh.tell() if seekable_source(fh) else 0))
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return 0


def read_at_least(fh: IO[bytes], n: int) -> bytes:
    """At least ``n`` bytes of ``fh`` unless it ends first (b"" from ``read``). A pipe, or a
    queue-fed source, may return fewer bytes per read than asked, or more."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        data = fh.read(n - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def write_local_file(dst: Path, chunks: Iterable[bytes | memoryview], progress: Progress | None = None) -> int:
    """Write ``chunks`` to a new local file ``dst`` and fsync it; the byte count.

    Why direct I/O: writing a downloaded file through the page cache and fsyncing it cost
    the client about 2.2 CPU-s per GiB of kernel time (allocating, copying and writing back
    every page) against 0.06 with O_DIRECT (issue 14). Full blocks therefore go straight
    from a page-aligned staging buffer to the device; the tail (and any filesystem that
    refuses O_DIRECT, such as tmpfs) goes through the page cache. The fsync makes the
    result equally durable either way.
    """
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        sink = _DirectSink(fd)
        try:
            n = 0
            for data in chunks:
                sink.write(data)
                n += len(data)
                if progress:
                    progress(len(data))
            sink.flush()
        finally:
            sink.close()
        os.fsync(fd)
    finally:
        os.close(fd)
    return n


class _DirectSink:
    """Appends to ``fd`` in whole page-aligned blocks with O_DIRECT where it can."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._stage = mmap.mmap(-1, _STAGE)  # page-aligned, as O_DIRECT needs
        self._fill = 0
        self._direct = bool(_O_DIRECT)

    def write(self, data: bytes | memoryview) -> None:
        with memoryview(data) as view:
            while view:
                n = min(len(view), _STAGE - self._fill)
                self._stage[self._fill : self._fill + n] = view[:n]
                self._fill += n
                view = view[n:]
                if self._fill == _STAGE:
                    self._write_stage()

    def flush(self) -> None:
        """Write what is staged (a partial block goes through the page cache)."""
        if self._fill:
            self._write_stage()

    def close(self) -> None:
        try:
            self._stage.close()
        except BufferError:
            # A view of the stage is still alive in the frame of a write that an interrupt
            # (Ctrl-C, SIGTERM) left: the mmap goes with that frame. Raising here would
            # replace the interrupt, and the download's clean-up, with this error.
            pass

    def _write_stage(self) -> None:
        # Offsets into one view, each slice released by its ``with``: no view of the stage
        # outlives this call, even when an interrupt ends it inside ``os.write``.
        with memoryview(self._stage) as stage:
            done = 0
            if self._direct and self._fill == _STAGE:
                done = self._write_direct(stage)
            if done < self._fill and _O_DIRECT:
                _set_flag(self._fd, _O_DIRECT, False)
            while done < self._fill:
                with stage[done : self._fill] as rest:
                    done += os.write(self._fd, rest)
        self._fill = 0

    def _write_direct(self, data: memoryview) -> int:
        """Bytes of ``data`` written with O_DIRECT (0 if this file cannot: fall back)."""
        try:
            _set_flag(self._fd, _O_DIRECT, True)
            done = os.write(self._fd, data)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            done = 0  # the filesystem refuses O_DIRECT (tmpfs, some FUSE): page cache
        if done != len(data):
            # a short direct write leaves the offset unaligned: buffered from here on
            self._direct = False
        return done


def _set_flag(fd: int, flag: int, on: bool) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    want = flags | flag if on else flags & ~flag
    if want != flags:
        fcntl.fcntl(fd, fcntl.F_SETFL, want)


class RangedReader(io.RawIOBase):
    """A seekable raw reader: each read after a seek opens a new ranged stream."""

    def __init__(self, client: Client, path: str, size: int) -> None:
        self.client, self.path, self.size = client, path, size
        self.pos = 0
        self._it: Iterator[memoryview] | None = None
        self._buf = memoryview(b"")  # the rest of the current chunk, sliced without copies

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        new = {io.SEEK_SET: offset, io.SEEK_CUR: self.pos + offset, io.SEEK_END: self.size + offset}[whence]
        if new != self.pos:
            self._drop()
            self.pos = max(0, new)
        return self.pos

    def readinto(self, b: Any) -> int:
        if self.pos >= self.size:
            return 0
        if not self._buf:
            if self._it is None:
                self._it = self.client.read_views(self.path, offset=self.pos)
            self._buf = memoryview(next(self._it, b""))
            if not self._buf:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        self.pos += n
        return n

    def _drop(self) -> None:
        if self._it is not None:
            close = getattr(self._it, "close", None)
            if close:
                close()
        self._it, self._buf = None, memoryview(b"")

    def close(self) -> None:
        self._drop()
        super().close()


class _Abandon:
    """The queue's word that the writer gave up: the put fails, nothing is committed."""


_ABANDON = _Abandon()


class WriteAbandoned(Exception):
    """Raised into a put whose writer gave up (an exception in its ``with`` block)."""


class StreamingWriter(io.RawIOBase):
    """Bytes written go straight into a Write stream (bounded queue); close() commits.

    Left by an exception (``with`` block), it commits nothing: the put is cancelled, as a
    put is atomic (a half-written file must not replace the old one)."""

    def __init__(self, client: Client, path: str) -> None:
        self._q: queue.Queue[bytes | None | _Abandon] = queue.Queue(maxsize=8)
        self._result: FileInfo | None = None
        self._error: BaseException | None = None
        self._abandoned = False
        self._pending = bytearray()
        self._chunk = client.chunk_size

        def run() -> None:
            try:
                self._result = client.put(cast(IO[bytes], QueueReader(self._q)), path)
            except BaseException as exc:  # noqa: BLE001 - handed to the writer: close() raises it
                self._error = exc
                while self._q.get() is not None:  # unblock the writer side
                    pass

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        if self._abandoned:
            raise ValueError("write to an abandoned gns file")
        if self._error is not None:
            raise self._error
        n = len(b)
        self._pending += b
        while len(self._pending) >= self._chunk:
            with memoryview(self._pending) as view:  # one copy per chunk, not three
                piece = bytes(view[: self._chunk])
            self._q.put(piece)
            del self._pending[: self._chunk]
        return n

    def abandon(self) -> None:
        """Commit nothing: cancel the put (what leaving a ``with`` block by an exception
        does). The file keeps its old content, or stays absent."""
        if self.closed or self._abandoned:
            return
        self._abandoned = True
        self._pending.clear()
        self._q.put(_ABANDON)  # the put's reader raises on it
        self._q.put(None)  # ends the drain of a put that had failed already
        self._thread.join()

    def close(self) -> None:
        if self.closed:
            return
        if self._abandoned:
            super().close()
            return
        if self._pending:
            self._q.put(bytes(self._pending))
            self._pending.clear()
        self._q.put(None)
        self._thread.join()
        super().close()
        if self._error is not None:
            raise self._error

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None:
            self.abandon()
        self.close()

    @property
    def info(self) -> FileInfo | None:
        """What the commit wrote (None until ``close()`` succeeded)."""
        return self._result


class TextWriter(io.TextIOWrapper):
    """``open(path, "w")``: UTF-8 text into a :class:`StreamingWriter`, which an exception
    in the ``with`` block abandons as it does in binary mode."""

    def __init__(self, raw: StreamingWriter) -> None:
        super().__init__(cast(IO[bytes], raw), encoding="utf-8", write_through=True)
        self._raw = raw

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None:
            self._raw.abandon()
        self.close()


class QueueReader(io.RawIOBase):
    def __init__(self, q: queue.Queue[bytes | None | _Abandon]) -> None:
        self.q = q
        self.done = False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.done:
            return b""
        data = self.q.get()
        if data is None:
            self.done = True
            return b""
        if isinstance(data, _Abandon):
            self.done = True
            raise WriteAbandoned("the writer abandoned this file: nothing is committed")
        return data
