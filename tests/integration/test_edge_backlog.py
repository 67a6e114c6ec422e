"""An edge site's backlog as the hub exports it (Prometheus), and namespace edits made at a
site while it was cut off (explicit empty directories, mkdir/rmdir, renames) reaching the
core mirror once shipping resumes. Real processes; the link is cut by a loopback proxy.
"""
from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from pathlib import Path

import grpc

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from namespace import edge as records
from namespace.etcd import Etcd, EtcdConfig
from tests.fixtures.federation import Federation
from tests.support import holds_for, wait_for
from tests.support.edge import (
    edge_list,
    put,
    replica_files,
    start_mirrored_site,
    stub,
    try_rpc,
    wait_cluster,
)


def backlog_metric(metrics_port: int, site: str) -> tuple[float, float] | None:
    """(changes, bytes) the hub exports for ``site``, or None while it exports no series."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    found = {}
    for name in ("gns_edge_backlog_changes", "gns_edge_backlog_bytes"):
        m = re.search(rf'^{name}{{site="{site}"}} (\S+)$', text, re.M)
        if m is None:
            return None
        found[name] = float(m.group(1))
    return found["gns_edge_backlog_changes"], found["gns_edge_backlog_bytes"]


def site_version(s: pb_grpc.FederationStub) -> int:
    return int(s.VolumeState(pb.VolumeStateRequest(volume="sensors"), timeout=10).version)


def test_backlog_metric_moves_and_offline_dir_edits_ship(federation: Federation, tmp_path: Path) -> None:
    hub, core, proxy, e = start_mirrored_site(federation, tmp_path)
    try:
        s = stub(e)
        wait_for(lambda: try_rpc(lambda: put(s, "/sensors/a", b"first")), 10, "first write")
        wait_for(lambda: replica_files(core.endpoint, "sensors")[0] == 1, 20, "live shipping")
        wait_for(lambda: backlog_metric(hub.metrics_port, "edge-1") == (0, 0), 10, "backlog metric 0")

        # The mirror target goes away: the site's backlog grows, and the hub's metric with it.
        federation.stop("onprem-b")
        wait_cluster(federation, "onprem-b", "Down", timeout=20)
        for i in range(3):
            put(s, f"/sensors/b{i}", b"x" * 1000)
        first = wait_for(lambda: (m := backlog_metric(hub.metrics_port, "edge-1")) and m[0] >= 3 and m, 15,
                         "backlog metric rises")
        assert isinstance(first, tuple)
        assert first[1] >= 3000, first
        for i in range(3, 6):
            put(s, f"/sensors/b{i}", b"y" * 1000)
        wait_for(lambda: (m := backlog_metric(hub.metrics_port, "edge-1")) and m[0] > first[0] and m[1] > first[1],
                 15, "backlog metric keeps growing")
        federation.start("onprem-b", wait=False)
        federation.wait_healthy("onprem-b", timeout=30)
        wait_for(lambda: backlog_metric(hub.metrics_port, "edge-1") == (0, 0), 40, "backlog drained, metric 0")

        # Cut off: explicit directories and renames, made while nothing ships.
        proxy.stall()
        e.wait_link("Down", timeout=10)
        meta = s  # the site's own Federation API: local edits, nothing crosses the link
        meta.Mkdir(pb.MkdirRequest(target=pb.Target(global_path="/sensors/empty"), mode=0o750), timeout=10)
        meta.Mkdir(pb.MkdirRequest(target=pb.Target(global_path="/sensors/gone")), timeout=10)
        meta.Rmdir(pb.RmdirRequest(target=pb.Target(global_path="/sensors/gone")), timeout=10)
        meta.Mkdir(pb.MkdirRequest(target=pb.Target(global_path="/sensors/e1")), timeout=10)
        meta.Rename(pb.RenameRequest(target=pb.Target(global_path="/sensors/e1"), destination="/sensors/e2"),
                    timeout=10)
        put(s, "/sensors/d1/f", b"in a directory")
        meta.Rename(pb.RenameRequest(target=pb.Target(global_path="/sensors/d1"), destination="/sensors/d2"),
                    timeout=10)
        meta.Rename(pb.RenameRequest(target=pb.Target(global_path="/sensors/a"), destination="/sensors/a.moved"),
                    timeout=10)
        head = site_version(s)
        proxy.heal()
        e.wait_link("Ready", timeout=20)
        wait_for(lambda: replica_files(core.endpoint, "sensors")[0] == head, 30, "offline edits shipped")
        _, files = replica_files(core.endpoint, "sensors")
        assert "a.moved" in files and "a" not in files
        assert "d2/f" in files and "d1/f" not in files
        # The mirror's explicit directories: read from it while the site is away (stale).
        e.stop()
        wait_cluster(federation, "edge-1", "Down", timeout=20)
        with grpc.insecure_channel(core.endpoint) as ch:
            listing = pb_grpc.FederationStub(ch).List(pb.ListRequest(target=pb.Target(global_path="/sensors")),
                                                      timeout=10)
        entries = {en.name: en for en in listing.entries}
        assert listing.stale and listing.served_by == "onprem-b"
        assert entries["empty"].type == "dir" and entries["empty"].mode == 0o750, entries
        assert entries["e2"].type == "dir" and "e1" not in entries and "gone" not in entries, sorted(entries)
        assert "d2" in entries and "d1" not in entries
    finally:
        e.stop()
        proxy.stop()


def shown(fed: Federation) -> tuple[dict[str, int], int]:
    """(``gns edge list`` backlog of edge-1, ``mirror status`` lag_versions of its target)."""
    out = fed.gns("mirror", "status", "sensors-dr", "--json")
    assert out.returncode == 0, out.stderr
    return edge_list(fed)["edge-1"]["backlog"], int(json.loads(out.stdout)[0]["targets"][0]["lag_versions"])


def etcd_value(fed: Federation, key: bytes) -> bytes:
    async def get() -> bytes:
        client = await Etcd.connect(EtcdConfig.parse(fed.etcd_urls))
        try:
            value = await client.get(key)
        finally:
            await client.close()
        assert value is not None, key
        return value

    return asyncio.run(get())


def test_backlog_is_what_has_not_shipped(federation: Federation, tmp_path: Path) -> None:
    """The backlog and the lag a site reports count exactly the versions its target lacks:
    0 as soon as they shipped (not one behind until the next heartbeat), k after k writes
    with the link cut (not the whole volume because a shipping call the cut broke made the
    site forget what the target holds), and 0 again once the link is back and they shipped."""
    hb = 6.0  # long enough that "at the next heartbeat" is visibly late
    started = time.time()
    _, core, proxy, e = start_mirrored_site(federation, tmp_path, heartbeat=hb)
    zero = ({"versions": 0, "bytes": 0}, 0)
    try:
        s = stub(e)
        for i in range(3):
            wait_for(lambda: try_rpc(lambda: put(s, f"/sensors/a{i}", b"a" * 10)), 10, "write")
        wait_for(lambda: replica_files(core.endpoint, "sensors")[0] == 3, 20, "shipped")
        wait_for(lambda: shown(federation) == zero, hb / 2, "backlog and lag 0 once shipped")
        # The hub also keeps the count apart from the link, for `edge list` to show (dated)
        # once the site is Down and nobody can count what it writes while away.
        kept = json.loads(etcd_value(federation, records.backlog_key("edge-1")))
        assert kept["backlog"] == {"versions": 0, "bytes": 0} and started <= kept["reported_at"] <= time.time()

        # Cut while the site still believes in its link: the writes start shipping, and the
        # cut breaks that call.
        proxy.stall()
        for i in range(2):
            put(s, f"/sensors/b{i}", b"b" * 100)
        e.wait_link("Down", timeout=4 * hb)
        k = {"versions": 2, "bytes": 200}
        wait_for(lambda: e.status()["backlog"] == k, 5, "backlog of exactly the two writes")
        holds_for(lambda: e.status()["backlog"] == k, 2.5, "a backlog of exactly the two writes")  # recounts later

        proxy.heal()
        e.wait_link("Ready", timeout=20)
        wait_for(lambda: replica_files(core.endpoint, "sensors")[0] == 5, 20, "the two writes shipped")
        wait_for(lambda: shown(federation) == zero, hb / 2, "backlog and lag back to 0")
    finally:
        e.stop()
        proxy.stop()
