"""TempBlob's staged writes (issue 14): full 4 MiB stages go to disk with O_DIRECT, the tail
and small files through the page cache. Whatever the chunking, the blob holds exactly the
bytes written and its sha256 is theirs, on a filesystem with direct I/O and on one without.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from federation.storage import blobs
from federation.storage.blobs import BlobStore

MIB = 1 << 20


def _store(root: Path) -> BlobStore:
    store = BlobStore(root)
    store.ensure_layout()
    return store


@pytest.mark.parametrize(
    "sizes",
    [
        [],                                  # empty file
        [4096],                              # one small put: never a stage
        [blobs._STAGE - 1],                  # just under one stage
        [blobs._STAGE],                      # exactly one stage, no tail
        [MIB] * 9 + [12345],                 # stages plus a tail, the gRPC chunking
        [3 * MIB + 7, 5 * MIB + 1, 17, 1],   # chunks that straddle stage boundaries
        [100] * 50 + [blobs._STAGE + 3],     # small start, then a chunk bigger than a stage
    ],
)
def test_content_and_hash_whatever_the_chunking(tmp_path: Path, sizes: list[int]) -> None:
    store = _store(tmp_path)
    chunks = [os.urandom(n) for n in sizes]
    temp = store.new_temp()
    for i, c in enumerate(chunks):
        temp.write(memoryview(c) if i % 2 else c)
    sha = temp.finish()
    whole = b"".join(chunks)
    assert sha == hashlib.sha256(whole).hexdigest() and temp.size == len(whole)
    store.install(temp, sha)
    with store.open(sha) as f:
        assert f.read() == whole
    assert list(store.tmp_dir.iterdir()) == []


def test_without_direct_io_everything_goes_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filesystem that refuses O_DIRECT (tmpfs on older kernels): same bytes, same hash."""
    monkeypatch.setattr(blobs, "_DIRECT_IO", False)
    store = _store(tmp_path)
    data = os.urandom(2 * blobs._STAGE + 5)
    temp = store.new_temp()
    temp.write(data)
    sha = temp.finish()
    assert sha == hashlib.sha256(data).hexdigest()
    assert temp.path.read_bytes() == data


def test_discard_mid_stream_leaves_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    temp = store.new_temp()
    temp.write(os.urandom(blobs._STAGE + MIB))
    temp.discard()
    temp.discard()
    assert list(store.tmp_dir.iterdir()) == []
    with pytest.raises(ValueError):
        temp.write(b"x")
