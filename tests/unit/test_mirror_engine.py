"""The mirror engine against a real ``VolumeStorage`` and a ``file://`` ObjectStoreTarget.

Fast (no servers). One test double, ``MemoryTarget``, is used where unit-level engine logic
is exercised against a target that is not an object store (unsorted listing, no in-place
capability); one store wrapper, ``NoListMetadata``, makes a local store list without
sha256 like S3 does, to test the manifest join.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from cloud_adapters.base import ObjectInfo
from cloud_adapters.local import LocalStore
from cloud_adapters.registry import open_store
from federation.storage import VolumeStorage
from mirroring.engine import external_sort, plan, run_pass, verify
from mirroring.protocols import FileLike, MirrorTarget, TargetFile, TargetState, VolumeSource
from mirroring.targets import MANIFEST_KEY, PASS_KEY, ObjectStoreTarget
from namespace.errors import Conflict, StaleEpoch
from tests.fixtures.manifest import resolve_manifest

# ---------------------------------------------------------------------------------------------
# helpers


def _target(tmp_path: Path, name: str = "t") -> ObjectStoreTarget:
    store = open_store(f"file://{tmp_path}/{name}/sensors")
    store.make_container()
    return ObjectStoreTarget(store, f"file://{tmp_path}/{name}/sensors", volume="sensors")


def _fill(vol: VolumeStorage, n: int, tag: str = "") -> None:
    for i in range(n):
        vol.put_bytes(f"dir{i % 4}/f{i:04d}.bin", f"{tag}{i}".encode() * 50)


def _snapshot(vol: VolumeStorage) -> dict[str, str]:
    it = vol.snapshot_files(vol.version)
    try:
        return {f.path: f.sha256 for f in it}
    finally:
        it.close()  # type: ignore[attr-defined]


def _target_contents(t: ObjectStoreTarget) -> dict[str, str]:
    """path -> sha256 of the bytes actually stored (re-hashed)."""
    return {i.key: hashlib.sha256(t.store.read_bytes(i.key)).hexdigest()
            for i in t.store.list() if not i.key.startswith(".gns/")}


def _manifest(t: ObjectStoreTarget) -> dict:  # type: ignore[type-arg]
    return resolve_manifest(t.store.read_bytes(MANIFEST_KEY), t.store.read_bytes)


def _assert_holds(vol: VolumeStorage, t: ObjectStoreTarget) -> None:
    snap = _snapshot(vol)
    assert _target_contents(t) == snap
    m = _manifest(t)
    assert m["version"] == vol.version
    assert {p: e["sha256"] for p, e in m["files"].items()} == snap
    assert t.state() == TargetState(vol.version, vol.epoch)


class MemoryTarget:
    """TEST DOUBLE: an in-memory MirrorTarget with an UNSORTED listing and no in-place
    capability (like a cluster target that stages and applies atomically)."""

    def __init__(self) -> None:
        self.name = "memory"
        self.objects: dict[str, tuple[int, str, bytes]] = {}
        self.committed = TargetState(0, 0)
        self.manifest: list[tuple[str, str]] = []
        self.puts = 0

    def state(self) -> TargetState:
        return self.committed

    def files(self) -> Iterator[TargetFile]:
        for path in sorted(self.objects, reverse=True):
            size, sha, _ = self.objects[path]
            yield TargetFile(path, size, sha)

    def has(self, path: str, sha256: str) -> bool:
        return path in self.objects and self.objects[path][1] == sha256

    def put(self, path: str, size: int, sha256: str, mtime: float, data: BinaryIO) -> None:
        body = data.read()
        assert hashlib.sha256(body).hexdigest() == sha256 and len(body) == size
        self.objects[path] = (size, sha256, body)
        self.puts += 1

    def delete(self, paths: Iterable[str]) -> None:
        for p in paths:
            self.objects.pop(p, None)

    def commit(self, version: int, epoch: int, files: Iterable[FileLike]) -> None:
        if self.committed.epoch > epoch:
            raise StaleEpoch("newer epoch")
        self.manifest = [(f.path, f.sha256) for f in files]
        self.committed = TargetState(version, epoch)


class StagingTarget:
    """TEST DOUBLE: a target shaped like a cluster replica. Blobs arrive ahead of the commit
    (content-addressed, kept across passes); the listing shows committed files only, so a
    killed pass's blobs are invisible to it and only ``has`` / ``has_many`` can tell.
    ``batched`` gives it ``has_many`` (the engine's ``BatchHasTarget``)."""

    def __init__(self, *, batched: bool) -> None:
        self.name = "staging"
        self.blobs: dict[str, bytes] = {}
        self.files_at: dict[str, tuple[int, str]] = {}
        self.committed = TargetState(0, 0)
        self.puts = 0
        self.bytes_received = 0
        self.has_calls = 0
        self.batches: list[int] = []
        if batched:
            self.has_many = self._has_many

    def state(self) -> TargetState:
        return self.committed

    def files(self) -> Iterator[TargetFile]:
        for path, (size, sha) in self.files_at.items():
            yield TargetFile(path, size, sha)

    def has(self, path: str, sha256: str) -> bool:
        self.has_calls += 1
        return sha256 in self.blobs

    def _has_many(self, files: list[tuple[str, str]]) -> list[bool]:
        self.batches.append(len(files))
        return [sha in self.blobs for _, sha in files]

    def put(self, path: str, size: int, sha256: str, mtime: float, data: BinaryIO) -> None:
        body = data.read()
        assert hashlib.sha256(body).hexdigest() == sha256 and len(body) == size
        self.blobs[sha256] = body
        self.puts += 1
        self.bytes_received += size

    def delete(self, paths: Iterable[str]) -> None:
        pass  # a full commit replaces the whole state

    def commit(self, version: int, epoch: int, files: Iterable[FileLike]) -> None:
        if self.committed.epoch > epoch:
            raise StaleEpoch("newer epoch")
        got = {f.path: (f.size, f.sha256) for f in files}
        assert all(sha in self.blobs for _, sha in got.values()), "commit of a missing blob"
        self.files_at = got
        self.committed = TargetState(version, epoch)


class NoListMetadata(LocalStore):
    """A local store whose listings carry no sha256, like S3's ListObjectsV2."""

    def _list_gen(self, full_prefix: str) -> Iterator[ObjectInfo]:
        for info in super()._list_gen(full_prefix):
            yield ObjectInfo(info.key, info.size, None, info.etag, info.mtime)


# ---------------------------------------------------------------------------------------------
# protocols and helpers


def test_protocols_are_satisfied(vol: VolumeStorage, tmp_path: Path) -> None:
    assert isinstance(vol, VolumeSource)
    assert isinstance(_target(tmp_path), MirrorTarget)
    assert isinstance(MemoryTarget(), MirrorTarget)


def test_external_sort_spills_and_merges() -> None:
    items = [f"k{(i * 7919) % 1000:04d}" for i in range(1000)]
    assert list(external_sort(items, key=lambda s: s, run_size=64)) == sorted(items)
    assert list(external_sort([], key=lambda s: s)) == []


# ---------------------------------------------------------------------------------------------
# passes


def test_first_sync_then_incremental_counts_exactly(vol: VolumeStorage, tmp_path: Path) -> None:
    _fill(vol, 40)
    t = _target(tmp_path)
    r = run_pass(vol, t, workers=4)
    assert (r.full, r.reason, r.files_copied, r.files_deleted) == (True, "first-sync", 40, 0)
    assert r.version == vol.version and r.committed
    _assert_holds(vol, t)
    head = t.store.read_bytes(MANIFEST_KEY).split(b"\n", 1)[0]
    if head.endswith(b"{"):  # a small volume's files follow, one per line
        head += b"}}"
    assert json.loads(head)["version"] == vol.version  # the first line holds the version

    again = run_pass(vol, t)
    assert (again.reason, again.files_copied, again.files_skipped) == ("up-to-date", 0, 0)

    vol.put_bytes("dir0/f0000.bin", b"changed")
    vol.put_bytes("dir1/f0001.bin", b"changed too")
    vol.put_bytes("brand/new.txt", b"new")
    vol.delete("dir2/f0002.bin")
    vol.put_bytes("tmp.txt", b"gone again")
    vol.delete("tmp.txt")
    p = plan(vol, t)
    assert (p.full, p.files_to_copy, p.files_to_delete) == (False, 3, 1)
    r = run_pass(vol, t)
    assert (r.full, r.reason) == (False, "incremental")
    assert (r.files_copied, r.files_deleted, r.files_skipped) == (3, 1, 0)
    assert r.from_version == 40 and r.version == vol.version
    _assert_holds(vol, t)
    assert not t.store.exists(PASS_KEY)


def test_plan_has_no_side_effects(vol: VolumeStorage, tmp_path: Path) -> None:
    _fill(vol, 10)
    t = _target(tmp_path)
    p = plan(vol, t)
    assert (p.full, p.files_to_copy, p.files_to_delete) == (True, 10, 0)
    assert p.bytes_to_copy == sum(len(f"{i}".encode() * 50) for i in range(10))
    assert list(t.store.list()) == []
    run_pass(vol, t)
    t.store.put("stray.txt", b"x")
    p = plan(vol, t, version=vol.version)
    assert p.reason == "up-to-date" and p.nothing_to_do


def test_journal_gap_falls_back_to_full_compare(vol: VolumeStorage, tmp_path: Path) -> None:
    _fill(vol, 20)
    t = _target(tmp_path)
    run_pass(vol, t)
    vol.put_bytes("dir0/f0000.bin", b"v2")
    vol.put_bytes("extra.txt", b"e")
    vol.truncate_journal(vol.version)
    assert vol.journal_floor > 20
    t.store.put("not-in-volume.txt", b"stray")  # extras go on a full compare
    r = run_pass(vol, t)
    assert (r.full, r.reason) == (True, "journal-gap")
    assert (r.files_copied, r.files_skipped, r.files_deleted) == (2, 19, 1)
    _assert_holds(vol, t)


def test_stop_then_resume_skips_what_arrived(vol: VolumeStorage, tmp_path: Path) -> None:
    _fill(vol, 60)
    t = _target(tmp_path)
    done: list[int] = []
    r = run_pass(vol, t, workers=2, progress=lambda b, f: done.append(f),
                 should_stop=lambda: bool(done) and done[-1] >= 20)
    assert not r.committed and 20 <= r.files_copied < 60
    assert t.state() == TargetState(0, 0) and not t.store.exists(MANIFEST_KEY)
    r2 = run_pass(vol, t, workers=2)
    assert r2.committed and r2.files_skipped == r.files_copied
    assert r2.files_copied == 60 - r.files_copied
    _assert_holds(vol, t)


def test_incremental_resume_uses_has(vol: VolumeStorage, tmp_path: Path) -> None:
    _fill(vol, 10)
    t = _target(tmp_path)
    run_pass(vol, t)
    for i in range(30):
        vol.put_bytes(f"new/{i:03d}", f"n{i}".encode())
    done: list[int] = []
    r = run_pass(vol, t, workers=1, progress=lambda b, f: done.append(f),
                 should_stop=lambda: bool(done) and done[-1] >= 12)
    assert not r.committed
    assert t.state() == TargetState(10, 1)  # new paths only: the old version stays held
    r2 = run_pass(vol, t)
    assert (r2.full, r2.files_skipped, r2.files_copied) == (False, r.files_copied,
                                                            30 - r.files_copied)
    _assert_holds(vol, t)


def test_interrupted_in_place_phase_reports_no_version(vol: VolumeStorage, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _fill(vol, 10)
    t = _target(tmp_path)
    run_pass(vol, t)
    vol.put_bytes("dir0/f0000.bin", b"overwritten")
    vol.delete("dir1/f0001.bin")

    def boom(paths: Iterable[str]) -> None:
        raise RuntimeError("crash during deletes")

    monkeypatch.setattr(t, "delete", boom)
    with pytest.raises(RuntimeError):
        run_pass(vol, t)
    # dir0/f0000.bin was replaced in place: the target must not claim version 10 any more.
    assert t.store.exists(PASS_KEY)
    assert t.state() == TargetState(0, 1)
    monkeypatch.undo()
    r = run_pass(vol, t)
    assert (r.full, r.files_copied, r.files_deleted, r.files_skipped) == (True, 0, 1, 9)
    _assert_holds(vol, t)
    assert not t.store.exists(PASS_KEY)


def test_epochs_fence_and_force_full_compare(vol: VolumeStorage, tmp_path: Path) -> None:
    _fill(vol, 5)
    t = _target(tmp_path)
    run_pass(vol, t)
    vol.set_epoch(2)
    vol.put_bytes("after-failover.txt", b"x")
    r = run_pass(vol, t)
    assert (r.full, r.reason, r.files_copied, r.files_skipped) == (True, "epoch-changed", 1, 5)
    assert t.state() == TargetState(vol.version, 2)
    # an older-epoch writer is refused, before and at commit
    old = VolumeStorage.open(tmp_path / "old", "sensors", create=True, epoch=1)
    try:
        _fill(old, 3)
        with pytest.raises(StaleEpoch):
            run_pass(old, t)
        with pytest.raises(StaleEpoch):
            t.commit(99, 1, [])
    finally:
        old.close()
    assert t.state() == TargetState(vol.version, 2)


def test_concurrent_writer_loses_with_conflict(vol: VolumeStorage, tmp_path: Path) -> None:
    _fill(vol, 3)
    a = _target(tmp_path)
    b = ObjectStoreTarget(a.store, a.name, volume="sensors")
    assert a.state() == b.state() == TargetState(0, 0)
    run_pass(vol, b)
    with pytest.raises(Conflict):
        a.commit(vol.version, vol.epoch, _snapshot_iter(vol))
    vol.put_bytes("more", b"m")
    run_pass(vol, b)
    with pytest.raises(Conflict):  # a's etag is stale
        a.commit(vol.version, vol.epoch, _snapshot_iter(vol))
    assert b.state() == TargetState(vol.version, 1)


def _snapshot_iter(vol: VolumeStorage) -> list[FileLike]:
    it = vol.snapshot_files(vol.version)
    try:
        return list(it)
    finally:
        it.close()  # type: ignore[attr-defined]


def test_target_ahead_or_other_history_is_full(vol: VolumeStorage, tmp_path: Path) -> None:
    _fill(vol, 4)
    t = _target(tmp_path)
    t.commit(100, 1, [])  # a target claiming a version this owner never reached
    r = run_pass(vol, t)
    assert (r.full, r.reason, r.files_copied) == (True, "target-ahead", 4)
    _assert_holds(vol, t)


def test_memory_target_unsorted_listing(vol: VolumeStorage) -> None:
    _fill(vol, 12)
    t = MemoryTarget()
    r = run_pass(vol, t)
    assert r.files_copied == 12 and t.committed.version == vol.version
    t.objects["zzz-extra"] = (1, "0" * 64, b"x")
    t.committed = TargetState(0, 0)  # forget the commit: full compare over an unsorted listing
    r = run_pass(vol, t)
    assert (r.files_copied, r.files_skipped, r.files_deleted) == (0, 12, 1)
    assert sorted(t.manifest) == sorted(_snapshot(vol).items())
    vol.put_bytes("dir0/f0000.bin", b"changed")
    puts = t.puts
    r = run_pass(vol, t)
    assert (r.full, r.files_copied, t.puts - puts) == (False, 1, 1)


@pytest.mark.parametrize("batched", [True, False], ids=["has_many", "has"])
def test_full_compare_resume_sends_only_what_the_replica_lacks(
        vol: VolumeStorage, batched: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A killed pass's blobs are on a replica but in no committed listing; the resumed pass
    is a full compare (the owner's epoch changed) and must not send them again."""
    monkeypatch.setattr("mirroring.engine.HAS_BATCH", 16)  # several batches, fewer files
    _fill(vol, 10)
    t = StagingTarget(batched=batched)
    assert run_pass(vol, t, workers=2).files_copied == 10
    for i in range(50):
        vol.put_bytes(f"new/{i:03d}", f"new {i} ".encode() * (i + 1))
    done: list[int] = []
    r = run_pass(vol, t, workers=1, progress=lambda b, f: done.append(f),
                 should_stop=lambda: bool(done) and done[-1] >= 25)
    assert not r.committed and 10 <= r.files_copied < 50, r
    sent_before = t.bytes_received
    staged = set(t.blobs)
    vol.set_epoch(2)  # an owner restarted after kill -9: a new epoch, hence a full compare
    vol.put_bytes("after.txt", b"written after the restart")
    t.puts, t.has_calls, t.batches = 0, 0, []
    r2 = run_pass(vol, t, workers=2)
    assert (r2.full, r2.reason, r2.committed) == (True, "epoch-changed", True)
    lacking = {f.path: f for f in _snapshot_iter(vol) if f.sha256 not in staged}
    assert t.puts == r2.files_copied == len(lacking) == 50 - r.files_copied + 1
    assert t.bytes_received - sent_before == sum(f.size for f in lacking.values())
    assert r2.files_skipped == 10 + r.files_copied
    assert t.files_at == {p: (len(b), sha) for p, sha, b in
                          ((f.path, f.sha256, t.blobs[f.sha256]) for f in _snapshot_iter(vol))}
    if batched:
        assert t.has_calls == 0 and max(t.batches) <= 16
        assert sum(t.batches) == 50 + 1  # every file the listing lacks, asked once
    else:
        assert t.has_calls == 50 + 1


def test_incremental_to_batched_target_asks_once_per_batch(vol: VolumeStorage) -> None:
    _fill(vol, 5)
    t = StagingTarget(batched=True)
    run_pass(vol, t)
    vol.put_bytes("a.txt", b"a")
    vol.put_bytes("b.txt", b"b")
    t.blobs[hashlib.sha256(b"b").hexdigest()] = b"b"  # delivered by an earlier, killed pass
    t.batches.clear()
    r = run_pass(vol, t)
    assert (r.full, r.files_copied, r.files_skipped, t.batches, t.has_calls) == (
        False, 1, 1, [2], 0)


# ---------------------------------------------------------------------------------------------
# object-store specifics: S3-like listings without metadata, verify


def test_listing_without_metadata_uses_manifest_then_head(vol: VolumeStorage,
                                                          tmp_path: Path) -> None:
    from cloud_adapters.uri import parse_uri

    _fill(vol, 8)
    store = NoListMetadata(parse_uri(f"file://{tmp_path}/s3like"))
    store.make_container()
    t = ObjectStoreTarget(store, "s3like", volume="sensors")
    run_pass(vol, t)
    stats: list[str] = []
    real_stat = store.stat

    def counting_stat(key: str) -> ObjectInfo:
        stats.append(key)
        return real_stat(key)

    store.stat = counting_stat  # type: ignore[method-assign]
    # make every object clearly older than the manifest (same clock, coarse or not)
    for info in store.list():
        if info.key != MANIFEST_KEY:
            os.utime(tmp_path / "s3like" / info.key, (info.mtime - 10, info.mtime - 10))
            # the sidecar tracks mtime: rewrite it so the local store keeps the sha256
            meta = tmp_path / "s3like" / os.path.dirname(info.key) / (
                "." + os.path.basename(info.key) + ".gns-meta")
            doc = json.loads(meta.read_text())
            doc["mtime_ns"] = (tmp_path / "s3like" / info.key).stat().st_mtime_ns
            meta.write_text(json.dumps(doc))
    files = list(t.files())
    assert [f.path for f in files] == sorted(_snapshot(vol))
    assert {f.path: f.sha256 for f in files} == _snapshot(vol)
    assert stats == []  # all from the manifest
    store.put("dir0/f0000.bin", b"behind our back")  # newer than the manifest -> HEAD
    shas = {f.path: f.sha256 for f in t.files()}
    assert stats == ["dir0/f0000.bin"]
    assert shas["dir0/f0000.bin"] == hashlib.sha256(b"behind our back").hexdigest()


def test_verify_detects_and_repairs(vol: VolumeStorage, tmp_path: Path) -> None:
    _fill(vol, 10)
    t = _target(tmp_path)
    run_pass(vol, t)
    assert verify(vol, t, repair=False).ok
    root = tmp_path / "t" / "sensors"
    (root / "dir0" / "f0000.bin").write_bytes(b"tampered")  # sidecar no longer matches
    (root / "dir1" / "f0001.bin").unlink()
    (root / "stray").write_bytes(b"s")
    rep = verify(vol, t, repair=False)
    assert not rep.ok
    assert (rep.mismatched, rep.missing, rep.extra) == (
        ("dir0/f0000.bin",), ("dir1/f0001.bin",), ("stray",))
    rep = verify(vol, t, repair=True)
    assert rep.repaired and rep.repair is not None and rep.repair.files_copied == 2
    assert verify(vol, t, repair=False).ok
    _assert_holds(vol, t)


def test_deep_verify_rehashes_bytes(vol: VolumeStorage, tmp_path: Path) -> None:
    _fill(vol, 6)
    t = _target(tmp_path)
    run_pass(vol, t)
    path = tmp_path / "t" / "sensors" / "dir2" / "f0002.bin"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF  # same size, same mtime: metadata still claims the old sha256
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert verify(vol, t, repair=False).ok
    rep = verify(vol, t, repair=True, deep=True)
    assert rep.mismatched == ("dir2/f0002.bin",) and rep.repaired
    assert verify(vol, t, repair=False, deep=True).ok
    _assert_holds(vol, t)
