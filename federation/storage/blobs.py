"""Content-addressed, immutable blob files of one volume: ``blobs/<sha[:2]>/<sha256>``.

A blob is written as a temp file under ``tmp/`` while it is hashed, fsynced, renamed into
place and its directory fsynced, so a blob that exists under its name is whole and durable.
Because blobs never change after that and are only unlinked when nothing references them,
a reader holding an open descriptor can never see a torn file (POSIX keeps the inode alive).

This module knows files only: it must never touch the catalog, decide what is referenced
(``volume.py`` does, under its lock), rewrite a blob in place, or hold a whole file in memory.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Full stages of this size go to disk with O_DIRECT (a multiple of any block size).
_STAGE = 4 << 20
_DIRECT_IO = hasattr(os, "O_DIRECT")
_PARALLEL_HASH_MIN = 1 << 16
_hash_pool: ThreadPoolExecutor | None = None
_hash_pool_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """Threads that hash big chunks while the caller writes them (both release the GIL)."""
    global _hash_pool
    with _hash_pool_lock:
        if _hash_pool is None:
            _hash_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="gns-sha256")
        return _hash_pool


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a create, an unlink) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TempBlob:
    """A blob being written: bytes go to a temp file and into a running sha256.

    Why direct I/O: writing a large file through the page cache costs the writer about as
    much kernel CPU as everything else in a put (allocating and copying every page, then
    the fsync's writeback). Full 4 MiB stages are therefore written with ``O_DIRECT`` from a
    page-aligned buffer: the device reads them straight from it. Only the tail (and every
    file smaller than one stage, so small puts never allocate a stage) goes through the
    page cache, written when the blob is finished. ``finish`` fsyncs either way, so the
    durability is the same. A filesystem that refuses ``O_DIRECT`` (tmpfs) gets buffered
    writes throughout.
    """

    def __init__(self, tmp_dir: Path) -> None:
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="put-", suffix=".part")
        self.path = Path(name)
        self._fd: int | None = fd
        self._hash = hashlib.sha256()
        self.size = 0
        self._small = bytearray()  # content so far while it is under one stage
        self._stage: mmap.mmap | None = None  # page-aligned, allocated once it is not
        self._fill = 0
        self._direct = _DIRECT_IO

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Append one chunk (any size); memory use stays bounded by the chunk and a stage."""
        if self._fd is None:
            raise ValueError("blob writer is closed")
        if len(chunk) >= _PARALLEL_HASH_MIN:
            # hash and write at once: a put then runs at max(disk, sha256) speed, not the sum
            hashed = _pool().submit(self._hash.update, chunk)
            try:
                self._append(chunk)
            finally:
                hashed.result()
        else:
            self._append(chunk)
            self._hash.update(chunk)
        self.size += len(chunk)

    def _append(self, chunk: bytes | bytearray | memoryview) -> None:
        if self._stage is None:
            if len(self._small) + len(chunk) < _STAGE:
                self._small += chunk
                return
            self._stage = mmap.mmap(-1, _STAGE)
            self._stage[: len(self._small)] = self._small
            self._fill = len(self._small)
            self._small = bytearray()
        stage = self._stage
        view = memoryview(chunk).cast("B")
        while view:
            n = min(len(view), _STAGE - self._fill)
            stage[self._fill : self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == _STAGE:
                self._write_stage(_STAGE)
                self._fill = 0

    def _write_stage(self, length: int) -> None:
        """Write ``stage[:length]``: a full stage directly when the filesystem lets us."""
        assert self._fd is not None and self._stage is not None
        data = memoryview(self._stage)[:length]
        try:
            if self._direct and length == _STAGE:
                try:
                    _set_direct(self._fd, True)
                except OSError:
                    self._direct = False  # not on this filesystem: page cache from now on
                else:
                    done = os.write(self._fd, data)
                    if done == length:
                        return
                    # a short direct write leaves the offset unaligned: finish buffered
                    self._direct = False
                    data = data[done:]
            _set_direct(self._fd, False)
            _write_all(self._fd, data)
        finally:
            data.release()

    def finish(self) -> str:
        """Write the tail, fsync the temp file, close it, and return the content's sha256."""
        if self._fd is None:
            raise ValueError("blob writer is closed")
        fd = self._fd
        try:
            if self._stage is not None:
                if self._fill:
                    self._write_stage(self._fill)
            elif self._small:
                _write_all(fd, memoryview(self._small))
            os.fsync(fd)
        finally:
            self._close()
        return self._hash.hexdigest()

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        stage, self._stage = self._stage, None
        self._small = bytearray()
        try:
            if stage is not None:
                stage.close()
        except BufferError:
            # A view of the stage is still out (a write not waited for): the map goes when
            # that view does. The file must close anyway, or its blocks stay held for good.
            log.error("blob writer %s closed while a write still held its buffer", self.path.name)
        finally:
            if fd is not None:
                os.close(fd)

    def discard(self) -> None:
        """Drop the temp file; safe to call more than once and after ``finish``."""
        try:
            self._close()
        finally:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


def _set_direct(fd: int, on: bool) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    want = flags | os.O_DIRECT if on else flags & ~os.O_DIRECT
    if want != flags:
        fcntl.fcntl(fd, fcntl.F_SETFL, want)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data):]


