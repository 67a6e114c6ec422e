"""Commands on an edge site's own volume that used to hang or fail (SPEC §4, §8).

- ``gns mirror sync`` / ``verify`` of a policy whose volume an edge site owns: the site's
  registered endpoint is its hub's, and the hub forwarded the call to that endpoint, i.e. to
  itself, again and again, until the caller gave up (the CLI never did). Now the hub sends
  it down the site's link and the site's shipper does the work; whichever way the command
  enters (etcd, ``--controller`` hub, ``--controller`` site) it ends in a few seconds.
- ``gns mv`` at a disconnected site (``--controller`` its listen address): ``put`` and ``rm``
  of the site's own paths worked offline, ``mv`` did not, because it asks ``Control/Resolve``
  first, which the site relayed to its hub. The site now resolves its own paths itself.

Real processes, one module-scoped federation: hub ``onprem-a``, core ``onprem-b``, and site
``edge-1`` joined through a loopback proxy that the tests stall (silence, as a dead link)
and heal. Every test leaves the link up.
"""
from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from edge.harness import EdgeProcess
from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.certs import init_certs, issue_user
from federation.local.emulators import ServerHandle
from federation.local.etcd_server import EtcdCluster
from federation.local.tcpproxy import TcpProxy
from tests.fixtures.federation import Controller, Federation, assert_error
from tests.support import wait_for
from tests.support.edge import (
    edge_site,
    join,
    put,
    replica_files,
    start_mirrored_site,
    stub,
    try_rpc,
    wait_cluster,
)
from tests.support.mirrors import apply_policy, make_volume

QUICK = 20.0
"""Seconds any of these commands may take; before the fixes the mirror ones never ended."""


