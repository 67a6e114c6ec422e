"""One volume mirrored to every kind of object-store target at once, on real servers.

moto S3, SeaweedFS S3, fake-gcs-server, Azurite and ``file://``. What the targets hold is
read back with the SDKs directly (boto3, google-cloud-storage, azure-storage-blob, plain
files), never through our adapters, and compared file by file by sha256. Crash safety is
tested by SIGKILLing a pass running in a subprocess.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from cloud_adapters.registry import open_store
from federation.storage import VolumeStorage
from mirroring.engine import run_pass, verify
from mirroring.protocols import TargetState
from mirroring.targets import MANIFEST_KEY, ObjectStoreTarget
from tests.fixtures.manifest import resolve_manifest
from tests.fixtures.objectstores import ServerHandle
from tests.support import RawStore

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ---------------------------------------------------------------------------------------------
# raw SDK access (independent of cloud_adapters)


class Raw(RawStore):
    """A target prefix read with the vendor SDK directly, named by the kind of server."""

    def __init__(self, kind: str, uri: str, srv: ServerHandle | None) -> None:
        super().__init__(uri, srv)
        self.kind = kind

    def objects(self) -> dict[str, bytes]:
        """key (relative to the prefix) -> bytes, for every object under the prefix."""
        return self.contents()

    def manifest(self) -> dict[str, Any]:
        objs = self.contents()
        return resolve_manifest(objs[MANIFEST_KEY], objs.get)


def _make_target(kind: str, srv: ServerHandle | None, tmp_path: Path) -> tuple[ObjectStoreTarget,
                                                                                Raw]:
    if srv is None:
        uri = f"file://{tmp_path}/local-target/sensors"
        store = open_store(uri)
        store.make_container()
    else:
        uri = srv.new_store_uri("dr/sensors")
        with srv.env():
            store = open_store(uri)
            store.exists("warm-up")  # the SDK client is built now, from this server's env
    return ObjectStoreTarget(store, uri, volume="sensors"), Raw(kind, uri, srv)


@pytest.fixture
def all_targets(moto_s3: ServerHandle, seaweed_s3: ServerHandle, fake_gcs: ServerHandle,
                azurite: ServerHandle, tmp_path: Path
                ) -> list[tuple[ObjectStoreTarget, Raw]]:
    servers: dict[str, ServerHandle | None] = {
        "s3-moto": moto_s3, "s3-seaweedfs": seaweed_s3, "gcs": fake_gcs, "azure": azurite,
        "local": None,
    }
    return [_make_target(kind, srv, tmp_path) for kind, srv in servers.items()]


def _snapshot(vol: VolumeStorage) -> dict[str, str]:
    it = vol.snapshot_files(vol.version)
    try:
        return {f.path: f.sha256 for f in it}
    finally:
        it.close()  # type: ignore[attr-defined]


def _check(vol: VolumeStorage, t: ObjectStoreTarget, raw: Raw) -> None:
    snap = _snapshot(vol)
    assert raw.files() == snap, raw.kind
    m = raw.manifest()
    assert (m["format"], m["volume"], m["version"], m["epoch"]) == (2, "sensors", vol.version,
                                                                    vol.epoch)
    assert {p: e["sha256"] for p, e in m["files"].items()} == snap
    assert list(m["files"]) == sorted(m["files"])
    assert t.state() == TargetState(vol.version, vol.epoch)


# ---------------------------------------------------------------------------------------------
# every target at once


def test_one_volume_to_every_target(all_targets: list[tuple[ObjectStoreTarget, Raw]],
                                    tmp_path: Path) -> None:
    with VolumeStorage.open(tmp_path / "vol", "sensors", create=True) as vol:
        for i in range(40):
            vol.put_bytes(f"day{i % 5}/r{i:03d}.csv", os.urandom(1000 + 37 * i))
        vol.put_bytes("a-c", b"dash sorts before slash")
        vol.put_bytes("a/b", b"seaweed lists directories first")
        vol.put_bytes("ünï/cödé.txt", b"unicode")
        vol.put_bytes("big.bin", os.urandom(6 * 2**20))
        total = 44

        for t, raw in all_targets:
            r = run_pass(vol, t, workers=4)
            assert (r.full, r.files_copied, r.committed) == (True, total, True), raw.kind
            _check(vol, t, raw)

        # changes and deletions propagate; an incremental pass moves only the changed files
        vol.put_bytes("day0/r000.csv", b"changed")
        vol.put_bytes("day1/r001.csv", b"changed too")
        vol.put_bytes("big.bin", os.urandom(6 * 2**20))
        vol.put_bytes("new/one.txt", b"1")
        vol.put_bytes("new/two.txt", b"2")
        vol.delete("day2/r002.csv")
        vol.delete("a", recursive=True)
        for t, raw in all_targets:
            r = run_pass(vol, t, workers=4)
            assert (r.full, r.reason) == (False, "incremental"), raw.kind
            assert (r.files_copied, r.files_deleted, r.files_skipped) == (5, 2, 0), raw.kind
            assert r.bytes_copied == 7 + 11 + 6 * 2**20 + 2
            _check(vol, t, raw)
            again = run_pass(vol, t)
            assert again.reason == "up-to-date" and again.files_copied == 0

        # verify: an object changed behind our back (raw SDK write) is found and repaired
        for t, raw in all_targets:
            raw.overwrite("day3/r003.csv", b"tampered by another tool")
            rep = verify(vol, t, repair=False)
            assert rep.mismatched == ("day3/r003.csv",) and not rep.ok, raw.kind
            rep = verify(vol, t, repair=True)
            assert rep.repaired and rep.repair is not None and rep.repair.files_copied == 1
            assert verify(vol, t, repair=False).ok, raw.kind
            _check(vol, t, raw)

        # a forged object keeping the right sha256 metadata is only caught by a deep verify
        t, raw = next(x for x in all_targets if x[1].kind == "s3-moto")
        good = _snapshot(vol)["day4/r004.csv"]
        size = len(raw.objects()["day4/r004.csv"])
        raw.overwrite("day4/r004.csv", b"f" * size, metadata={"sha256": good})  # same size
        assert verify(vol, t, repair=False).ok
        rep = verify(vol, t, repair=True, deep=True)
        assert rep.mismatched == ("day4/r004.csv",) and rep.repaired
        _check(vol, t, raw)


# ---------------------------------------------------------------------------------------------
# crash safety: SIGKILL a pass running in a subprocess


_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from cloud_adapters.registry import open_store
    from federation.storage import VolumeStorage
    from mirroring.engine import run_pass
    from mirroring.targets import ObjectStoreTarget

    vol_dir, uri = sys.argv[1], sys.argv[2]
    vol = VolumeStorage.open(Path(vol_dir), "sensors")
    t = ObjectStoreTarget(open_store(uri), uri, volume="sensors")
    put = t.put
    def slow_put(*a, **kw):
        put(*a, **kw)
        time.sleep(0.02)  # keep the pass long enough to be killed in the middle
    t.put = slow_put
    print("started", flush=True)
    run_pass(vol, t, workers=2, small_workers=2)  # 2 requests in flight: a slow pass
    print("finished", flush=True)
""")


