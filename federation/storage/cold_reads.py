"""Reads of large blob ranges that are not in the page cache, with ``O_DIRECT``.

Why: blobs are written with ``O_DIRECT`` (``blobs.py``), so a large file read soon after it
was put, or a dataset larger than memory, is not in the page cache. A buffered read of it
costs the kernel a copy into the cache, a copy out, and the cache's upkeep (page allocation,
LRU, later reclaim): about a third of the owner's CPU for a cold 1 GiB get here. Reading
every large range ``O_DIRECT`` would instead send hot files (a model many pods load) back to
the disk each time, at about half the speed.

So a range first asks the page cache for ONE page at its start, without waiting
(``preadv2`` with ``RWF_NOWAIT``, on a descriptor with readahead off). Cached: the file is
hot, and the caller reads it buffered as before. Not cached: every chunk is read
``O_DIRECT``, from the block boundary before it into an aligned buffer. Why one page and not
a probe per chunk: on a miss the kernel still starts reading what was asked for into the
cache (measured here: a 1 MiB probe that returns EAGAIN leaves 256 pages cached), so probing
every chunk would read a cold file twice; and that one page is dropped again at the end, or
the next read would take the file for a hot one. A blob read again soon is the caller's to
read buffered, so that it becomes hot (``Reads``).

The probe is a heuristic: on a fast device the kernel sometimes completes the read of the
page before it answers (measured here: 4 probes in 40 of uncached pages came back as
cached). Such a cold range is then read buffered, as it was before this module.

Where the kernel or filesystem offers neither (``RWF_NOWAIT`` or ``O_DIRECT`` refused),
``ColdReads.open`` returns None and the caller reads buffered, as before.
"""

from __future__ import annotations

import io
import mmap
import os
from typing import BinaryIO

MIN_RANGE = 8 << 20
"""Ranges shorter than this are read buffered: small files are the ones worth caching."""
_BLOCK = 4096  # O_DIRECT alignment of offsets, lengths and buffers (page-aligned mmap)
_CAN = hasattr(os, "O_DIRECT") and hasattr(os, "RWF_NOWAIT") and hasattr(os, "preadv")


class ColdReads:
    """``O_DIRECT`` positional reads of one blob: ``read(pos, n)`` returns ``n`` bytes
    (fewer at end of file)."""

    def __init__(self, direct_fd: int, probe_fd: int, probed: int, chunk_size: int) -> None:
        self._fd = direct_fd  # both descriptors are owned here
        self._probe_fd = probe_fd
        self._probed = probed  # the page the probe brought into the cache
        self._buf: mmap.mmap | None = mmap.mmap(-1, chunk_size + _BLOCK)

    @classmethod
    def open(cls, f: BinaryIO, start: int, length: int, chunk_size: int) -> ColdReads | None:
        """Direct reads of ``length`` bytes of ``f`` from ``start`` in ``chunk_size`` pieces,
        or None: a short range, not a plain file, cached, or no way to tell or read direct."""
        if not _CAN or length < MIN_RANGE or chunk_size % _BLOCK or not isinstance(f, io.FileIO):
            return None
        # Other open file descriptions of the same inode (valid even if the blob is unlinked
        # meanwhile), so the caller's keeps its flags and readahead.
        path = f"/proc/self/fd/{f.fileno()}"
        probed = start - start % _BLOCK
        try:
            probe = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            os.posix_fadvise(probe, 0, 0, os.POSIX_FADV_RANDOM)  # no readahead on the miss
            os.preadv(probe, [bytearray(_BLOCK)], probed, os.RWF_NOWAIT)
        except BlockingIOError:
            try:  # not cached: cold
                return cls(os.open(path, os.O_RDONLY | os.O_DIRECT), probe, probed, chunk_size)
            except OSError:  # O_DIRECT refused by this filesystem
                pass
        except OSError:  # RWF_NOWAIT refused: cannot tell, so keep buffered reads
            pass
        os.close(probe)
        return None  # cached (hot), or no way to tell or read direct: read it buffered

    def read(self, pos: int, n: int) -> bytes:
        buf = self._buf
        assert buf is not None, "read after close"
        aligned = pos - pos % _BLOCK
        skip = pos - aligned
        span = -(-(skip + n) // _BLOCK) * _BLOCK
        with memoryview(buf) as view:
            got = os.preadv(self._fd, [view[:span]], aligned)
            return bytes(view[skip:skip + max(0, min(got - skip, n))])

    def close(self) -> None:
        buf, self._buf = self._buf, None
        if buf is not None:
            buf.close()
            os.close(self._fd)
            try:
                # Drop the probe's page: a blocking read first, as a page still being read in
                # is locked and would survive the fadvise.
                os.pread(self._probe_fd, 1, self._probed)
                os.posix_fadvise(self._probe_fd, self._probed, _BLOCK, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(self._probe_fd)