class BlobStore:
    """The ``blobs/`` and ``tmp/`` directories of one volume."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob_dir = root / "blobs"
        self.tmp_dir = root / "tmp"

    def ensure_layout(self) -> None:
        """Create ``tmp/`` and the 256 shard directories (once; cheap when they exist)."""
        created = False
        for d in (self.blob_dir, self.tmp_dir):
            if not d.is_dir():
                d.mkdir(parents=True, exist_ok=True)
                created = True
        for i in range(256):
            shard = self.blob_dir / f"{i:02x}"
            if not shard.is_dir():
                shard.mkdir(exist_ok=True)
                created = True
        if created:
            fsync_dir(self.blob_dir)
            fsync_dir(self.root)

    def path(self, sha256: str) -> Path:
        return self.blob_dir / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def new_temp(self) -> TempBlob:
        return TempBlob(self.tmp_dir)

    def install(self, temp: TempBlob, sha256: str) -> None:
        """Move a finished temp file into place under its hash, durably.

        If the blob exists already its content is identical: the temp is dropped and the
        existing inode (which readers may hold open) is left alone.
        """
        target = self.path(sha256)
        if target.is_file():
            temp.discard()
            return
        os.rename(temp.path, target)
        fsync_dir(target.parent)

    def open(self, sha256: str) -> BinaryIO:
        """Open a blob for reading; raises ``FileNotFoundError`` when it is gone."""
        if not SHA256_RE.match(sha256):
            raise FileNotFoundError(sha256)
        return open(self.path(sha256), "rb", buffering=0)

    def set_aside(self, sha256: str) -> Path | None:
        """Move a blob whose bytes no longer match its name out of ``blobs/`` (so nothing
        serves it, and a fresh copy can be installed) into ``corrupt/``, kept for a human to
        look at. Returns where it went (None if it was gone already)."""
        aside = self.root / "corrupt"
        aside.mkdir(exist_ok=True)
        dest = aside / f"{sha256}.{time.time_ns()}"
        try:
            os.rename(self.path(sha256), dest)
        except FileNotFoundError:
            return None
        fsync_dir(self.path(sha256).parent)
        return dest

    def unlink(self, sha256: str) -> bool:
        try:
            self.path(sha256).unlink()
            return True
        except FileNotFoundError:
            return False

    def iter_all(self) -> Iterator[str]:
        """Every blob name on disk (no catalog involved), shard by shard."""
        for i in range(256):
            shard = self.blob_dir / f"{i:02x}"
            try:
                names = os.listdir(shard)
            except FileNotFoundError:
                continue
            yield from names

    def sweep_tmp(self) -> int:
        """Delete every leftover temp file (only safe when no writer is running: at open)."""
        count = 0
        try:
            names = os.listdir(self.tmp_dir)
        except FileNotFoundError:
            return 0
        for name in names:
            try:
                (self.tmp_dir / name).unlink()
                count += 1
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                log.warning("unexpected directory in %s: %s", self.tmp_dir, name)
        return count
