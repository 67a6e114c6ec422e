"""Content-addressed, immutable blob files of one volume: ``blobs/<sha[:2]>/<sha256>``.

A blob is written as a temp file under ``tmp/`` while it is hashed, fsynced, renamed into
place and its directory fsynced, so a blob that exists under its name is whole and durable.
Because blobs never change after that and are only unlinked when nothing references them,
a reader holding an open descriptor can never see a torn file (POSIX keeps the inode alive).

This module knows files only: it must never touch the catalog, decide what is referenced
(``volume.py`` does, under its lock), rewrite a blob in place, or hold a whole file in memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_WRITE_BUFFER = 1 << 20
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
    """A blob being written: bytes go to a temp file and into a running sha256."""

    def __init__(self, tmp_dir: Path) -> None:
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="put-", suffix=".part")
        self.path = Path(name)
        self._file: BinaryIO | None = os.fdopen(fd, "wb", buffering=_WRITE_BUFFER)
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Append one chunk (any size); memory use stays bounded by the chunk."""
        if self._file is None:
            raise ValueError("blob writer is closed")
        if len(chunk) >= _PARALLEL_HASH_MIN:
            # hash and write at once: a put then runs at max(disk, sha256) speed, not the sum
            hashed = _pool().submit(self._hash.update, chunk)
            try:
                self._file.write(chunk)
            finally:
                hashed.result()
        else:
            self._file.write(chunk)
            self._hash.update(chunk)
        self.size += len(chunk)

    def finish(self) -> str:
        """Flush and fsync the temp file, close it, and return the content's sha256."""
        if self._file is None:
            raise ValueError("blob writer is closed")
        f, self._file = self._file, None
        try:
            f.flush()
            os.fsync(f.fileno())
        finally:
            f.close()
        return self._hash.hexdigest()

    def discard(self) -> None:
        """Drop the temp file; safe to call more than once and after ``finish``."""
        if self._file is not None:
            f, self._file = self._file, None
            f.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


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
