"""Large blob ranges that are not in the page cache are read O_DIRECT (issue 14).

Whatever the start, end, chunk size and cache state, a read must return exactly the file's
bytes; a cold range must not pass through the page cache (that is the CPU it saves); a hot
one (its first page cached) is read buffered as before.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import random
import time
from hashlib import sha256
from pathlib import Path

import pytest

from federation.storage import VolumeStorage
from federation.storage.cold_reads import MIN_RANGE, ColdReads
from federation.storage.reads import REREAD_S, BlobReader

MIB = 1 << 20
SIZE = 12 * MIB + 12345  # not a multiple of the block size: the last read is short


def _cold_copy(path: Path, data: bytes) -> Path:
    """``data`` at ``path``, never in the page cache: written O_DIRECT (the sub-block tail
    buffered). Why not evict a cached file: fadvise cannot drop pages still queued on
    another CPU's LRU list, so eviction is not reliable enough for a test."""
    whole = len(data) - len(data) % 4096
    buf = mmap.mmap(-1, max(whole, 4096))
    try:
        buf[:whole] = data[:whole]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
        try:
            with memoryview(buf) as view:
                assert os.write(fd, view[:whole]) == whole
        finally:
            os.close(fd)
    finally:
        buf.close()
    with open(path, "ab") as f:
        f.write(data[whole:])
        os.fsync(f.fileno())
    return path


_libc = ctypes.CDLL(None, use_errno=True)


def _cached(path: Path, pos: int) -> bool:
    """Whether the page at ``pos`` is in the page cache: mincore(2) over a private mapping
    (it reads nothing in; a RWF_NOWAIT probe could, on a fast device)."""
    with open(path, "rb") as f, mmap.mmap(
        f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE
    ) as m:
        page = pos - pos % mmap.PAGESIZE
        vec = (ctypes.c_ubyte * 1)()
        anchor = ctypes.c_char.from_buffer(m, page)
        try:
            if _libc.mincore(ctypes.c_void_p(ctypes.addressof(anchor)), mmap.PAGESIZE, vec):
                raise OSError(ctypes.get_errno(), "mincore")
        finally:
            del anchor  # the mapping cannot close while a ctypes view of it is alive
        return bool(vec[0] & 1)


def _cold_reads(path: Path, start: int, length: int) -> ColdReads | None:
    with open(path, "rb", buffering=0) as f:
        cold = ColdReads.open(f, start, length, MIB)
        if cold is not None:
            cold.close()
        return cold


@pytest.fixture(scope="module")
def data() -> bytes:
    return random.Random(7).randbytes(SIZE)


def _require_cold_reads(where: Path) -> None:
    """Skip unless this filesystem and kernel offer O_DIRECT and RWF_NOWAIT."""
    probe = where / "probe-only"
    probe.write_bytes(bytes(4096))
    try:
        os.close(os.open(probe, os.O_RDONLY | os.O_DIRECT))
        fd = os.open(probe, os.O_RDONLY)
        try:
            os.preadv(fd, [bytearray(4096)], 0, os.RWF_NOWAIT)  # cached: answers
        finally:
            os.close(fd)
    except (OSError, AttributeError) as exc:
        pytest.skip(f"O_DIRECT or RWF_NOWAIT is not available on {where}: {exc}")


@pytest.fixture
def cold(tmp_path: Path, data: bytes) -> Path:
    _require_cold_reads(tmp_path)
    return _cold_copy(tmp_path / "blob", data)


def _read(path: Path, start: int, end: int, chunk: int) -> tuple[bytes, list[int]]:
    reader = BlobReader(open(path, "rb", buffering=0), start, end, chunk)
    with reader:
        chunks = list(reader)
    return b"".join(chunks), [len(c) for c in chunks]


@pytest.mark.parametrize("state", ["cold", "warm", "half"])
def test_every_range_reads_the_exact_bytes(cold: Path, data: bytes, state: str) -> None:
    path = cold
    if state == "warm":
        path.read_bytes()
    elif state == "half":  # every other MiB cached (reads of ranges starting there cache more)
        with open(path, "rb") as f:
            for at in range(0, SIZE, 2 * MIB):
                f.seek(at)
                f.read(MIB)
    rng = random.Random(state)
    ranges = [(0, SIZE), (1, SIZE), (4095, SIZE - 1), (SIZE - MIN_RANGE - 3, SIZE)]
    ranges += [(s, min(SIZE, s + MIN_RANGE + rng.randrange(3 * MIB)))
               for s in (rng.randrange(SIZE - MIN_RANGE) for _ in range(6))]
    for start, end in ranges:
        chunk = rng.choice([MIB, 4096 * 3, 2 * MIB])
        got, sizes = _read(path, start, end, chunk)
        assert got == data[start:end], (state, start, end, chunk)
        assert all(n == chunk for n in sizes[:-1])  # whole chunks until the last


def test_a_cold_range_is_read_around_the_page_cache(cold: Path, data: bytes) -> None:
    # The probe is a heuristic (a fast device may answer it as cached): try a few cold files.
    for attempt in range(8):
        path = _cold_copy(cold.with_name(f"attempt-{attempt}"), data)
        with open(path, "rb", buffering=0) as f:
            reads = ColdReads.open(f, 0, SIZE, MIB)
            if reads is None:
                continue
            try:
                got = b"".join(reads.read(at, MIB) for at in range(0, SIZE, MIB))
            finally:
                reads.close()
        assert got == data
        assert not any(_cached(path, at) for at in range(0, SIZE - 4096, MIB))  # the probe's too
        return
    pytest.fail("eight cold files in a row were taken for cached ones")


def test_a_hot_range_and_short_ranges_read_buffered(cold: Path) -> None:
    assert _cold_reads(cold, 0, MIN_RANGE - 1) is None  # short: worth caching
    with open(cold, "rb", buffering=0) as f:
        assert ColdReads.open(f, 0, SIZE, MIB + 1) is None  # chunks of no whole blocks
        with open(f.fileno(), "rb", closefd=False) as buffered:  # not a raw file
            assert ColdReads.open(buffered, 0, SIZE, MIB) is None
    cold.read_bytes()
    assert _cold_reads(cold, 5, SIZE - 5) is None  # cached: hot


def test_a_large_blob_read_again_soon_is_read_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large blob read again within REREAD_S is read buffered, so what is read more than
    once ends up cached; after REREAD_S it counts as a first read again."""
    _require_cold_reads(tmp_path)
    vol = VolumeStorage.open(tmp_path / "v", "cold", create=True)
    try:
        data = random.Random(3).randbytes(MIN_RANGE + 5)  # O_DIRECT stages, a buffered tail
        vol.put_bytes("big", data)
        blob = next(p for p in (tmp_path / "v").rglob("*") if p.is_file() and p.stat().st_size == len(data))
        with vol.read("big") as r:
            assert b"".join(r) == data
        with vol.read("big", 1) as r:
            assert r._cold is None  # buffered
            assert b"".join(r) == data[1:]
        assert _cached(blob, 2 * MIB) and _cached(blob, 3 * MIB)
        with vol.read("big", 0, 100) as r:  # a short range is not a read of the blob
            assert b"".join(r) == data[:100]
        sha = sha256(data).hexdigest()
        assert vol._reads._read_lately(sha)
        later = time.monotonic() + REREAD_S + 1
        monkeypatch.setattr(time, "monotonic", lambda: later)
        assert not vol._reads._read_lately(sha)
    finally:
        vol.close()
