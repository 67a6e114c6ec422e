"""What a client hands out for streamed data: file objects and the change stream.

Reads are ranged streams (a seek opens a new one), writes feed one Write stream through a
bounded queue and commit on ``close()``; nothing holds a whole file in memory.
"""
from __future__ import annotations

import io
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, cast

import grpc

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api.errors import from_rpc_error
from federation.client.models import Change, DirEntry, FileInfo

if TYPE_CHECKING:
    from federation.client.facade import Client

Progress = Callable[[int], None]
"""Called with the number of bytes just moved."""


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


class RangedReader(io.RawIOBase):
    """A seekable raw reader: each read after a seek opens a new ranged stream."""

    def __init__(self, client: Client, path: str, size: int) -> None:
        self.client, self.path, self.size = client, path, size
        self.pos = 0
        self._it: Iterator[bytes] | None = None
        self._buf = b""

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
                self._it = self.client.read_chunks(self.path, offset=self.pos)
            self._buf = next(self._it, b"")
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
        self._it, self._buf = None, b""

    def close(self) -> None:
        self._drop()
        super().close()


class StreamingWriter(io.RawIOBase):
    """Bytes written go straight into a Write stream (bounded queue); close() commits."""

    def __init__(self, client: Client, path: str) -> None:
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._result: FileInfo | None = None
        self._error: BaseException | None = None
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
        if self._error is not None:
            raise self._error
        self._pending += bytes(b)
        while len(self._pending) >= self._chunk:
            self._q.put(bytes(self._pending[: self._chunk]))
            del self._pending[: self._chunk]
        return len(b)

    def close(self) -> None:
        if self.closed:
            return
        if self._pending:
            self._q.put(bytes(self._pending))
            self._pending.clear()
        self._q.put(None)
        self._thread.join()
        super().close()
        if self._error is not None:
            raise self._error

    @property
    def info(self) -> FileInfo | None:
        """What the commit wrote (None until ``close()`` succeeded)."""
        return self._result


class QueueReader(io.RawIOBase):
    def __init__(self, q: queue.Queue[bytes | None]) -> None:
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
        return data
