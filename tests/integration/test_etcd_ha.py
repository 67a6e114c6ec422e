"""A three-member etcd: losing one member (the leader too) keeps the CLI and controllers going."""
from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

from federation.local.etcd_server import EtcdCluster, EtcdMember
from tests.fixtures.federation import Federation
from tests.support import holds_for


def leader_of(cluster: EtcdCluster) -> EtcdMember:
    for m in cluster.members:
        if not m.alive():
            continue
        req = urllib.request.Request(m.client_url + "/v3/maintenance/status", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=2) as r:
            st = json.loads(r.read())
        if st["leader"] == st["header"]["member_id"]:
            return m
    raise AssertionError("no leader")


def test_cli_and_controllers_survive_losing_a_member(etcd3: EtcdCluster, tmp_path: Path) -> None:
    fed = Federation(etcd3, tmp_path, lease_ttl=5)
    try:
        fed.add("onprem-a")
        assert fed.gns("volume", "create", "ha", "--cluster", "onprem-a").returncode == 0
        for victim_kind in ("leader", "follower"):
            leader = leader_of(etcd3)
            victim = leader if victim_kind == "leader" else next(
                m for m in etcd3.members if m is not leader and m.alive())
            victim.stop(signal.SIGKILL)
            t0 = time.monotonic()
            out = fed.gns("volume", "list", "--json", timeout=60)
            assert out.returncode == 0, out.stderr
            assert "ha" in [v["name"] for v in json.loads(out.stdout)]
            name = f"after-{victim_kind}"
            out = fed.gns("volume", "create", name, "--cluster", "onprem-a", timeout=60)
            assert out.returncode == 0, out.stderr
            assert time.monotonic() - t0 < 20
            # the controller kept its lease through the election
            holds_for(lambda: fed.state("onprem-a") == "Ready", fed.lease_ttl, "onprem-a Ready",
                      every=0.5)
            # bring the member back on its data dir before the next round
            victim.start(etcd3.initial_cluster)
            etcd3.wait_ready(30)
        # a put works end to end too
        fed.gns("mount", "add", "/ha", "ha")
        out = fed.gns("put", "-", "/ha/x", input=b"still here")
        assert out.returncode == 0, out.stderr
        assert fed.gns("cat", "/ha/x").stdout == "still here"
    finally:
        fed.stop_all()
