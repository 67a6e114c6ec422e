"""Small blobs stored inline in the catalog (issue 14): where content goes by size, reads and
blob lookups of both kinds, collection of both kinds, pins, replicas, and volumes made
before inline blobs existed."""
from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from federation.storage import FileMeta, VolumeStorage
from federation.storage import catalog as catalog_module
from federation.storage.inline import INLINE_MAX
from namespace.errors import FileNotFound, InvalidInput
from tests.support.stored_blobs import (
    blob_files,
    inline_blobs,
    small_blob_file,
    staged_blobs,
    stored_blobs,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read(vol: VolumeStorage, path: str, start: int = 0, end: int | None = None) -> bytes:
    with vol.read(path, start, end, chunk_size=1000) as r:
        return b"".join(r)


def test_content_goes_inline_up_to_the_threshold(vol: VolumeStorage) -> None:
    sizes = {"empty": 0, "small": 4096, "edge": INLINE_MAX, "over": INLINE_MAX + 1}
    data = {p: bytes([i + 1]) * n for i, (p, n) in enumerate(sizes.items())}
    for p, d in data.items():
        vol.put_bytes(p, d)
    assert inline_blobs(vol.root) == {sha(data[p]) for p in ("empty", "small", "edge")}
    assert blob_files(vol.root) == {sha(data["over"])}
    assert list((vol.root / "tmp").iterdir()) == []
    for p, d in data.items():
        assert read(vol, p) == d
        assert read(vol, p, 3, 9000) == d[3:9000]
        with vol.open_blob(sha(d)) as f:
            assert f.read() == d
        assert vol.has_blob(sha(d))
        meta = vol.stat(p)
        assert isinstance(meta, FileMeta) and (meta.size, meta.sha256) == (len(d), sha(d))
    assert vol.usage() == (4, sum(sizes.values()))


def test_a_streamed_writer_moves_to_a_file_when_it_outgrows_inline(vol: VolumeStorage) -> None:
    chunk = b"x" * 1000
    with vol.writer("grows") as w:
        for _ in range(INLINE_MAX // len(chunk)):
            w.write(chunk)
        assert list((vol.root / "tmp").iterdir()) == []  # still in memory
        w.write(chunk)  # crosses the threshold: the content so far goes to a temp file
        assert len(list((vol.root / "tmp").iterdir())) == 1
        w.write(b"tail")
        assert w.size == (INLINE_MAX // len(chunk) + 1) * len(chunk) + 4
        meta = w.commit()
        assert w.size == meta.size
    want = chunk * (INLINE_MAX // len(chunk) + 1) + b"tail"
    assert meta.sha256 == sha(want) and read(vol, "grows") == want
    assert blob_files(vol.root) == {sha(want)} and inline_blobs(vol.root) == set()
    # an aborted small writer leaves nothing
    with vol.writer("gone") as w:
        w.write(b"never")
        assert w.size == 5
    with vol.writer("small") as w:
        w.write(b"abc")
        assert w.commit().size == w.size == 3
    assert stored_blobs(vol.root) == {sha(want), sha(b"abc")}
    assert list((vol.root / "tmp").iterdir()) == []


def test_inline_blobs_are_collected_and_shared(vol: VolumeStorage) -> None:
    vol.put_bytes("a", b"one")
    vol.put_bytes("b", b"one")  # same content: one row
    vol.put_bytes("a", b"two")
    assert inline_blobs(vol.root) == {sha(b"one"), sha(b"two")}
    vol.delete("b")
    assert inline_blobs(vol.root) == {sha(b"two")}
    new = vol.diverge(0, 7)  # copies share the blob
    assert new and all(read(vol, p) == b"two" for p in new)
    vol.delete("a")
    assert inline_blobs(vol.root) == {sha(b"two")}
    vol.delete(".gns", recursive=True)
    assert stored_blobs(vol.root) == set()
    with pytest.raises(FileNotFound):
        vol.open_blob(sha(b"two"))
    assert not vol.has_blob(sha(b"two")) and not vol.has_blob("not-a-sha")


def test_pin_keeps_an_old_inline_blob_until_unpin(vol: VolumeStorage) -> None:
    vol.put_bytes("f", b"v1")
    version, token = vol.pin()
    vol.put_bytes("f", b"v2")
    vol.delete("f")
    old = next(iter(vol.snapshot_files(version)))
    with vol.open_blob(old.sha256) as f:
        assert f.read() == b"v1"
    vol.unpin(token)
    assert stored_blobs(vol.root) == set()


def test_same_content_as_file_and_inline_is_read_and_collected(tmp_path: Path) -> None:
    v = VolumeStorage.open(tmp_path / "r", "r", create=True)
    try:
        s = small_blob_file(v.root, b"shared")  # as an older release's replica stored it
        assert blob_files(v.root) == {s}
        v.apply_changes([FileMeta("x", 6, s, 1.0, 1)], [], 1)
        v.put_bytes("y", b"shared")  # a put of the same content stores it inline too
        assert inline_blobs(v.root) == {s} and blob_files(v.root) == {s}
        assert read(v, "x") == read(v, "y") == b"shared"
        v.delete("x")
        assert stored_blobs(v.root) == {s}  # y still uses it
        v.delete("y")
        assert stored_blobs(v.root) == set()
    finally:
        v.close()


def test_replica_apply_and_reset_accept_inline_blobs(vol: VolumeStorage) -> None:
    """A promoted replica's own inline blobs count as present (a mirror skips sending them)."""
    m = vol.put_bytes("a", b"inline content")
    assert vol.has_blob(m.sha256)
    v = vol.apply_changes([FileMeta("b", m.size, m.sha256, 2.0, 2)], [], vol.version + 1)
    assert read(vol, "b") == b"inline content"
    vol.reset_to([FileMeta("c", m.size, m.sha256, 3.0, 1)], v + 1)
    assert [f.path for f in vol.files()] == ["c"] and read(vol, "c") == b"inline content"
    assert stored_blobs(vol.root) == {m.sha256}
    with pytest.raises(FileNotFound):
        vol.reset_to([FileMeta("d", 1, sha(b"?"), 3.0, 1)], v + 2)
    assert read(vol, "c") == b"inline content"


def test_replica_ingest_stages_small_content_inline(vol: VolumeStorage) -> None:
    """Up to INLINE_MAX a replica keeps what arrives as an inline row, chunked or not; above
    it, a blob file. Either way staged, and no temp file is left."""
    edge, over = b"e" * INLINE_MAX, b"o" * (INLINE_MAX + 1)

    def chunks(d: bytes) -> list[bytes]:
        return [d[i : i + 1000] for i in range(0, len(d), 1000)]

    shas = [vol.ingest_blob(chunks(edge)), vol.ingest_blob([b""]), vol.ingest_blob([]),
            vol.ingest_blob(chunks(over), expect_sha256=sha(over))]
    assert shas == [sha(edge), sha(b""), sha(b""), sha(over)]
    assert inline_blobs(vol.root) == {sha(edge), sha(b"")}
    assert blob_files(vol.root) == {sha(over)}
    assert staged_blobs(vol.root) == set(shas)
    assert list((vol.root / "tmp").iterdir()) == []
    files = [FileMeta("e", len(edge), sha(edge), 1.0, 1), FileMeta("o", len(over), sha(over), 1.0, 1)]
    vol.apply_changes(files, [], vol.version + 1)
    assert read(vol, "e") == edge and read(vol, "o") == over
    assert staged_blobs(vol.root) == {sha(b"")}  # used ones lose the mark; the unused one keeps it
    vol.reset_to([], vol.version + 1)  # a reset drops what was staged and not used
    assert stored_blobs(vol.root) == set() and staged_blobs(vol.root) == set()


def test_replica_ingest_refuses_a_wrong_hash_and_stores_nothing(vol: VolumeStorage) -> None:
    for data in (b"small", b"x" * (INLINE_MAX + 1)):
        with pytest.raises(InvalidInput, match="sha256 mismatch"):
            vol.ingest_blob([data], expect_sha256=sha(b"other"))
    assert stored_blobs(vol.root) == set() and staged_blobs(vol.root) == set()
    assert list((vol.root / "tmp").iterdir()) == []


def test_a_staged_inline_blob_outlives_collection_and_a_restart(tmp_path: Path) -> None:
    """Content a put stops using while the same content is staged (a replica promoted while
    a mirror pass was under way) stays until the apply that uses it."""
    root = tmp_path / "r"
    with VolumeStorage.open(root, "r", create=True) as v:
        v.put_bytes("a", b"shared")
        s = v.ingest_blob([b"shared"])
        v.put_bytes("a", b"other")  # its commit collects what no file uses any more
        assert s in inline_blobs(root) and blob_files(root) == set()
    with VolumeStorage.open(root, "r") as v:
        assert v.has_blob(s)
        v.apply_changes([FileMeta("b", 6, s, 1.0, 3)], [], v.version + 1)
        assert read(v, "b") == b"shared"


def test_a_volume_made_before_inline_blobs_opens_and_works(tmp_path: Path) -> None:
    root = tmp_path / "old"
    v = VolumeStorage.open(root, "old", create=True)
    s = small_blob_file(root, b"old small file")  # an older release kept only files
    v.apply_changes([FileMeta("f", 14, s, 1.0, 1)], [], 1)
    v.close()
    with sqlite3.connect(root / "catalog.sqlite") as conn:  # the catalog of an older release
        conn.execute("DROP TABLE inline_blobs")
    v = VolumeStorage.open(root, "old")
    try:
        assert read(v, "f") == b"old small file" and v.has_blob(s)
        v.put_bytes("f", b"new small file")  # now inline; the old file blob is collected
        assert blob_files(root) == set() and inline_blobs(root) == {sha(b"new small file")}
        assert read(v, "f") == b"new small file" and v.version == 2
    finally:
        v.close()


def test_concurrent_small_puts_create_no_files(vol: VolumeStorage) -> None:
    def run(k: int) -> None:
        for i in range(40):
            vol.put_bytes(f"t{k}/f{i}", f"{k}/{i}".encode() * 100)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert vol.version == 320 and blob_files(vol.root) == set()
    assert len(inline_blobs(vol.root)) == 320
    assert read(vol, "t7/f39") == b"7/39" * 100


def test_overwritten_inline_blob_goes_in_the_same_commit(vol: VolumeStorage) -> None:
    vol.put_bytes("a", b"first")
    begins: list[str] = []
    # this thread leads its own batch: its connection runs every write transaction
    vol._state.catalog.conn().set_trace_callback(
        lambda sql: begins.append(sql) if sql.startswith("BEGIN IMMEDIATE") else None
    )
    try:
        vol.put_bytes("a", b"second")
    finally:
        vol._state.catalog.conn().set_trace_callback(None)
    assert len(begins) == 1, begins  # no separate collection transaction
    assert stored_blobs(vol.root) == {sha(b"second")}
    # the same content also as a blob file (an older release's replica ingest): the row goes
    # now, the file once the commit is durable
    s = small_blob_file(vol.root, b"second")
    assert blob_files(vol.root) == {s} and inline_blobs(vol.root) == {s}
    vol.put_bytes("a", b"third")
    assert stored_blobs(vol.root) == {sha(b"third")}
    assert read(vol, "a") == b"third"


def test_deleting_small_files_gives_their_space_back_to_the_disk(vol: VolumeStorage) -> None:
    catalog = vol.root / "catalog.sqlite"
    data = {f"d/f{i:03}": os.urandom(48 << 10) for i in range(160)}  # 7.5 MiB, all inline
    for p, d in data.items():
        vol.put_bytes(p, d)
    checkpoint(vol)
    full = catalog.stat().st_size
    assert full > 7 << 20
    vol.delete("d", recursive=True)
    checkpoint(vol)
    assert catalog.stat().st_size < 1 << 20, (full, catalog.stat().st_size)
    vol.put_bytes("after", b"x" * 1000)  # still a working catalog
    assert read(vol, "after") == b"x" * 1000


def old_release_volume(tmp_path: Path, files: int) -> Path:
    """A volume whose catalog was made before auto_vacuum was asked, holding small files."""
    root = tmp_path / "old"
    with VolumeStorage.open(root, "old", create=True) as vol:
        for i in range(files):
            vol.put_bytes(f"f{i}", bytes([i % 256]) * (48 << 10))
    with sqlite3.connect(root / "catalog.sqlite") as conn:
        conn.executescript("PRAGMA auto_vacuum=NONE; VACUUM;")
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    return root


def test_a_catalog_of_an_older_release_is_rewritten_at_open_to_give_pages_back(tmp_path: Path) -> None:
    root = old_release_volume(tmp_path, 100)
    with VolumeStorage.open(root, "old") as vol:
        assert vol._state.catalog.reclaims
        assert read(vol, "f7") == bytes([7]) * (48 << 10)  # every file as it was
        assert len(list(vol.files())) == 100
        vol.delete("f0")
        for i in range(1, 100):
            vol.delete(f"f{i}")
        checkpoint(vol)
        assert (root / "catalog.sqlite").stat().st_size < 1 << 20


def test_a_catalog_of_an_older_release_too_large_to_rewrite_keeps_working(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = old_release_volume(tmp_path, 100)
    monkeypatch.setattr(catalog_module, "CONVERT_MAX_BYTES", 1 << 20)
    with VolumeStorage.open(root, "old") as vol:
        assert not vol._state.catalog.reclaims
        for i in range(100):
            vol.delete(f"f{i}")
        vol.put_bytes("after", b"x")  # SQLite reuses the pages it could not give back
        assert [m.path for m in vol.files()] == ["after"]


def checkpoint(vol: VolumeStorage) -> None:
    vol._state.catalog.conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
