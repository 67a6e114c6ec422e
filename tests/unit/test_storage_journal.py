"""The change journal: net changes, point-in-time snapshots, pins, truncation."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from federation.storage import FileMeta, VolumeStorage
from namespace.errors import Conflict, FileNotFound, InvalidInput
from tests.support.stored_blobs import stored_blobs


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_net_changes_put_put_rm_put(vol: VolumeStorage) -> None:
    vol.put_bytes("a", b"a1")
    vol.put_bytes("b", b"b1")
    vol.delete("a")
    vol.put_bytes("b", b"b2", mtime=9.0)
    # from the empty volume a never existed at 0, so it is not a deletion
    copies, deleted = vol.changes_since(0, 4)
    assert [(f.path, f.sha256, f.version) for f in copies] == [("b", sha(b"b2"), 4)]
    assert deleted == []
    # with a at the start of the range, its deletion is reported
    vol2_copies, vol2_deleted = vol.changes_since(1, 4)
    assert [f.path for f in vol2_copies] == ["b"] and vol2_deleted == ["a"]
    # as of an older upper bound, b is its older content
    copies, deleted = vol.changes_since(1, 2)
    assert copies == [FileMeta("b", 2, sha(b"b1"), copies[0].mtime, 2)] and deleted == []
    assert vol.changes_since(4, 4) == ([], [])


def test_created_and_deleted_within_range_is_invisible(vol: VolumeStorage) -> None:
    vol.put_bytes("keep", b"k")
    vol.put_bytes("tmpfile", b"t")
    vol.delete("tmpfile")
    copies, deleted = vol.changes_since(1, 3)
    assert copies == [] and deleted == []


def test_rm_r_net_changes(vol: VolumeStorage) -> None:
    vol.put_bytes("d/x", b"1")
    vol.put_bytes("d/y", b"2")
    vol.put_bytes("e", b"3")
    vol.delete("d", recursive=True)
    assert vol.changes_since(3, 4) == ([], ["d/x", "d/y"])


def test_changes_since_range_errors(vol: VolumeStorage) -> None:
    vol.put_bytes("a", b"1")
    with pytest.raises(InvalidInput):
        vol.changes_since(0, 5)
    with pytest.raises(InvalidInput):
        vol.changes_since(1, 0)


def test_truncate_journal_sets_floor(vol: VolumeStorage) -> None:
    for i in range(5):
        vol.put_bytes(f"f{i}", str(i).encode())
    vol.truncate_journal(3)
    assert vol.journal_floor == 3
    assert [e.version for e in vol.journal(3)] == [4, 5]
    with pytest.raises(Conflict, match="truncated"):
        vol.journal(2)
    with pytest.raises(Conflict):
        vol.changes_since(2, 5)
    with pytest.raises(Conflict):
        vol.snapshot_files(2)
    assert [f.path for f in vol.snapshot_files(3)] == ["f0", "f1", "f2"]
    vol.truncate_journal(1)  # never goes back
    assert vol.journal_floor == 3


def test_snapshot_files_matches_history_randomised(vol: VolumeStorage) -> None:
    """Replay random puts/deletes, remembering each version's state; reconstruct all."""
    rng = random.Random(7)
    states: dict[int, dict[str, str]] = {0: {}}
    current: dict[str, str] = {}
    names = [f"d{i % 3}/f{i}" for i in range(12)]
    for _ in range(80):
        path = rng.choice(names)
        if path in current and rng.random() < 0.3:
            vol.delete(path)
            del current[path]
        elif rng.random() < 0.08 and any(p.startswith("d1/") for p in current):
            vol.delete("d1", recursive=True)
            current = {p: s for p, s in current.items() if not p.startswith("d1/")}
        else:
            data = rng.randbytes(rng.randint(0, 64))
            vol.put_bytes(path, data)
            current[path] = sha(data)
        states[vol.version] = dict(current)
    for version, state in states.items():
        snap = list(vol.snapshot_files(version))
        assert [f.path for f in snap] == sorted(state), version
        assert {f.path: f.sha256 for f in snap} == state, version
    for a in range(0, vol.version, 7):
        for b in range(a, vol.version + 1, 5):
            copies, deleted = vol.changes_since(a, b)
            before, after = states[a], states[b]
            assert {f.path: f.sha256 for f in copies} == {
                p: s for p, s in after.items() if p in {f.path for f in copies}
            }
            changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
            assert changed <= {f.path for f in copies} | set(deleted)
            assert set(deleted) == set(before) - set(after)


def test_snapshot_is_a_consistent_point_in_time_while_writing(vol: VolumeStorage) -> None:
    for i in range(50):
        vol.put_bytes(f"f{i:03d}", b"v1")
    it = vol.files()
    vol.put_bytes("f000", b"v2")  # after the call, before the first item: not seen
    first = next(it)
    for i in range(50):
        vol.put_bytes(f"f{i:03d}", b"v2")  # writes go on while the stream is open
    vol.put_bytes("zzz", b"new")
    rest = list(it)
    assert first.sha256 == sha(b"v1")
    assert all(f.sha256 == sha(b"v1") for f in rest) and len(rest) == 49


def test_pin_keeps_old_blob_readable_after_replace(vol: VolumeStorage) -> None:
    vol.put_bytes("a", b"old")
    vol.put_bytes("gone", b"deleted later")
    version, token = vol.pin()
    assert version == 2
    vol.put_bytes("a", b"new")
    vol.delete("gone")
    snap = {f.path: f for f in vol.snapshot_files(version)}
    assert set(snap) == {"a", "gone"}
    with vol.open_blob(snap["a"].sha256) as f:
        assert f.read() == b"old"
    with vol.open_blob(snap["gone"].sha256) as f:
        assert f.read() == b"deleted later"
    assert b"".join(vol.read("a")) == b"new"
    vol.truncate_journal(vol.version)  # clamped to the pin
    assert vol.journal_floor == version
    vol.unpin(token)
    with pytest.raises(FileNotFound):
        vol.open_blob(sha(b"old"))
    with pytest.raises(FileNotFound):
        vol.open_blob(sha(b"deleted later"))
    with pytest.raises(InvalidInput):
        vol.unpin(token)


def test_gc_pending_survives_restart_while_pinned(tmp_path: Path) -> None:
    v = VolumeStorage.open(tmp_path / "v", "v", create=True)
    v.put_bytes("a", b"old")
    v.pin()
    v.put_bytes("a", b"new")
    assert v.has_blob(sha(b"old"))
    v.close()  # the process dies with the pin held; pins do not survive it
    v = VolumeStorage.open(tmp_path / "v", "v")
    assert not v.has_blob(sha(b"old"))
    assert sha(b"old") not in stored_blobs(v.root)
    v.close()
