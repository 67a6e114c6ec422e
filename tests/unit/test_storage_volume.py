"""VolumeStorage basics: round trips by sha256, versions, namespace shape, errors, recovery."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from federation.storage import DirEntry, FileMeta, VolumeStorage
from namespace.errors import Conflict, FileNotFound, InvalidInput, StaleEpoch
from tests.support.stored_blobs import stored_blobs


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_names(root: Path) -> set[str]:
    """Every stored blob: files and inline rows (small content)."""
    return stored_blobs(root)


def test_open_missing_without_create(tmp_path: Path) -> None:
    with pytest.raises(FileNotFound):
        VolumeStorage.open(tmp_path / "nope", "nope")


def test_new_volume_is_empty_at_version_zero(vol: VolumeStorage) -> None:
    assert vol.version == 0
    assert vol.epoch == 1
    assert vol.role == "primary"
    assert vol.journal_floor == 0
    assert vol.listdir("") == []
    assert vol.stat("") == DirEntry(name="", type="dir", size=0)


def test_roundtrip_streamed_put_by_sha256(vol: VolumeStorage) -> None:
    chunks = [os.urandom(n) for n in (1, 4096, 1 << 20, 7, 300_000)]
    data = b"".join(chunks)
    with vol.writer("sensors/day.csv") as w:
        for c in chunks:
            w.write(c)
        meta = w.commit(mtime=123.5)
    assert meta == FileMeta("sensors/day.csv", len(data), sha(data), 123.5, 1)
    assert vol.stat("sensors/day.csv") == meta
    got = b"".join(vol.read("sensors/day.csv", chunk_size=65536))
    assert sha(got) == sha(data)
    assert b"".join(vol.read("sensors/day.csv", 10, 5000)) == data[10:5000]
    assert b"".join(vol.read("sensors/day.csv", len(data) + 5)) == b""
    assert b"".join(vol.read("sensors/day.csv", 5, 10**12)) == data[5:]


def test_every_mutation_bumps_version_by_one(vol: VolumeStorage) -> None:
    assert vol.put_bytes("a", b"1").version == 1
    assert vol.put_bytes("a", b"2").version == 2
    assert vol.put_bytes("d/x", b"3").version == 3
    assert vol.put_bytes("d/y", b"4").version == 4
    assert vol.delete("a") == 5
    assert vol.delete("d", recursive=True) == 6  # rm -r is ONE version
    assert vol.version == 6
    entries = list(vol.journal(0))
    assert [(e.version, e.op, e.path) for e in entries] == [
        (1, "put", "a"),
        (2, "put", "a"),
        (3, "put", "d/x"),
        (4, "put", "d/y"),
        (5, "delete", "a"),
        (6, "delete", "d/x"),
        (6, "delete", "d/y"),
    ]
    assert entries[1].sha256 == sha(b"2") and entries[1].size == 1
    assert entries[4].sha256 == "" and entries[4].size == 0


def test_version_survives_reopen(tmp_path: Path) -> None:
    v = VolumeStorage.open(tmp_path / "v", "v", create=True, epoch=3, role="replica")
    v.put_bytes("x", b"x")
    v.set_epoch(4)
    v.close()
    v = VolumeStorage.open(tmp_path / "v", "v")
    assert (v.version, v.epoch, v.role) == (1, 4, "replica")
    assert b"".join(v.read("x")) == b"x"
    with pytest.raises(StaleEpoch):
        v.set_epoch(2)
    v.set_role("primary")
    assert v.role == "primary"
    with pytest.raises(InvalidInput):
        v.set_role("boss")
    v.close()


def test_second_process_style_open_is_refused(vol: VolumeStorage) -> None:
    with pytest.raises(Conflict):
        VolumeStorage.open(vol.root, vol.name)


def test_namespace_shape_errors(vol: VolumeStorage) -> None:
    vol.put_bytes("dir/file", b"x")
    with pytest.raises(InvalidInput, match="is a directory"):
        vol.writer("dir")
    with pytest.raises(InvalidInput, match="is a file"):
        vol.writer("dir/file/below")
    with pytest.raises(InvalidInput, match="is a directory"):
        vol.writer("")
    with pytest.raises(InvalidInput, match="use -r"):
        vol.delete("dir")
    with pytest.raises(FileNotFound):
        vol.stat("missing")
    with pytest.raises(FileNotFound):
        vol.listdir("missing")
    with pytest.raises(FileNotFound):
        vol.read("missing")
    with pytest.raises(FileNotFound):
        vol.delete("missing")
    with pytest.raises(InvalidInput, match="directory"):
        vol.read("dir")
    for bad in ("/abs", "a//b", "a/../b", "./a", "trail/"):
        with pytest.raises(InvalidInput):
            vol.stat(bad)
    assert vol.version == 1


# small content is an inline row; larger content a blob file, installed before the commit
@pytest.mark.parametrize("late", [b"late", b"late" * 40_000], ids=["inline", "file"])
def test_commit_rechecks_shape_under_lock(vol: VolumeStorage, late: bytes) -> None:
    w = vol.writer("p")
    w.write(late)
    vol.put_bytes("p/q", b"now p is a directory")
    with pytest.raises(InvalidInput, match="is a directory"):
        w.commit()
    assert vol.version == 1
    assert vol.stat("p") == DirEntry("p", "dir", 0)
    assert sha(late) not in blob_names(vol.root)  # the refused blob is collected
    assert list((vol.root / "tmp").iterdir()) == []


def test_sha_mismatch_commits_nothing(vol: VolumeStorage) -> None:
    vol.put_bytes("f", b"old")
    w = vol.writer("f")
    w.write(b"new")
    with pytest.raises(InvalidInput, match="sha256 mismatch"):
        w.commit(expect_sha256="0" * 64)
    assert b"".join(vol.read("f")) == b"old"
    assert vol.version == 1
    assert list((vol.root / "tmp").iterdir()) == []
    assert vol.put_bytes("f", b"new", expect_sha256=sha(b"new")).version == 2


def test_abort_and_context_manager_leave_nothing(vol: VolumeStorage) -> None:
    with pytest.raises(RuntimeError), vol.writer("f") as w:
        w.write(b"partial")
        raise RuntimeError("client went away")
    w2 = vol.writer("g")
    w2.write(b"x")
    w2.abort()
    assert vol.version == 0
    assert list((vol.root / "tmp").iterdir()) == []
    with pytest.raises(FileNotFound):
        vol.stat("f")


def test_listdir_sorted_and_skips_subtrees(vol: VolumeStorage) -> None:
    for p in ("a/x", "a/y/z", "a-b", "b", "a/y/w", "c/d/e/f"):
        vol.put_bytes(p, p.encode())
    assert vol.listdir("") == [
        DirEntry("a", "dir", 0),
        DirEntry("a-b", "file", 3),
        DirEntry("b", "file", 1),
        DirEntry("c", "dir", 0),
    ]
    assert vol.listdir("a") == [DirEntry("x", "file", 3), DirEntry("y", "dir", 0)]
    assert vol.listdir("a-b") == [DirEntry("a-b", "file", 3)]
    assert vol.stat("c/d") == DirEntry("d", "dir", 0)
    assert [f.path for f in vol.files()] == ["a-b", "a/x", "a/y/w", "a/y/z", "b", "c/d/e/f"]
    assert [f.path for f in vol.files("a/y")] == ["a/y/w", "a/y/z"]
    assert [f.path for f in vol.files("b")] == ["b"]


def test_many_children_listing(vol: VolumeStorage) -> None:
    for i in range(1100):
        vol.put_bytes(f"big/f{i:05d}", b"")
    vol.put_bytes("big/sub/x", b"")
    names = [e.name for e in vol.listdir("big")]
    assert len(names) == 1101 and names == sorted(names) and "sub" in names


def test_replace_collects_old_blob_and_dedups(vol: VolumeStorage) -> None:
    vol.put_bytes("a", b"one")
    vol.put_bytes("b", b"one")
    assert blob_names(vol.root) == {sha(b"one")}
    vol.put_bytes("a", b"two")
    assert blob_names(vol.root) == {sha(b"one"), sha(b"two")}  # b still uses "one"
    vol.delete("b")
    assert blob_names(vol.root) == {sha(b"two")}
    vol.delete("a")
    assert blob_names(vol.root) == set()


def test_replica_explicit_versions(vol: VolumeStorage) -> None:
    assert vol.put_bytes("a", b"1", version=7).version == 7
    assert vol.version == 7
    with pytest.raises(Conflict):
        vol.put_bytes("a", b"2", version=7)
    assert vol.delete("a", version=9) == 9
    assert [e.version for e in vol.journal(0)] == [7, 9]


def test_empty_root_rm_r_is_a_noop(vol: VolumeStorage) -> None:
    assert vol.delete("", recursive=True) == 0
    vol.put_bytes("x/y", b"1")
    assert vol.delete("", recursive=True) == 2
    assert vol.listdir("") == []


def test_changes_that_change_nothing_commit_nothing(vol: VolumeStorage) -> None:
    """A rename onto itself and attributes on the volume root are no-ops: same version, no
    error (they once rolled back and then tried to commit, an internal error)."""
    vol.put_bytes("d/f", b"1")
    v = vol.version
    assert vol.rename("d/f", "d/f") == v
    assert vol.rename("d", "d") == v
    assert vol.set_attrs("", mode=0o700) == v
    assert b"".join(vol.read("d/f")) == b"1" and vol.version == v
    with pytest.raises(FileNotFound):
        vol.rename("nope", "nope")
    assert vol.rename("d/f", "d/g") == v + 1  # the connection is usable afterwards


def test_open_sweeps_temp_files_and_orphan_blobs(tmp_path: Path) -> None:
    v = VolumeStorage.open(tmp_path / "v", "v", create=True)
    v.put_bytes("keep", b"keep")
    v.close()
    (tmp_path / "v" / "tmp" / "put-x.part").write_bytes(b"half a file")
    orphan = sha(b"orphan")
    (tmp_path / "v" / "blobs" / orphan[:2] / orphan).write_bytes(b"orphan")
    v = VolumeStorage.open(tmp_path / "v", "v")
    assert list((tmp_path / "v" / "tmp").iterdir()) == []
    assert blob_names(tmp_path / "v") == {sha(b"keep")}
    assert [e.name for e in v.listdir("")] == ["keep"]
    v.close()


def test_ingest_apply_and_reset(tmp_path: Path) -> None:
    v = VolumeStorage.open(tmp_path / "r", "r", create=True, role="replica")
    s1 = v.ingest_blob([b"he", b"llo"], expect_sha256=sha(b"hello"))
    assert s1 == sha(b"hello") and v.has_blob(s1)
    with pytest.raises(InvalidInput):
        v.ingest_blob([b"x"], expect_sha256=sha(b"y"))
    v.close()  # staged blobs survive a restart before they are used
    v = VolumeStorage.open(tmp_path / "r", "r")
    assert v.has_blob(s1)
    files = [FileMeta("d/a", 5, s1, 1.0, 3), FileMeta("b", 5, s1, 2.0, 5)]
    v.reset_to(files, 5)
    assert (v.version, v.journal_floor) == (5, 5)
    assert list(v.files()) == [files[1], files[0]]
    s2 = v.ingest_blob([b"world"])
    assert v.apply_changes([FileMeta("c", 5, s2, 3.0, 6)], ["d/a"], 6) == 6
    assert [f.path for f in v.files()] == ["b", "c"]
    assert v.changes_since(5, 6) == ([FileMeta("c", 5, s2, 3.0, 6)], ["d/a"])
    with pytest.raises(FileNotFound):
        v.reset_to([FileMeta("z", 1, sha(b"never ingested"), 1.0, 1)], 9)
    with pytest.raises(InvalidInput):
        v.reset_to([FileMeta("z", 5, s1, 1.0, 1), FileMeta("z/y", 5, s1, 1.0, 1)], 9)
    assert v.version == 6 and [f.path for f in v.files()] == ["b", "c"]  # unchanged
    v.reset_to([], 10)
    assert v.listdir("") == [] and blob_names(v.root) == set()
    v.close()


def test_diverge_keeps_changes_aside(vol: VolumeStorage) -> None:
    vol.put_bytes("a", b"mirrored")
    base = vol.version
    vol.put_bytes("a", b"unmirrored")
    vol.put_bytes("n/new", b"fresh")
    vol.put_bytes("gone", b"x")
    vol.delete("gone")
    paths = vol.diverge(base, 2)
    assert paths == [".gns/diverged/2/a", ".gns/diverged/2/n/new"]
    assert vol.version == base + 5
    assert b"".join(vol.read(".gns/diverged/2/a")) == b"unmirrored"
    assert [e.name for e in vol.listdir(".gns/diverged/2")] == ["a", "n"]
    assert vol.diverge(vol.version, 3) == []


def test_root_stat_is_a_directory_with_the_last_tree_change(vol: VolumeStorage) -> None:
    root = vol.stat("")
    assert isinstance(root, DirEntry) and (root.mode, root.mtime) == (0o755, 0.0)  # none yet
    vol.put_bytes("a", b"1", mtime=100.0)
    assert vol.stat("").mtime == 100.0  # a put records the file's mtime
    before = time.time()
    vol.put_bytes("d/b", b"2")
    last = vol.stat("").mtime
    assert before <= last <= time.time()
    vol.set_attrs("a", mode=0o600, mtime=5.0)  # attributes only: the tree is as it was
    assert vol.stat("").mtime == last
    time.sleep(0.01)
    vol.rename("a", "c")  # the moved file keeps mtime 5; the rename is now
    assert vol.stat("").mtime > last


def test_rename_onto_the_other_kind_is_a_conflict_and_changes_nothing(vol: VolumeStorage) -> None:
    vol.put_bytes("f", b"1")
    vol.put_bytes("d/x", b"2")
    vol.put_bytes("ne/y", b"3")
    v = vol.version
    with pytest.raises(Conflict, match="cannot overwrite non-directory 'f' with directory 'd'") as exc:
        vol.rename("d", "f")
    assert exc.value.paths == ("f", "d")  # kept apart, for the controller to name globally
    with pytest.raises(Conflict, match="cannot overwrite directory 'd' with non-directory 'f'"):
        vol.rename("f", "d")
    with pytest.raises(Conflict, match="directory not empty"):
        vol.rename("d", "ne")
    with pytest.raises(FileNotFound):
        vol.rename("nope", "f/x")  # the source is looked at first, as rename(2) does
    assert vol.version == v and [e.name for e in vol.listdir("")] == ["d", "f", "ne"]


def test_a_blob_whose_bytes_changed_is_set_aside_not_served(tmp_path: Path) -> None:
    """`gns mirror verify --deep` of a cluster target: the replica re-reads its blobs. One
    whose bytes no longer hash to its name (a bad disk, a hand) leaves ``blobs/`` for
    ``corrupt/``: reads stop serving it, and the repair's fresh copy is installed."""
    from federation.storage import inline

    v = VolumeStorage.open(tmp_path / "r", "r", create=True, role="replica")
    big, small = os.urandom(inline.INLINE_MAX + 4096), b"small and inline"
    sb, ss = v.ingest_blob([big]), v.ingest_blob([small])
    v.reset_to([FileMeta("big", len(big), sb, 1.0, 1), FileMeta("small", len(small), ss, 1.0, 1)], 1)
    assert v.holds_intact(sb) and v.holds_intact(ss)
    assert not v.holds_intact(sha(b"never stored")) and not v.holds_intact("not-a-sha")

    blob = v.root / "blobs" / sb[:2] / sb
    damaged = bytearray(blob.read_bytes())
    damaged[1000] ^= 0xFF
    blob.write_bytes(bytes(damaged))
    assert v.has_blob(sb)  # by its name it is still there: only re-reading tells
    assert not v.holds_intact(sb)
    assert not v.has_blob(sb) and not blob.exists()
    [aside] = list((v.root / "corrupt").iterdir())
    assert aside.name.startswith(sb) and aside.read_bytes() == bytes(damaged)
    with pytest.raises(FileNotFound):
        b"".join(v.read("big"))
    assert v.ingest_blob([big], expect_sha256=sb) == sb  # the repair's copy
    assert v.holds_intact(sb) and b"".join(v.read("big")) == big

    with v._state.lock, v._state.write_txn() as txn:  # an inline row changed under us
        txn.execute("UPDATE inline_blobs SET data = ? WHERE sha256 = ?", (b"changed", ss))
    assert not v.holds_intact(ss) and not v.has_blob(ss)
    with pytest.raises(FileNotFound):
        b"".join(v.read("small"))
    v.close()
