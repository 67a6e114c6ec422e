"""Concurrent readers during replaces see whole old or new content; parallel writers."""

from __future__ import annotations

import hashlib
import threading

from federation.storage import VolumeStorage
from tests.support.stored_blobs import stored_blobs


def test_readers_never_see_torn_files(vol: VolumeStorage) -> None:
    contents = [bytes([i]) * (256 * 1024 + i) for i in range(6)]
    valid = {hashlib.sha256(c).hexdigest() for c in contents}
    vol.put_bytes("hot", contents[0])
    stop = threading.Event()
    errors: list[str] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            h = hashlib.sha256()
            # small chunks so that replaces land in the middle of a read
            for chunk in vol.read("hot", chunk_size=4096):
                h.update(chunk)
            if h.hexdigest() not in valid:
                errors.append(h.hexdigest())
            reads[0] += 1

    def writer() -> None:
        for i in range(60):
            vol.put_bytes("hot", contents[i % len(contents)])

    readers = [threading.Thread(target=reader) for _ in range(4)]
    writers = [threading.Thread(target=writer) for _ in range(2)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    assert reads[0] > 10
    assert vol.version == 121
    # only the current content's blob is left
    blobs = stored_blobs(vol.root)
    assert blobs == {vol.stat("hot").sha256}  # type: ignore[union-attr]


def test_parallel_writers_get_distinct_versions(vol: VolumeStorage) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def put(n: int) -> None:
        for i in range(25):
            m = vol.put_bytes(f"w{n}/f{i}", f"{n}-{i}".encode())
            with lock:
                results.append(m.version)

    threads = [threading.Thread(target=put, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 101))
    assert [e.version for e in vol.journal(0)] == list(range(1, 101))
    assert sum(1 for _ in vol.files()) == 100


def test_stream_can_be_advanced_from_another_thread(vol: VolumeStorage) -> None:
    for i in range(10):
        vol.put_bytes(f"f{i}", b"x")
    it = vol.files()
    got = [next(it)]
    t = threading.Thread(target=lambda: got.extend(it))
    t.start()
    t.join()
    assert len(got) == 10
