"""A downloaded file is written whole, through O_DIRECT blocks or the page cache (issue 14)."""
from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.client.streams import write_local_file

SIZES = [0, 1, 4 << 20, (4 << 20) + 1, (9 << 20) + 123]


def _chunks(data: bytes, rng: random.Random) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rng.choice([1, 4096, 1 << 20, 3 << 20, 5 << 20])
        out.append(data[i:i + n])
        i += n
    return out


@pytest.mark.parametrize("size", SIZES)
def test_written_whole_with_progress(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    moved: list[int] = []
    dst = tmp_path / "f.bin"
    assert write_local_file(dst, _chunks(data, random.Random(size)), moved.append) == size
    assert dst.read_bytes() == data and sum(moved) == size


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no tmpfs at /dev/shm")
def test_a_filesystem_without_direct_io_gets_buffered_writes() -> None:
    data = os.urandom((8 << 20) + 5)
    dst = Path("/dev/shm") / f"gns-sink-{os.getpid()}.bin"
    try:
        assert write_local_file(dst, _chunks(data, random.Random(1))) == len(data)
        assert dst.read_bytes() == data
    finally:
        dst.unlink(missing_ok=True)


def test_an_error_from_the_stream_propagates(tmp_path: Path) -> None:
    def broken() -> list[bytes]:
        raise OSError("stream broke")

    def chunks() -> Iterator[bytes]:
        yield b"x" * (5 << 20)
        broken()

    with pytest.raises(OSError, match="stream broke"):
        write_local_file(tmp_path / "f.bin", chunks())
