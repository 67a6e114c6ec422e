"""Mirroring through real controller processes, on real object-store servers (issue 5's checks).

Every test runs ``gns controller`` processes on a fresh etcd (``federation`` fixture); policies
are applied with ``gns mirror apply -f`` and observed with ``gns mirror status --json`` (the
real CLI) or the same statuses read by an in-process ``Client`` when sampling fast. What the
targets hold is read back with the vendor SDKs directly (boto3, google-cloud-storage,
azure-storage-blob, plain files; never through ``cloud_adapters``), and a cluster target
through its own controller (``--via <replica> --consistency any``, answered by the replica).

Object-store endpoints and credentials reach the controllers only through their environment:
the servers' variables are set (``monkeypatch.setenv``) before ``federation.add``. One S3
endpoint per process: moto in the all-targets and incremental tests, SeaweedFS in the crash
test.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from federation.client import FileInfo, MirrorTargetStatus
from tests.fixtures.federation import Federation
from tests.fixtures.manifest import resolve_manifest
from tests.fixtures.objectstores import ServerHandle
from tests.support import RawStore, cli_status, holds_for, wait_for, wait_still, wait_synced
from tests.support.edge import replica_files as replica_state
from tests.support.mirrors import apply_policy, make_volume, ok, policy_doc
from tests.support.stored_blobs import stored_blobs

pytestmark = pytest.mark.slow

MANIFEST = ".gns/manifest.json"
PASS_MARKER = ".gns/pass.json"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# federation helpers


def blobs_held(volume_dir: Path, wanted: set[str]) -> frozenset[str]:
    """Which of ``wanted`` a running replica's volume stores, as blob files or inline rows of
    its catalog (read-only, as it runs)."""
    try:
        return frozenset(stored_blobs(volume_dir) & wanted)
    except sqlite3.OperationalError:  # the catalog is not there, or not its tables yet
        return frozenset()


def use_servers(monkeypatch: pytest.MonkeyPatch, *servers: ServerHandle) -> None:
    """Export the servers' endpoint/credential variables (controllers inherit them)."""
    for srv in servers:
        for k, v in srv.env_vars.items():
            monkeypatch.setenv(k, v)


def fast_status(c: Any, policy: str) -> dict[str, MirrorTargetStatus]:
    """The same statuses, read in-process (a ``watch=False`` client reads etcd each call)."""
    out = c.mirror_status(policy)
    return {t.target: t for t in out[0].targets}


def put_all(c: Any, volume: str, files: dict[str, bytes]) -> int:
    """Write ``files`` through the owner; returns the volume version after the last one."""
    version = 0
    for path, data in files.items():
        version = c.put(data, f"/{volume}/{path}").version
    return version


def leader_of(fed: Federation) -> str | None:
    with fed.client(watch=False) as c:
        leader: str | None = c.view().leader
        return leader


# ---------------------------------------------------------------------------------------------
# direct (vendor SDK) readers of one target prefix


def check_store(d: RawStore, expected: dict[str, bytes], version: int, volume: str) -> None:
    """The target holds exactly ``expected`` (paths, sizes, sha256) and commits ``version``."""
    objs = d.contents()
    files = {k: v for k, v in objs.items() if not k.startswith(".gns/")}
    assert sorted(files) == sorted(expected), f"{d.uri}: paths differ"
    for path, data in expected.items():
        got = files[path]
        assert (len(got), sha(got)) == (len(data), sha(data)), f"{d.uri}: {path} differs"
    assert PASS_MARKER not in objs, f"{d.uri}: in-place marker left after a commit"
    m = resolve_manifest(objs[MANIFEST], objs.get)
    assert (m["version"], m["volume"]) == (version, volume), d.uri
    assert m["files"] == {p: {"size": len(b), "sha256": sha(b)} for p, b in expected.items()}
    if d.scheme != "file":
        for path in list(expected)[:3]:
            assert d.sha_metadata(path) == sha(expected[path]), f"{d.uri}: {path} metadata"


def replica_files(c: Any, root: str) -> dict[str, FileInfo]:
    """Every file under ``root`` as the client's route serves it: path -> stat."""
    out: dict[str, FileInfo] = {}

    def walk(d: str) -> None:
        for e in c.ls(d):
            p = f"{d}/{e.name}"
            if e.is_dir:
                walk(p)
            else:
                out[p[len(root) + 1:]] = c.stat(p)

    walk(root)
    return out


