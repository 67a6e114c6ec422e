"""`gns volume promote --force` while an edge site is away (SPEC §7, §8), real processes:
the site's later writes are diverged on its return. The site keeps them under
``.gns/diverged/<epoch>/``, the report reaches etcd through its hub (`gns status` shows it
from the core), the new owner's data wins, and the site's copy follows the new owner.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import grpc

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from tests.fixtures.federation import Federation
from tests.support import wait_for
from tests.support.edge import (
    put,
    read,
    replica_files,
    start_mirrored_site,
    stub,
    try_rpc,
    wait_cluster,
)
from tests.support.stored_blobs import blob_files

POLICY = """
apiVersion: gns.io/v1alpha1
kind: MirrorPolicy
metadata: {name: sensors-dr}
spec:
  volume: sensors
  mode: continuous
  targets: [{cluster: onprem-b}]
"""


def diverged(fed: Federation) -> list[dict[str, Any]]:
    out = fed.gns("status", "--json")
    assert out.returncode == 0, out.stderr
    vols = {v["name"]: v for v in json.loads(out.stdout)["volumes"]}
    return list(vols["sensors"]["diverged"])


def test_forced_promotion_while_away_site_writes_diverge_and_follow(federation: Federation, tmp_path: Path) -> None:
    hub, core, proxy, e = start_mirrored_site(federation, tmp_path, POLICY)
    try:
        s = stub(e)
        wait_for(lambda: try_rpc(lambda: put(s, "/sensors/shared", b"v1 from the site")), 10, "first write")
        put(s, "/sensors/kept", b"mirrored before the cut")
        wait_for(lambda: replica_files(core.endpoint, "sensors")[0] == 2, 20, "live shipping")

        proxy.stall()
        wait_cluster(federation, "edge-1", "Down", timeout=15)
        e.wait_link("Down", timeout=10)
        out = federation.gns("volume", "promote", "sensors", "--to", "onprem-b", "--force")
        assert out.returncode == 0, out.stderr
        vol = json.loads(federation.gns("volume", "show", "sensors", "--json").stdout)
        assert vol["owner"] == "onprem-b" and vol["epoch"] == 2
        # The site, cut off, does not know: it keeps accepting writes at epoch 1.
        put(s, "/sensors/shared", b"v2 from the site, never mirrored")
        put(s, "/sensors/site-only", b"written at the site while away")
        # The new owner writes too: its data is what the federation keeps.
        assert federation.gns("put", "-", "/sensors/shared", input=b"v2 from the new owner").returncode == 0
        assert federation.gns("put", "-", "/sensors/core-only", input=b"core").returncode == 0
        # A file of several Read messages: the site streams it into its store as it comes.
        big = os.urandom(3 << 19).hex().encode()  # 3 MiB (the CLI helper passes text)
        assert federation.gns("put", "-", "/sensors/big", input=big).returncode == 0

        proxy.heal()
        e.wait_link("Ready", timeout=20)
        # The diverged report reaches etcd through the hub: the core sees it.
        reports = wait_for(lambda: diverged(federation) or None, 30, "diverged report in gns status")
        assert reports is not None
        assert [r["cluster"] for r in reports] == ["edge-1"] and reports[0]["epoch"] == 1, reports
        assert ".gns/diverged/1/site-only" in reports[0]["paths"], reports
        assert ".gns/diverged/1/shared" in reports[0]["paths"], reports
        # The site kept its writes aside, byte for byte.
        aside = e.data_dir / "volumes" / "sensors" / ".gns" / "diverged" / "1"
        assert (aside / "site-only").read_bytes() == b"written at the site while away"
        assert (aside / "shared").read_bytes() == b"v2 from the site, never mirrored"
        # The site follows the new owner: its copy is a replica at the owner's version.
        owner_version = replica_state(core.endpoint)
        st = wait_for(lambda: (got := e.status().get("followed", {}).get("sensors")) and got[0] == owner_version
                      and got, 30, "site follows the new owner")
        assert st == [owner_version, 2]
        site_volume = e.data_dir / "volumes" / "sensors"
        assert hashlib.sha256(big).hexdigest() in blob_files(site_volume)
        at_site = s.VolumeState(pb.VolumeStateRequest(volume="sensors"), timeout=10)
        assert at_site.role == "replica" and int(at_site.version) == owner_version and int(at_site.epoch) == 2
        # New owner's data wins, everywhere; the site's version never reached the core.
        # (calls that cross the link are retried: a 0.3 s heartbeat can flap on a loaded box)
        assert wait_for(lambda: try_rpc(lambda: read(s, "/sensors/shared")), 15, "read") == b"v2 from the new owner"
        assert federation.gns("cat", "/sensors/shared").stdout == "v2 from the new owner"
        assert federation.gns("cat", "/sensors/site-only").returncode != 0
        assert wait_for(lambda: try_rpc(lambda: read(s, "/sensors/kept")), 15, "read") == b"mirrored before the cut"
        # Later writes at the owner reach the site's copy too.
        assert federation.gns("put", "-", "/sensors/later", input=b"after the return").returncode == 0
        later = replica_state(core.endpoint)
        wait_for(lambda: (e.status().get("followed", {}).get("sensors") or [0])[0] == later, 30, "follows again")
        # Writes at the site now go to the owner (up the link), not into the replica.
        info = wait_for(lambda: try_rpc(lambda: put(s, "/sensors/from-site-again", b"to the owner")), 15, "write")
        assert info is not None and info.served_by == "onprem-b"
        # Nobody pushed the site's replica to its hub's endpoint: the hub holds no copy of it.
        assert not (hub.data_dir / "volumes" / "sensors").exists()
    finally:
        e.stop()
        proxy.stop()


def replica_state(endpoint: str) -> int:
    """The owner's committed version of ``sensors``."""
    from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc

    with grpc.insecure_channel(endpoint) as ch:
        return int(pb_grpc.FederationStub(ch).VolumeState(pb.VolumeStateRequest(volume="sensors"), timeout=10).version)