@dataclass
class Site:
    fed: Federation
    hub: Controller
    core: Controller
    proxy: TcpProxy
    edge: EdgeProcess

    def gns(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        """The CLI, which must be done within ``QUICK`` seconds (a hang fails, not waits)."""
        started = time.monotonic()
        try:
            out = self.fed.gns(*args, input=input, timeout=QUICK)
        except subprocess.TimeoutExpired:
            pytest.fail(f"gns {' '.join(args)} still running after {QUICK}s")
        assert time.monotonic() - started < QUICK
        return out

    def at_site(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        return self.gns("--controller", self.edge.listen, *args, input=input)

    def head(self) -> int:
        return int(stub(self.edge).VolumeState(pb.VolumeStateRequest(volume="sensors"), timeout=10).version)


@pytest.fixture(scope="module")
def site(etcd_module: EtcdCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("edge-commands")
    fed = Federation(etcd_module, root)
    try:
        hub, core, proxy, e = start_mirrored_site(fed, root)
        try:
            s = stub(e)
            wait_for(lambda: try_rpc(lambda: put(s, "/sensors/first", b"first")), 15, "a first write at the site")
            yield Site(fed, hub, core, proxy, e)
        finally:
            e.stop()
            proxy.stop()
    finally:
        fed.stop_all()


@pytest.fixture
def cut(site: Site) -> Iterator[Site]:
    """The site's link stalled for the test (the site sees it Down), healed afterwards."""
    site.proxy.stall()
    try:
        site.edge.wait_link("Down", timeout=15)
        wait_cluster(site.fed, "edge-1", "Down", timeout=15)
        yield site
    finally:
        _heal(site)


def _heal(site: Site) -> None:
    site.proxy.heal()
    site.edge.wait_link("Ready", timeout=30)
    wait_cluster(site.fed, "edge-1", "Ready", timeout=30)


def _targets(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert out.returncode == 0, out.stderr
    return {t["target"]: t for p in json.loads(out.stdout) for t in p["targets"]}


@pytest.mark.parametrize("way", ["etcd", "controller-hub", "controller-site"])
def test_mirror_sync_and_verify_of_a_site_volume_end(site: Site, way: str) -> None:
    entry = {"etcd": (), "controller-hub": ("--controller", site.hub.endpoint),
             "controller-site": ("--controller", site.edge.listen)}[way]
    put(stub(site.edge), f"/sensors/{way}", way.encode() * 100)
    head = site.head()
    out = site.gns(*entry, "mirror", "sync", "sensors-dr", "--json")
    assert "onprem-b" in _targets(out)
    # --wait: the site's shipper has the target at the volume's head when it returns.
    got = _targets(site.gns(*entry, "mirror", "sync", "sensors-dr", "--wait", "--json"))["onprem-b"]
    assert replica_files(site.core.endpoint, "sensors")[0] >= head
    assert got["version"] >= head and got["last_error"] is None, got
    out = site.gns(*entry, "mirror", "verify", "sensors-dr", "--json")
    assert out.returncode == 0, out.stderr
    (report,) = json.loads(out.stdout)
    assert report["target"] == "onprem-b" and report["ok"] is True and report["version"] >= head, report


def test_site_mirroring_service_reports_a_cut_link_at_once(cut: Site) -> None:
    """Asked at the site while its link is down, a waiting sync says why it cannot finish
    (each change waits, journaled, for the link) instead of waiting for the link; the CLI,
    which enters at the core, is told the owner is Down (exit 5)."""
    s = stub(cut.edge)
    put(s, "/sensors/offline", b"written while cut off")
    mirroring = pb_grpc.MirroringStub(grpc.insecure_channel(cut.edge.listen))
    started = time.monotonic()
    (msg,) = list(mirroring.Sync(pb.MirrorSyncRequest(policy="sensors-dr", wait=True), timeout=QUICK))
    assert time.monotonic() - started < 5
    assert msg.target == "onprem-b" and msg.done and "disconnected from its hub" in msg.error, msg
    reply = mirroring.Verify(pb.MirrorVerifyRequest(policy="sensors-dr"), timeout=QUICK)
    assert [r.target for r in reply.reports] == ["onprem-b"] and "disconnected" in reply.reports[0].error
    assert_error(cut.gns("mirror", "sync", "sensors-dr"), 5, "edge-1")


def test_mv_and_resolve_of_own_paths_at_a_disconnected_site(site: Site) -> None:
    s = stub(site.edge)
    for name in ("one.txt", "two.txt", "three.txt"):
        put(s, f"/sensors/{name}", name.encode())
    # Connected: the site's answer for its own path is the hub's (the same JSON as etcd's,
    # once the target's version has reached the federation with the site's report).
    def same() -> bool:
        here, there = site.at_site("resolve", "/sensors/one.txt", "--json"), site.gns("resolve", "/sensors/one.txt", "--json")
        return (here.returncode == there.returncode == 0 and _stable(here.stdout) == _stable(there.stdout)
                and [r["target"] for r in json.loads(here.stdout)["replicas"]] == ["onprem-b"])

    # Once the puts shipped: before, both answers list no replica (and agree), and a cut
    # link then leaves the site nothing shipped to show.
    wait_for(same, 20, "the site's resolve answer, with its replica, to match the federation's")
    site.proxy.stall()
    try:
        # At once, before the site has noticed (its link still looks up), and once it has.
        moved = site.at_site("mv", "/sensors/one.txt", "/sensors/one-moved.txt")
        assert moved.returncode == 0, moved.stderr
        site.edge.wait_link("Down", timeout=15)
        assert site.at_site("put", "-", "/sensors/x", input=b"offline put").returncode == 0
        assert site.at_site("rm", "/sensors/two.txt").returncode == 0
        moved = site.at_site("mv", "/sensors/three.txt", "/sensors/three-moved.txt")
        assert moved.returncode == 0, moved.stderr
        res = site.at_site("resolve", "/sensors/x", "--json")
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        assert doc["volume"] == "sensors" and doc["owner"]["cluster"] == "edge-1" and doc["relative_path"] == "x"
        assert [r["target"] for r in doc["replicas"]] == ["onprem-b"] and "stale" not in doc
        names = site.at_site("ls", "/sensors", "--json")
        assert names.returncode == 0, names.stderr
        assert {e["name"] for e in json.loads(names.stdout)} >= {"one-moved.txt", "three-moved.txt", "x"}
        assert not {e["name"] for e in json.loads(names.stdout)} & {"one.txt", "two.txt", "three.txt"}
        # Paths the site does not own still need the hub: a prompt exit 5, as before.
        assert_error(site.at_site("resolve", "/elsewhere/y"), 5, "disconnected")
    finally:
        _heal(site)
    # The renames ship with the rest of the backlog.
    wait_for(lambda: {"one-moved.txt", "three-moved.txt", "x"} <= set(replica_files(site.core.endpoint, "sensors")[1])
             and not {"one.txt", "two.txt", "three.txt"} & set(replica_files(site.core.endpoint, "sensors")[1]),
             30, "the offline renames at the core mirror")


def test_reads_at_the_hub_of_a_cut_off_site_fail_at_once_until_it_is_down(site: Site) -> None:
    """Between the hub losing its link and etcd saying the site is Down, the hub forwarded
    reads of the site's paths to the address the site registered, its own, until the hop
    limit ("request forwarded too many times (routing loop?)"). It says the site is not
    connected, at once; once the site is Down the mirror answers, marked stale."""
    head = site.head()
    wait_for(lambda: replica_files(site.core.endpoint, "sensors")[0] >= head, 20,
             "the mirror to hold the site's volume")
    site.proxy.stall()
    answers: list[str] = []
    try:
        site.edge.wait_link("Down", timeout=15)

        def down() -> bool:
            started = time.monotonic()
            out = site.gns("stat", "/sensors/first", "--via", "onprem-a", "--json")
            assert time.monotonic() - started < 10, out.stderr
            answers.append(out.stderr.strip() or out.stdout.strip())
            return out.returncode == 0 and json.loads(out.stdout).get("stale") is True

        wait_for(down, 30, "a stale answer from the mirror once the site is Down")
    finally:
        _heal(site)
    assert not [a for a in answers if "routing loop" in a], answers


def test_listing_above_mounts_at_the_site_shows_every_mount(site: Site) -> None:
    """``ls /`` at the site listed only the site's own mounts (its slice of the mount
    table) while it read every other path all the same: the hub lists such directories.
    Cut off, the site lists what it knows, and a directory it knows nothing of is exit 5."""
    make_volume(site.fed, "corelogs", "onprem-b", at="/core/logs")

    def names(out: subprocess.CompletedProcess[str]) -> list[str]:
        assert out.returncode == 0, out.stderr
        return sorted(e["name"] for e in json.loads(out.stdout))

    assert names(site.at_site("ls", "/", "--json")) == names(site.gns("ls", "/", "--json"))
    assert {"core", "sensors"} <= set(names(site.at_site("ls", "/", "--json")))
    assert names(site.at_site("ls", "/core", "--json")) == ["logs"]
    site.proxy.stall()
    try:
        site.edge.wait_link("Down", timeout=15)
        assert "sensors" in names(site.at_site("ls", "/", "--json"))
        assert_error(site.at_site("ls", "/core"), 5)
    finally:
        _heal(site)


def _stable(text: str) -> Any:
    doc = json.loads(text)
    for r in doc.get("replicas", []):
        r.pop("lag_seconds", None)
    return doc


def test_a_tls_site_decides_on_resolve_and_mv_of_its_paths_while_its_hub_is_away(
        federation: Federation, tmp_path: Path) -> None:
    """Answering ``Control/Resolve`` itself, the site also decides who may (``read`` on the
    path, on the grants its hub sent): the hub used to. With the hub stopped, a user with
    ``write`` renames, one with ``read`` resolves but may not rename, one with nothing is
    refused (exit 4, audited at the site)."""
    tls = tmp_path / "tls"
    init_certs(tls, ["onprem-a"])
    issue_user(tls, "carol")
    issue_user(tls, "dave", groups=["field"])
    issue_user(tls, "erin")
    federation.tls_dir = tls
    hub = federation.add("onprem-a")
    e = edge_site(federation, "edge-t", [hub.endpoint])
    try:
        join(federation, e, timeout=30)
        make_volume(federation, "sitevol", "edge-t", at="/site")
        assert federation.gns("acl", "grant", "/site", "user:carol", "read").returncode == 0
        assert federation.gns("acl", "grant", "/site", "group:field", "read,write").returncode == 0

        def at_site(*args: str, identity: str, data: bytes | None = None) -> subprocess.CompletedProcess[str]:
            return federation.gns("--controller", e.listen, "--tls-dir", str(tls), "--identity", identity,
                                  *args, input=data, timeout=QUICK)

        wait_for(lambda: at_site("put", "-", "/site/d", identity="dave", data=b"d").returncode == 0, 20,
                 "the grants and the mount at the site")
        federation.stop("onprem-a")
        e.wait(lambda st: st.get("state") != "Ready", 20, "the site cut off from its stopped hub")

        assert at_site("mv", "/site/d", "/site/d2", identity="dave").returncode == 0
        out = at_site("resolve", "/site/d2", "--json", identity="carol")
        assert out.returncode == 0 and json.loads(out.stdout)["volume"] == "sitevol", out.stderr
        assert_error(at_site("mv", "/site/d2", "/site/d3", identity="carol"), 4, "permission denied")
        assert_error(at_site("resolve", "/site/d2", identity="erin"), 4, "permission denied")
        audit = [json.loads(ln) for ln in (e.data_dir / "audit.log").read_text().splitlines()]
        assert ("user:erin", "resolve", "/site/d2", "denied: no read") in {
            (a["identity"], a["action"], a["path"], a["result"]) for a in audit}
        names = at_site("ls", "/site", "--json", identity="dave")
        assert {x["name"] for x in json.loads(names.stdout)} == {"d2"}, names
    finally:
        e.stop()


@pytest.mark.slow
def test_mirror_sync_and_verify_of_a_site_volume_to_an_object_store(
        federation: Federation, moto_s3: ServerHandle, tmp_path: Path) -> None:
    """An object-store target of a site's volume: the site runs the passes and the verify,
    through its hub, which holds the store's credentials and makes its requests."""
    with moto_s3.env():
        hub = federation.add("onprem-a")
    uri = moto_s3.new_store_uri("edge-sync")
    e = edge_site(federation, "edge-s", [hub.endpoint])
    try:
        join(federation, e, timeout=30)
        make_volume(federation, "logs", "edge-s")
        apply_policy(federation, tmp_path, LOGS_POLICY.format(uri=uri))
        s = stub(e)
        wait_for(lambda: try_rpc(lambda: put(s, "/logs/a", b"a" * 5000)), 15, "the volume at the site")
        put(s, "/logs/b", b"b")
        head = int(s.VolumeState(pb.VolumeStateRequest(volume="logs"), timeout=10).version)
        out = federation.gns("mirror", "sync", "logs-files", "--wait", "--json", timeout=QUICK)
        (got,) = _targets(out).values()
        assert got["version"] >= head and got["last_error"] is None, got
        out = federation.gns("--controller", e.listen, "mirror", "verify", "logs-files", "--json", timeout=QUICK)
        assert out.returncode == 0, out.stderr
        (report,) = json.loads(out.stdout)
        assert report["ok"] is True and report["version"] >= head, report
    finally:
        e.stop()


LOGS_POLICY = """
apiVersion: gns.io/v1alpha1
kind: MirrorPolicy
metadata: {{name: logs-files}}
spec:
  volume: logs
  mode: continuous
  targets: [{{uri: "{uri}"}}]
"""