def check_replica(fed: Federation, replica: str, volume: str, expected: dict[str, bytes]) -> None:
    """The replica cluster serves exactly ``expected`` itself (``served_by`` it, marked stale:
    the read was not forwarded to the owner)."""
    with fed.client(watch=False, via=replica, consistency="any") as c:
        got = replica_files(c, f"/{volume}")
        assert sorted(got) == sorted(expected), f"replica {replica}: paths differ"
        for path, data in expected.items():
            st = got[path]
            assert st.served_by == replica and st.stale, st
            assert (st.size, st.sha256) == (len(data), sha(data)), path
            body = c.cat(f"/{volume}/{path}")
            assert sha(body) == sha(data), path


# ---------------------------------------------------------------------------------------------
# 1. every kind of target at once


def test_every_target_kind_at_once_contents_match(
    federation: Federation, moto_s3: ServerHandle, fake_gcs: ServerHandle,
    azurite: ServerHandle, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    fed = federation
    use_servers(monkeypatch, moto_s3, fake_gcs, azurite)
    s3 = moto_s3.new_store_uri("dr/sensors")
    gs = fake_gcs.new_store_uri("dr/sensors")
    az = azurite.new_store_uri("dr/sensors")
    local = f"file://{tmp_path}/nfs/sensors"
    fed.add("onprem-a", region="dc1", wait=False)
    fed.add("onprem-b", region="dc2", wait=False)
    for cid in fed.controllers:
        fed.wait_healthy(cid, timeout=30)
    make_volume(fed, "sensors", "onprem-a")
    apply_policy(fed, tmp_path, policy_doc("sensors-dr", "sensors", "continuous",
                                           ["onprem-b", s3, gs, az, local]))
    stores = [RawStore(s3, moto_s3), RawStore(gs, fake_gcs), RawStore(az, azurite), RawStore(local, None)]

    files = {
        "readme.txt": b"hello mirrors\n",
        "a/b/c/deep.bin": os.urandom(10_000),
        "day1/r001.csv": b"t,v\n" + b"1,2\n" * 500,
        "day1/r002.csv": b"t,v\n" + b"3,4\n" * 300,
        "day2/r003.csv": b"t,v\n5,6\n",
        "big.bin": os.urandom(3 * 2**20 + 123),
        "empty.txt": b"",
        "ünï/cödé.txt": "unicode ✓".encode(),
    }
    with fed.client() as c:
        head = put_all(c, "sensors", files)
    st = wait_synced(fed, "sensors-dr", head, timeout=90)
    assert list(st) == ["onprem-b", s3, gs, az, local]  # named as in the policy, in its order
    for t in st.values():
        assert t["last_error"] is None and t["bytes"] >= sum(map(len, files.values())), t
    for d in stores:
        check_store(d, files, head, "sensors")
    check_replica(fed, "onprem-b", "sensors", files)

    # a change and a deletion propagate everywhere
    with fed.client() as c:
        files["day1/r001.csv"] = b"t,v\nchanged\n"
        c.put(files["day1/r001.csv"], "/sensors/day1/r001.csv")
        head = c.rm("/sensors/day2/r003.csv")
        del files["day2/r003.csv"]
    wait_synced(fed, "sensors-dr", head, timeout=60)
    for d in stores:
        check_store(d, files, head, "sensors")
        assert d.read("day2/r003.csv") is None, f"{d.uri}: deleted object still there"
    check_replica(fed, "onprem-b", "sensors", files)

    # `mirror verify` finds a target changed behind our back: with --no-repair it reports it
    # and exits 1 (as diff does); without, it repairs and exits 0.
    (tmp_path / "nfs" / "sensors" / "readme.txt").write_bytes(b"changed behind gns's back\n")
    verified = fed.gns("mirror", "verify", "sensors-dr", "--no-repair", "--json")
    assert verified.returncode == 1 and "differ from the volume" in verified.stderr, verified
    reports = {r["target"]: r for r in json.loads(verified.stdout)}
    assert reports[local]["mismatched"] == ["readme.txt"] and not reports[local]["ok"], reports[local]
    assert all(r["ok"] for t, r in reports.items() if t != local), reports
    assert fed.gns("mirror", "verify", "sensors-dr").returncode == 0
    assert fed.gns("mirror", "verify", "sensors-dr", "--no-repair").returncode == 0
    assert (tmp_path / "nfs" / "sensors" / "readme.txt").read_bytes() == files["readme.txt"]
    # --deep re-reads the object stores' bytes and has the cluster target hash its own blobs
    # (it refused the whole verify before, then checked only its catalog's sha256)
    deep = fed.gns("mirror", "verify", "sensors-dr", "--deep", "--no-repair", "--json")
    assert deep.returncode == 0, deep.stderr
    assert all(r["ok"] and r["deep"] for r in json.loads(deep.stdout)), deep.stdout

    # A replica blob whose bytes changed on disk: its catalog still says the right sha256, so
    # only --deep sees it; the replica sets it aside (never served again) and the repair
    # sends it anew.
    [blob] = fed.controllers["onprem-b"].data_dir.glob(f"volumes/**/blobs/*/{sha(files['big.bin'])}")
    damaged = bytearray(blob.read_bytes())
    damaged[4096] ^= 0xFF
    blob.write_bytes(bytes(damaged))
    assert fed.gns("mirror", "verify", "sensors-dr", "--no-repair").returncode == 0
    deep = fed.gns("mirror", "verify", "sensors-dr", "--deep", "--no-repair", "--json")
    assert deep.returncode == 1 and "onprem-b" in deep.stderr, deep
    reports = {r["target"]: r for r in json.loads(deep.stdout)}
    assert reports["onprem-b"]["mismatched"] == ["big.bin"], reports["onprem-b"]
    assert all(r["ok"] for t, r in reports.items() if t != "onprem-b"), reports
    assert not blob.exists()  # set aside: a read at the replica cannot get the bad bytes
    assert fed.gns("mirror", "verify", "sensors-dr", "--deep").returncode == 0
    assert sha(blob.read_bytes()) == sha(files["big.bin"])
    check_replica(fed, "onprem-b", "sensors", files)

    # with the owner gone, the replica alone serves the volume (`gns cat --consistency any`)
    fed.kill("onprem-a", signal.SIGKILL)
    fed.wait_state("onprem-a", "Down", timeout=fed.lease_ttl + 10)
    out = fed.gns_bytes("cat", "/sensors/day1/r001.csv", "--consistency", "any", "--max-staleness", "1h")
    assert out.returncode == 0, out.stderr
    assert out.stdout == files["day1/r001.csv"]
    stat = json.loads(ok(fed.gns("stat", "/sensors/big.bin", "--consistency", "any", "--json")))
    assert (stat["sha256"], stat["size"]) == (sha(files["big.bin"]), len(files["big.bin"]))
    assert stat.get("served_by") == "onprem-b"


# ---------------------------------------------------------------------------------------------
# 2 + 6. incremental passes move only what changed; `sync --wait --json`; `gns status --json`


def test_incremental_sync_moves_only_changed_files(
    federation: Federation, moto_s3: ServerHandle, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    fed = federation
    use_servers(monkeypatch, moto_s3)
    s3 = moto_s3.new_store_uri("inc")
    fed.add("onprem-a")
    make_volume(fed, "inc", "onprem-a")
    apply_policy(fed, tmp_path, policy_doc("inc-dr", "inc", "manual", [s3]))
    d = RawStore(s3, moto_s3)
    files = {f"d{i % 7}/f{i:03d}.dat": os.urandom(2000 + i) for i in range(200)}
    with fed.client() as c:
        head = put_all(c, "inc", files)

    # manual: nothing moves until `gns mirror sync`
    holds_for(lambda: d.listing() == {}, 1.5, "an empty target before `gns mirror sync`", every=0.3)
    before = cli_status(fed, "inc-dr")[s3]
    assert (before["version"], before["lag_versions"]) == (0, head), before
    assert before["state"] != "Synced", before

    out = fed.gns("mirror", "sync", "inc-dr", "--wait", "--json", timeout=180)
    [entry] = json.loads(ok(out))
    assert (entry["policy"], entry["volume"]) == ("inc-dr", "inc")
    [t] = entry["targets"]
    assert (t["target"], t["state"], t["version"], t["lag_versions"]) == (s3, "Synced", head, 0), t
    assert t["files"] == 200 and t["bytes"] == sum(map(len, files.values())), t
    assert t["last_error"] is None
    first = t
    assert out.stderr == ""  # no progress bar when piped / --json
    check_store(d, files, head, "inc")
    mtimes = {k: v["mtime"] for k, v in d.listing().items()}

    time.sleep(1.1)  # LastModified has one-second resolution
    changed = ["d0/f000.dat", "d3/f101.dat", "d6/f199.dat"]
    with fed.client() as c:
        for p in changed:
            files[p] = os.urandom(1500)
            head = c.put(files[p], f"/inc/{p}").version
    out = fed.gns("mirror", "sync", "inc-dr", "--wait", "--json", timeout=120)
    [t] = json.loads(ok(out))[0]["targets"]
    assert (t["state"], t["version"]) == ("Synced", head), t
    assert t["files"] - 200 == 3, f"an incremental pass moved {t['files'] - 200} files, not 3"
    assert t["bytes"] - first["bytes"] == 3 * 1500, t
    check_store(d, files, head, "inc")
    after = d.listing()
    for k, m in mtimes.items():
        if k in changed:
            assert after[k]["mtime"] != m, f"changed object {k} was not rewritten"
        elif not k.startswith(".gns/"):
            assert after[k]["mtime"] == m, f"unchanged object {k} was copied again"

    # a sync with nothing new moves nothing
    [t] = json.loads(ok(fed.gns("mirror", "sync", "inc-dr", "--wait", "--json")))[0]["targets"]
    assert (t["files"], t["version"]) == (203, head)

    # `gns status --json` shows the mirrors in the `mirror status` shape
    st = json.loads(ok(fed.gns("status", "--json")))
    assert {"clusters", "volumes", "mounts", "mirrors"} <= set(st)
    [m] = st["mirrors"]
    assert (m["policy"], m["volume"]) == ("inc-dr", "inc")
    [t] = m["targets"]
    assert {"target", "state", "version", "lag_versions", "lag_seconds", "bytes", "files",
            "last_error"} <= set(t)
    assert (t["target"], t["state"], t["version"], t["lag_versions"], t["files"]) == (
        s3, "Synced", head, 0, 203)
    assert isinstance(t["lag_seconds"], (int, float)) and t["lag_seconds"] == 0


# ---------------------------------------------------------------------------------------------
# 3. kill -9 of the owner in the middle of a pass


class ManifestWatch(threading.Thread):
    """Polls a target while passes run: whenever it claims a version (manifest present, no
    in-place marker naming another version), every file the manifest lists must be there
    with the listed size and sha256 (bytes hashed, cached by etag)."""

    def __init__(self, d: RawStore) -> None:
        super().__init__(daemon=True)
        self.d = d
        self.stop = threading.Event()
        self.violations: list[tuple[int, list[str]]] = []
        self.claimed: set[int] = set()
        self.checks = 0
        self.errors: list[str] = []
        self._hash: dict[str, tuple[Any, str]] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.check_once()
            except Exception as exc:  # a transient SDK error must not end the watch
                self.errors.append(repr(exc))
            self.stop.wait(0.1)

    def check_once(self) -> None:
        d = self.d
        etag1 = d.head_etag(MANIFEST)
        if etag1 is None:
            return
        body = d.read(MANIFEST)
        if body is None:
            return
        try:
            m = resolve_manifest(body, d.read)
        except AssertionError:  # a segment retired and removed since: a newer commit exists
            if d.head_etag(MANIFEST) != etag1:
                return
            raise
        listing = d.listing()
        bad = []
        for path, e in m["files"].items():
            o = listing.get(path)
            if o is None:
                bad.append(f"missing {path}")
                continue
            cached = self._hash.get(path)
            if cached is None or cached[0] != o["etag"]:
                data = d.read(path)
                if data is None:
                    bad.append(f"missing {path}")
                    continue
                cached = self._hash[path] = (o["etag"], sha(data))
            if cached[1] != e["sha256"] or o["size"] != e["size"]:
                bad.append(f"wrong {path}")
        marker_raw = d.read(PASS_MARKER)
        marker = json.loads(marker_raw) if marker_raw else None
        if d.head_etag(MANIFEST) != etag1 or d.read(MANIFEST) != body:
            return  # committed meanwhile: inconclusive, next round
        if marker is not None and marker.get("to") != m["version"]:
            return  # the target claims no version while it replaces files in place
        self.checks += 1
        self.claimed.add(int(m["version"]))
        if bad:
            self.violations.append((int(m["version"]), bad[:5]))


def test_kill9_owner_mid_pass_resumes_without_recopy(
    federation: Federation, seaweed_s3: ServerHandle, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    fed = federation
    use_servers(monkeypatch, seaweed_s3)
    uri = seaweed_s3.new_store_uri("crash/vol")
    fed.add("onprem-a", wait=False)
    fed.add("onprem-b", wait=False)
    for cid in fed.controllers:
        fed.wait_healthy(cid, timeout=30)
    make_volume(fed, "crashv", "onprem-a")
    apply_policy(fed, tmp_path, policy_doc("crash-dr", "crashv", "manual", [uri, "onprem-b"]))
    d = RawStore(uri, seaweed_s3)

    files = {f"old/{i:03d}": f"old {i} ".encode() * 200 for i in range(20)}
    with fed.client() as c:
        v1 = put_all(c, "crashv", files)
    ok(fed.gns("mirror", "sync", "crash-dr", "--wait", "--json", timeout=120))
    check_store(d, files, v1, "crashv")
    st = cli_status(fed, "crash-dr")
    files_v1, files_v1_b = st[uri]["files"], st["onprem-b"]["files"]
    bytes_v1_b = st["onprem-b"]["bytes"]
    assert files_v1 == files_v1_b == 20

    n_new = 300
    block = os.urandom(200 * 1024)
    new = {f"new/{i:03d}.bin": i.to_bytes(4, "big") + block[4:] for i in range(n_new)}
    with fed.client() as c:
        put_all(c, "crashv", new)
        files.update(new)
        files["old/000"] = b"replaced in place"
        c.put(files["old/000"], "/crashv/old/000")
        head = c.rm("/crashv/old/001")
        del files["old/001"]
    to_move = n_new + 1 + 1  # new files, one overwrite, one deletion
    # blobs of this pass that reached the replica, as files or inline rows ("replaced in
    # place" is small enough to be inline, and may arrive after every new blob)
    wanted = {sha(b) for p, b in files.items() if p.startswith("new/") or p == "old/000"}
    b_volume = fed.controllers["onprem-b"].data_dir / "volumes" / "crashv"

    def replica_blobs() -> frozenset[str]:
        return blobs_held(b_volume, wanted)

    def new_objects() -> dict[str, Any]:
        return {k: v for k, v in d.listing().items() if k.startswith("new/")}

    watch = ManifestWatch(d)
    watch.start()
    sync = subprocess.Popen(
        [sys.executable, "-m", "federation.cli.main", "mirror", "sync", "crash-dr", "--wait",
         "--json"], env=fed.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def arrived() -> int:
            return sum(1 for k in d.listing() if k.startswith("new/"))

        n = wait_for(lambda: arrived() >= 40 or sync.poll() is not None, 90, "the pass to get going", every=0.03)
        assert sync.poll() is None, f"the pass ended before the kill: {n}"
        fed.kill("onprem-a", signal.SIGKILL)
        assert sync.wait(60) != 0, "sync --wait reported success though its owner died"
    finally:
        if sync.poll() is None:
            sync.kill()
        sync.communicate()
    # an object or a blob the dead owner was sending lands (or is dropped) first
    present, present_b = wait_still(lambda: (new_objects(), replica_blobs()), 30, "the targets")
    assert 40 <= len(present) < n_new, f"killed too late to test a resume: {len(present)}"
    # what arrived is whole (object stores never show a partial object)
    for k in list(present)[:10]:
        assert d.read(k) == new[k]
    manifest = json.loads(d.read(MANIFEST) or b"{}")
    assert manifest["version"] == v1, "the target claims a version it does not hold"
    # The replica takes small blobs fast and may have committed the whole pass before the
    # object store had 40 objects: then the resume has nothing to send it.
    version_b, _ = replica_state(fed.controllers["onprem-b"].endpoint, "crashv")
    assert version_b in (v1, head), version_b

    fed.start("onprem-a")
    fed.wait_state("onprem-a", "Ready", timeout=30)
    st = cli_status(fed, "crash-dr")
    target = st[uri]
    assert target["version"] == v1 and target["files"] == files_v1, target
    assert target["state"] != "Synced"
    files_kill_b, bytes_kill_b = st["onprem-b"]["files"], st["onprem-b"]["bytes"]

    time.sleep(1.1)  # LastModified has one-second resolution
    out = fed.gns("mirror", "sync", "crash-dr", "--wait", "--json", timeout=180)
    t, tb = json.loads(ok(out))[0]["targets"]
    assert (t["state"], t["version"], t["lag_versions"]) == ("Synced", head, 0), t
    assert (tb["state"], tb["version"], tb["lag_versions"]) == ("Synced", head, 0), tb
    wait_for(lambda: head in watch.claimed, 20, "the watch to check the new version", every=0.2)
    watch.stop.set()
    watch.join(30)
    moved = t["files"] - files_v1
    assert moved == to_move - len(present), (
        f"resume moved {moved} files; {len(present)} of {to_move} had already arrived")
    after = d.listing()
    for k, o in present.items():
        assert after[k]["mtime"] == o["mtime"] and after[k]["etag"] == o["etag"], (
            f"{k} arrived before the crash and was copied again")
    check_store(d, files, head, "crashv")
    # What the resumed pass sent onprem-b (the cut pass's figures were never published,
    # unless it committed before the kill): the files it lacked, and only their bytes.
    moved_b = tb["files"] - files_kill_b
    if version_b == head:
        assert moved_b == 0 and tb["bytes"] == bytes_kill_b, (moved_b, tb)
    else:
        assert (files_kill_b, bytes_kill_b) == (files_v1_b, bytes_v1_b)
        assert moved_b == to_move - len(present_b), (
            f"resume moved {moved_b} files to onprem-b; {len(present_b)} had already arrived")
        lacked = sum(len(b) for p, b in files.items()
                     if (p.startswith("new/") or p == "old/000") and sha(b) not in present_b)
        assert tb["bytes"] - bytes_v1_b == lacked, (tb["bytes"] - bytes_v1_b, lacked)
    check_replica(fed, "onprem-b", "crashv", files)

    assert not watch.violations, watch.violations
    assert {v1, head} <= watch.claimed, (watch.claimed, watch.errors)


def test_kill9_owner_mid_replica_pass_sends_only_the_blobs_the_replica_lacks(
    federation: Federation, tmp_path: Path,
) -> None:
    """A cluster replica keeps the blobs a pass delivered before its owner was killed, but
    no committed version lists them. Here the cut pass is the first sync, so the next one is
    a full compare (as after an epoch change or a journal gap): it must ask the replica
    (``Lacks``) and send only the rest, counted in files and in bytes against the blobs the
    replica holds."""
    fed = federation
    fed.add("onprem-a", wait=False)
    fed.add("onprem-b", wait=False)
    for cid in fed.controllers:
        fed.wait_healthy(cid, timeout=30)
    make_volume(fed, "resumev", "onprem-a")
    apply_policy(fed, tmp_path, policy_doc("resume-dr", "resumev", "manual", ["onprem-b"]))
    n_files = 1200
    block = os.urandom(24 * 1024)
    files = {f"new/{i:04d}.bin": i.to_bytes(4, "big") + block[4:] for i in range(n_files)}
    with fed.client() as c:
        head = put_all(c, "resumev", files)
    wanted = {sha(b) for b in files.values()}
    b_volume = fed.controllers["onprem-b"].data_dir / "volumes" / "resumev"
    b_endpoint = fed.controllers["onprem-b"].endpoint

    def replica_blobs() -> frozenset[str]:
        # 24 KiB blobs are staged inline: rows of the replica's catalog
        return blobs_held(b_volume, wanted)

    sync = subprocess.Popen(
        [sys.executable, "-m", "federation.cli.main", "mirror", "sync", "resume-dr", "--wait",
         "--json"], env=fed.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        n = wait_for(lambda: len(replica_blobs()) >= 40 or sync.poll() is not None, 90,
                     "blobs to reach the replica", every=0.02)
        assert sync.poll() is None, f"the pass ended before the kill: {n}"
        fed.kill("onprem-a", signal.SIGKILL)
        assert sync.wait(60) != 0, "sync --wait reported success though its owner died"
    finally:
        if sync.poll() is None:
            sync.kill()
        sync.communicate()
    # a blob the replica was finishing lands (or is dropped) first
    present_b = wait_still(replica_blobs, 30, "the replica's blobs")
    assert 40 <= len(present_b) < n_files, f"killed too late to test a resume: {len(present_b)}"
    version_b, listed_b = replica_state(b_endpoint, "resumev")
    assert (version_b, listed_b) == (0, {}), "onprem-b committed before the kill"

    fed.start("onprem-a")
    fed.wait_state("onprem-a", "Ready", timeout=30)
    out = fed.gns("mirror", "sync", "resume-dr", "--wait", "--json", timeout=180)
    (tb,) = json.loads(ok(out))[0]["targets"]
    assert (tb["state"], tb["version"], tb["lag_versions"]) == ("Synced", head, 0), tb
    lacked = [b for b in files.values() if sha(b) not in present_b]
    assert tb["files"] == len(lacked), (
        f"resume moved {tb['files']} files; {len(present_b)} of {n_files} had arrived")
    assert tb["bytes"] == sum(len(b) for b in lacked), "blobs the replica held were sent again"
    check_replica(fed, "onprem-b", "resumev", files)


# ---------------------------------------------------------------------------------------------
# 4. kill -9 of the federation leader while interval passes run


def test_kill9_leader_reelected_and_interval_passes_go_on(
    federation: Federation, tmp_path: Path,
) -> None:
    fed = federation
    fed.lease_ttl = 3
    for cid in ("onprem-a", "onprem-b", "aws-1"):
        fed.add(cid, wait=False)
    for cid in fed.controllers:
        fed.wait_healthy(cid, timeout=30)
    leader = wait_for(lambda: leader_of(fed), 15, "a federation leader", every=0.2)
    owner, replica = sorted(c for c in fed.controllers if c != leader)
    local = f"file://{tmp_path}/dr/iv"
    make_volume(fed, "iv", owner)
    apply_policy(fed, tmp_path, policy_doc("iv-dr", "iv", "interval", [replica, local],
                                           interval="2s"))
    d = RawStore(local, None)

    files = {f"a/{i:02d}": os.urandom(1000 + i) for i in range(30)}
    with fed.client() as c:
        head = put_all(c, "iv", files)
    wait_synced(fed, "iv-dr", head, timeout=40)

    block = os.urandom(100 * 1024)
    more = {f"b/{i:03d}": i.to_bytes(4, "big") + block[4:] for i in range(150)}
    with fed.client() as c:
        head = put_all(c, "iv", more)
    files.update(more)
    # kill the leader once the interval pass is moving files
    wait_for(lambda: any(k.startswith("b/") for k in d.listing()), 30, "the interval pass to start", every=0.05)
    t0 = time.monotonic()
    assert leader is not None
    fed.kill(leader, signal.SIGKILL)
    new_leader = wait_for(lambda: (lambda x: x if x not in (None, leader) else None)(leader_of(fed)), fed.lease_ttl + 15, "a new leader", every=0.1)
    took = time.monotonic() - t0
    assert new_leader in (owner, replica)
    assert took <= fed.lease_ttl + 4, f"re-election took {took:.1f}s (lease TTL {fed.lease_ttl}s)"

    wait_synced(fed, "iv-dr", head, timeout=40)
    with fed.client() as c:
        extra = {f"c/{i}": os.urandom(500) for i in range(5)}
        head = put_all(c, "iv", extra)
    files.update(extra)
    st = wait_synced(fed, "iv-dr", head, timeout=30)
    # every file was moved exactly once to each target: nothing copied again
    for t in (replica, local):
        assert st[t]["files"] == len(files), (t, st[t])
    check_store(d, files, head, "iv")
    check_replica(fed, replica, "iv", files)


# ---------------------------------------------------------------------------------------------
# 5. continuous mode: lag stays under maxLag with steady writes; Lagging when it cannot


def test_continuous_lag_under_max_lag_then_lagging_when_target_stopped(
    federation: Federation, tmp_path: Path,
) -> None:
    fed = federation
    fed.lease_ttl = 3
    fed.add("onprem-a", wait=False)
    fed.add("onprem-b", wait=False)
    for cid in fed.controllers:
        fed.wait_healthy(cid, timeout=30)
    local = f"file://{tmp_path}/dr/cont"
    make_volume(fed, "cont", "onprem-a")
    max_lag = 5.0
    apply_policy(fed, tmp_path, policy_doc("cont-dr", "cont", "continuous", ["onprem-b", local],
                                           max_lag=f"{max_lag:g}s"))
    expected: dict[str, bytes] = {}
    stop = threading.Event()
    head = [0]
    errors: list[BaseException] = []

    def writer(rate: float, count: int) -> None:
        try:
            with fed.client() as c:
                t_next = time.monotonic()
                for i in range(count):
                    if stop.is_set():
                        return
                    path = f"w/{i % 40:02d}"  # new files and overwrites
                    data = f"{i} ".encode() * 50
                    head[0] = c.put(data, f"/cont/{path}").version
                    expected[path] = data
                    t_next += 1.0 / rate
                    time.sleep(max(0.0, t_next - time.monotonic()))
        except BaseException as exc:
            errors.append(exc)

    def sample(states: dict[str, set[str]], lags: dict[str, float], until: Callable[[], bool],
               c: Any) -> None:
        while not until():
            for t, e in fast_status(c, "cont-dr").items():
                states.setdefault(t, set()).add(e.state)
                lags[t] = max(lags.get(t, 0.0), e.lag_seconds)
            time.sleep(0.1)

    # steady writes: 10/s for 10 s
    w = threading.Thread(target=writer, args=(10.0, 100))
    states: dict[str, set[str]] = {}
    lags: dict[str, float] = {}
    w.start()
    with fed.client(watch=False) as c:
        sample(states, lags, lambda: not w.is_alive(), c)
    w.join()
    assert not errors, errors
    assert head[0] >= 100
    st = wait_synced(fed, "cont-dr", head[0], timeout=20)
    assert max(lags.values()) < max_lag, f"lag exceeded maxLag {max_lag}s: {lags}"
    for t, seen in states.items():
        assert not seen & {"Lagging", "Error"}, (t, seen)
    assert all(st[t]["last_error"] is None for t in st), st
    check_replica(fed, "onprem-b", "cont", expected)
    check_store(RawStore(local, None), expected, head[0], "cont")

    # a target that cannot keep up: onprem-b frozen while writes go on, maxLag 2s
    apply_policy(fed, tmp_path, policy_doc("cont-dr", "cont", "continuous", ["onprem-b", local],
                                           max_lag="2s"))
    frozen_at = head[0]
    w = threading.Thread(target=writer, args=(2.0, 200))
    fed.kill("onprem-b", signal.SIGSTOP)
    try:
        w.start()
        with fed.client(watch=False) as c:
            # the healthy target keeps following the writes meanwhile ...
            wait_for(lambda: head[0] >= frozen_at + 6, 30, "writes while onprem-b is frozen", every=0.2)
            h = head[0]
            wait_for(lambda: fast_status(c, "cont-dr")[local].version >= h, 20, "the file target to follow", every=0.2)

            # ... while the frozen one stays behind, and says so
            def lagging() -> MirrorTargetStatus | None:
                e = fast_status(c, "cont-dr")["onprem-b"]
                return e if e.state in ("Lagging", "Error") else None

            bad = wait_for(lagging, 15, "onprem-b to show Lagging", every=0.1)
            assert bad is not None
            assert bad.version == frozen_at and bad.lag_versions >= 6, bad
            if bad.state == "Lagging":
                assert bad.lag_seconds > 2.0, bad
    finally:
        fed.kill("onprem-b", signal.SIGCONT)
        stop.set()
        w.join(30)
    assert not errors, errors
    fed.wait_state("onprem-b", "Ready", timeout=30)
    st = wait_synced(fed, "cont-dr", head[0], timeout=60)
    assert st["onprem-b"]["lag_seconds"] == 0
    check_replica(fed, "onprem-b", "cont", expected)


# ---------------------------------------------------------------------------------------------
# status truthfulness: what `mirror status` says about lag and passes


def test_lag_seconds_never_exceeds_time_since_first_unmirrored_write(
    federation: Federation, tmp_path: Path,
) -> None:
    fed = federation
    fed.add("onprem-a")
    local = f"file://{tmp_path}/dr/lag"
    make_volume(fed, "lagv", "onprem-a")
    apply_policy(fed, tmp_path, policy_doc("lag-dr", "lagv", "manual", [local], max_lag="2s"))
    wrong: list[tuple[float, MirrorTargetStatus]] = []
    with fed.client() as c, fed.client(watch=False) as r:
        for probe in range(3):
            c.put(b"x", f"/lagv/p{probe}")
            ok(fed.gns("mirror", "sync", "lag-dr", "--wait"))
            time.sleep(2.5)  # idle for longer than maxLag
            t_write = time.time()
            c.put(b"y", f"/lagv/q{probe}")
            end = time.monotonic() + 1.5
            while time.monotonic() < end:
                e = fast_status(r, "lag-dr")[local]
                since_write = time.time() - t_write
                # (A manual target that is behind shows Lagging by design: nothing moves it.)
                if e.lag_seconds > since_write + 0.3:
                    wrong.append((round(since_write, 3), e))
                time.sleep(0.02)
            if wrong:
                break
    assert not wrong, f"lag counted from before the first unmirrored write: {wrong[:2]}"


def test_status_says_syncing_only_while_a_pass_runs(federation: Federation,
                                                    tmp_path: Path) -> None:
    fed = federation
    fed.add("onprem-a")
    local = f"file://{tmp_path}/dr/st"
    make_volume(fed, "stv", "onprem-a")
    apply_policy(fed, tmp_path, policy_doc("st-dr", "stv", "manual", [local]))
    block = os.urandom(1 << 20)
    with fed.client() as c:
        put_all(c, "stv", {f"f{i:03d}": i.to_bytes(4, "big") + block[4:] for i in range(120)})
    with fed.client(watch=False) as r:
        wait_for(lambda: any(v.get("policy") == "st-dr" for v in r.view().mirror_status.values()), 10, "the owner to publish the target's record", every=0.2)
        # (a) manual, behind, no pass running
        assert fast_status(r, "st-dr")[local].state == "Lagging"

        sync = subprocess.Popen(
            [sys.executable, "-m", "federation.cli.main", "mirror", "sync", "st-dr", "--wait"],
            env=fed.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: any(v.get("syncing") for v in r.view().mirror_status.values()), 30, "the pass to be published as running", every=0.05)
            fed.kill("onprem-a", signal.SIGKILL)
            sync.wait(30)
        finally:
            if sync.poll() is None:
                sync.kill()
                sync.wait()
        # (b) the owner is dead: nothing runs
        fed.wait_state("onprem-a", "Down", timeout=fed.lease_ttl + 10)
        assert fast_status(r, "st-dr")[local].state in ("Lagging", "Error")
        fed.start("onprem-a")
        time.sleep(2.0)
        assert fast_status(r, "st-dr")[local].state == "Lagging"