@pytest.mark.parametrize("kind", ["s3-seaweedfs", "gcs", "local"])
def test_sigkill_mid_pass_then_resume(kind: str, request: pytest.FixtureRequest,
                                      tmp_path: Path) -> None:
    fixture = {"s3-seaweedfs": "seaweed_s3", "gcs": "fake_gcs"}.get(kind)
    srv: ServerHandle | None = request.getfixturevalue(fixture) if fixture else None
    t, raw = _make_target(kind, srv, tmp_path)
    vol_dir = tmp_path / "vol"
    with VolumeStorage.open(vol_dir, "sensors", create=True) as vol:
        for i in range(20):
            vol.put_bytes(f"old/{i:03d}", f"old {i}".encode() * 100)
        assert run_pass(vol, t).committed
        v1 = vol.version
        for i in range(200):
            vol.put_bytes(f"new/{i:03d}", os.urandom(2000))
        vol.put_bytes("old/000", b"replaced in place at the very end")
        vol.delete("old/001")
        v2 = vol.version
    env = {**os.environ, **(srv.env_vars if srv else {}),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(vol_dir), raw.uri], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        arrived = 0
        while time.monotonic() < deadline and child.poll() is None:
            arrived = sum(1 for k in raw.listing() if k.startswith("new/"))  # keys only
            if arrived >= 30:
                break
            time.sleep(0.05)
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=10)  # reaps it and closes the pipes
        if child.stdout:
            child.stdout.close()
        if child.stderr:
            child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert arrived >= 30

    # the target still reports the old version, and fully holds it
    m = raw.manifest()
    assert m["version"] == v1
    stored = raw.files()
    for path, entry in m["files"].items():
        assert stored[path] == entry["sha256"], path
    assert t.state() == TargetState(v1, 1)

    with VolumeStorage.open(vol_dir, "sensors") as vol:
        r = run_pass(vol, t, workers=4)
        assert r.committed and r.version == v2 and not r.full
        assert r.files_skipped >= 30 and r.files_copied < 201
        assert r.files_skipped + r.files_copied == 201 and r.files_deleted == 1
        _check(vol, t, raw)