def test_a_volume_promoted_back_to_its_site_is_served_there_again(federation: Federation,
                                                                   tmp_path: Path) -> None:
    """Away, promoted to the core, followed as a replica on return, then promoted back to
    the site (``--force``): the site died at once ("journal truncated (floor 1, asked after
    0)"), and again at every restart. It owns the volume again, and serves and ships it."""
    hub, core, proxy, e = start_mirrored_site(federation, tmp_path, POLICY)
    try:
        s = stub(e)
        wait_for(lambda: try_rpc(lambda: put(s, "/sensors/a", b"first")), 10, "first write")
        wait_for(lambda: replica_files(core.endpoint, "sensors")[0] == 1, 20, "live shipping")
        proxy.stall()
        wait_cluster(federation, "edge-1", "Down", timeout=15)
        e.wait_link("Down", timeout=10)
        # SPEC §8: an away site's volume moves only with --force
        refused = federation.gns("volume", "promote", "sensors", "--to", "onprem-b")
        assert refused.returncode == 4 and "--force" in refused.stderr, refused.stderr
        assert json.loads(federation.gns("volume", "show", "sensors", "--json").stdout)["owner"] == "edge-1"
        out = federation.gns("volume", "promote", "sensors", "--to", "onprem-b", "--force")
        assert out.returncode == 0, out.stderr
        proxy.heal()
        e.wait_link("Ready", timeout=20)
        assert federation.gns("put", "-", "/sensors/b", input=b"at the core").returncode == 0
        owner_version = replica_state(core.endpoint)
        wait_for(lambda: (e.status().get("followed", {}).get("sensors") or [0])[0] == owner_version,
                 30, "site follows the new owner")
        out = federation.gns("volume", "promote", "sensors", "--to", "edge-1", "--force")
        assert out.returncode == 0, out.stderr
        vol = json.loads(federation.gns("volume", "show", "sensors", "--json").stdout)
        assert vol["owner"] == "edge-1", vol
        info = wait_for(lambda: try_rpc(lambda: put(s, "/sensors/c", b"the site's again")), 20,
                        "a write the site serves itself")
        assert info is not None and info.served_by == "edge-1"
        assert e.proc is not None and e.proc.poll() is None, "the site process died"
        assert wait_for(lambda: try_rpc(lambda: read(s, "/sensors/b")), 15, "read") == b"at the core"
        assert federation.gns("cat", "/sensors/c").stdout == "the site's again"
    finally:
        e.stop()
        proxy.stop()
