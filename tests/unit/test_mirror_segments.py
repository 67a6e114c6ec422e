"""The segmented manifest (issue 14): an incremental pass writes a delta of what changed,
not a list of the whole volume; compaction, clean-up, format-1 manifests, hydration's reader.

Real ``VolumeStorage`` and the real local object store (``file://``); the committed file list
is read back with the plain reader in ``tests.fixtures.manifest`` as any other tool would.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cloud_adapters.registry import open_store
from federation.storage import VolumeStorage
from mirroring.engine import run_pass, verify
from mirroring.protocols import TargetState
from mirroring.targets import MANIFEST_KEY, ObjectStoreTarget, objectstore
from mirroring.targets.objectstore import SEGMENTS_PREFIX
from tests.fixtures.manifest import resolve_manifest


def _target(tmp_path: Path) -> ObjectStoreTarget:
    uri = f"file://{tmp_path}/t/sensors"
    store = open_store(uri)
    store.make_container()
    return ObjectStoreTarget(store, uri, volume="sensors")


def _snapshot(vol: VolumeStorage) -> dict[str, str]:
    it = vol.snapshot_files(vol.version)
    try:
        return {f.path: f.sha256 for f in it}
    finally:
        it.close()  # type: ignore[attr-defined]


def _committed(t: ObjectStoreTarget) -> dict[str, str]:
    m = resolve_manifest(t.store.read_bytes(MANIFEST_KEY), t.store.read_bytes)
    return {p: e["sha256"] for p, e in m["files"].items()}


def _manifest(t: ObjectStoreTarget) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(t.store.read_bytes(MANIFEST_KEY))
    return doc


def _segments(t: ObjectStoreTarget) -> set[str]:
    return {i.key for i in t.store.list(SEGMENTS_PREFIX)}


def test_incremental_pass_writes_a_delta_of_the_changes_only(vol: VolumeStorage, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(objectstore, "INLINE_FILES_MAX", 100)  # not listed in the manifest too
    for i in range(300):
        vol.put_bytes(f"d{i % 8}/f{i:05d}", str(i).encode())
    t = _target(tmp_path)
    run_pass(vol, t)
    base_key = _manifest(t)["segments"][0]["key"]
    base_size = t.store.stat(base_key).size
    vol.put_bytes("d0/f00000", b"new bytes")
    vol.put_bytes("zz/new", b"brand new")
    vol.delete("d1/f00001")
    r = run_pass(vol, t)
    assert (r.reason, r.files_copied, r.files_deleted) == ("incremental", 2, 1)
    m = _manifest(t)
    assert [s["base"] for s in m["segments"]] == [True, False]
    assert m["segments"][0]["key"] == base_key  # the base is not rewritten
    delta = json.loads(t.store.read_bytes(m["segments"][1]["key"]))
    assert delta["files"] == {
        "d0/f00000": {"size": 9, "sha256": _snapshot(vol)["d0/f00000"]},
        "d1/f00001": None,
        "zz/new": {"size": 9, "sha256": _snapshot(vol)["zz/new"]},
    }
    assert t.store.stat(MANIFEST_KEY).size < 1024 < base_size
    assert _committed(t) == _snapshot(vol)
    assert [p for p, _, _ in t.manifest_entries()] == sorted(_snapshot(vol))
    assert {p: h for p, _, h in t.manifest_entries()} == _snapshot(vol)
    assert t.state() == TargetState(vol.version, vol.epoch)
    assert verify(vol, t, repair=False).ok


def test_deltas_compact_into_a_new_base_and_old_segments_go(vol: VolumeStorage,
                                                            tmp_path: Path) -> None:
    for i in range(40):
        vol.put_bytes(f"f{i:03d}", b"x" * i)
    t = _target(tmp_path)
    run_pass(vol, t)
    first_base = _manifest(t)["segments"][0]["key"]
    # an orphan: a segment from a pass that died before its commit
    t.store.put(f"{SEGMENTS_PREFIX}000000000001-1-deadbeef.json", b"{}")
    bases = set()
    for n in range(36):  # one-file passes: more than 32 deltas
        vol.put_bytes(f"f{n % 7:03d}", f"v{n}".encode())
        run_pass(vol, t)
        m = _manifest(t)
        assert len(m["segments"]) <= 1 + 32  # a base and at most 32 deltas
        bases.add(m["segments"][0]["key"])
        assert _committed(t) == _snapshot(vol)
    assert len(bases) >= 2, "never compacted"
    held = _segments(t)
    assert first_base not in held
    assert f"{SEGMENTS_PREFIX}000000000001-1-deadbeef.json" not in held
    m = _manifest(t)
    # only what the manifest names, plus what it retired one commit ago
    assert held <= {s["key"] for s in m["segments"]} | set(m["retired"])


def test_format_1_manifest_is_read_and_replaced_by_a_base(vol: VolumeStorage,
                                                          tmp_path: Path) -> None:
    for i in range(5):
        vol.put_bytes(f"f{i}", str(i).encode())
    t = _target(tmp_path)
    run_pass(vol, t)
    # rewrite the commit point the way format 1 did: the whole list inline
    snap = vol.snapshot_files(vol.version)
    try:
        files = {f.path: {"size": f.size, "sha256": f.sha256} for f in snap}
    finally:
        snap.close()  # type: ignore[attr-defined]
    head = {"format": 1, "volume": "sensors", "version": vol.version, "epoch": vol.epoch,
            "committed_at": 1.0}
    body = json.dumps(head)[:-1] + ', "files": {\n' + ",\n".join(
        f"{json.dumps(p)}: {json.dumps(e)}" for p, e in files.items()) + "\n}}\n"
    t.store.put(MANIFEST_KEY, body.encode())
    old = ObjectStoreTarget(t.store, t.name, volume="sensors")
    assert old.state() == TargetState(vol.version, vol.epoch)
    assert {p: h for p, _, h in old.manifest_entries()} == _snapshot(vol)
    vol.put_bytes("f9", b"nine")
    r = run_pass(vol, old)
    assert (r.reason, r.files_copied) == ("incremental", 1)
    m = _manifest(old)
    assert m["format"] == 2 and [s["base"] for s in m["segments"]] == [True]
    assert _committed(old) == _snapshot(vol)


def test_incremental_pass_asks_the_target_nothing_per_file_unless_interrupted(
        vol: VolumeStorage, tmp_path: Path) -> None:
    from mirroring.targets.objectstore import WRITING_KEY

    for i in range(20):
        vol.put_bytes(f"f{i:03d}", b"old" * i)
    t = _target(tmp_path)
    run_pass(vol, t)
    assert not t.store.exists(WRITING_KEY)
    stats: list[str] = []
    puts: list[str] = []
    real_stat, real_put = t.store.stat, t.store.put

    def stat(key: str):  # type: ignore[no-untyped-def]
        stats.append(key)
        return real_stat(key)

    def put(key: str, *a, **kw):  # type: ignore[no-untyped-def]
        puts.append(key)
        return real_put(key, *a, **kw)

    t.store.stat = stat  # type: ignore[method-assign]
    t.store.put = put  # type: ignore[method-assign]
    vol.put_bytes("f001", b"overwritten")
    vol.put_bytes("new1", b"new")
    r = run_pass(vol, t)
    assert (r.reason, r.files_copied) == ("incremental", 2)
    assert [k for k in stats if not k.startswith(".gns/")] == []  # the journal knew
    assert t.state().version == vol.version and _committed(t) == _snapshot(vol)

    # a pass that dies after writing leaves the marker: the next one asks per file and
    # does not send again what already arrived
    vol.put_bytes("new2", b"arrives, then the pass dies")
    vol.put_bytes("new3", b"never sent")
    assert t.begin_writing(vol.version, vol.epoch)
    with vol.open_blob(_snapshot(vol)["new2"]) as blob:
        t.put("new2", 27, _snapshot(vol)["new2"], 0.0, blob)
    stats.clear()
    puts.clear()
    r = run_pass(vol, ObjectStoreTarget(t.store, t.name, volume="sensors"))
    assert (r.files_copied, r.files_skipped) == (1, 1)
    assert {"new2", "new3"} <= set(stats)
    assert [k for k in puts if not k.startswith(".gns/")] == ["new3"]
    assert _committed(t) == _snapshot(vol)
    assert not t.store.exists(WRITING_KEY)


def test_a_small_volume_is_listed_whole_in_the_manifest_itself(vol: VolumeStorage, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """SPEC §6's manifest "(version, files with size and sha256)": up to INLINE_FILES_MAX
    files the manifest lists them all (beside its segments), through incremental passes too;
    a volume that grows past it is listed by its segments alone, and one that shrinks back
    is listed again from its next base."""
    monkeypatch.setattr(objectstore, "INLINE_FILES_MAX", 5)
    for i in range(4):
        vol.put_bytes(f"f{i}", str(i).encode())
    t = _target(tmp_path)
    run_pass(vol, t)

    def listed() -> dict[str, str] | None:
        m = _manifest_with_list(t)
        assert m["version"] == vol.version
        return None if "files" not in m else {p: e["sha256"] for p, e in m["files"].items()}

    assert listed() == _snapshot(vol)
    vol.put_bytes("f0", b"changed")
    vol.delete("f1")
    vol.put_bytes("g", b"new")
    assert run_pass(vol, t).reason == "incremental"
    assert listed() == _snapshot(vol) and len(_manifest(t)["segments"]) == 2
    for i in range(5):  # 8 files: past the limit
        vol.put_bytes(f"h{i}", b"x")
    run_pass(vol, t)
    assert listed() is None
    assert _committed(t) == _snapshot(vol)  # the segments alone
    for i in range(5):
        vol.delete(f"h{i}")
    run_pass(vol, t)
    assert listed() is None  # deltas carry no list: it waits for the next base
    vol.put_bytes("f0", b"again")
    monkeypatch.setattr(objectstore, "_MAX_DELTAS", 0)  # the next commit compacts
    run_pass(vol, t)
    assert listed() == _snapshot(vol) and len(_manifest(t)["segments"]) == 1
    assert t.state() == TargetState(vol.version, vol.epoch)
    assert verify(vol, t, repair=False).ok


def _manifest_with_list(t: ObjectStoreTarget) -> dict[str, Any]:
    """The manifest as stored, read whole (files included, if it lists them)."""
    doc: dict[str, Any] = json.loads(t.store.read_bytes(MANIFEST_KEY))
    resolve_manifest(t.store.read_bytes(MANIFEST_KEY), t.store.read_bytes)  # agrees, if listed
    return doc
