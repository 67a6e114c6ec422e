"""Edge-site helpers the edge tests share: tokens made through the CLI, edge processes with a
fast heartbeat, raw gRPC stubs to a site, a core replica's files, and one set-up of a joined
site whose volume is mirrored to a core cluster through a cuttable link."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from edge.harness import EdgeProcess
from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.local.ports import free_port
from federation.local.tcpproxy import TcpProxy
from tests.fixtures.federation import Controller, Federation
from tests.support.mirrors import apply_policy, make_volume
from tests.support.waiting import wait_for

T = TypeVar("T")

HB = 0.3
"""Heartbeat of the edge processes tests start (Down after three missed: about a second)."""

POLICY = """
apiVersion: gns.io/v1alpha1
kind: MirrorPolicy
metadata: {name: sensors-dr}
spec:
  volume: sensors
  mode: continuous
  targets: [{cluster: onprem-b}]
  failover: {automatic: true, after: 1s}
"""
"""The edge volume ``sensors`` mirrored to core cluster ``onprem-b``."""


def token(fed: Federation, site: str, *extra: str) -> str:
    out = fed.gns("edge", "token", "create", "--site", site, *extra)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) >= {"token", "site", "hub", "expires_at"} and doc["site"] == site
    return str(doc["token"])


def join(fed: Federation, e: EdgeProcess, timeout: float = 20.0) -> None:
    """Start site ``e`` with a fresh token and wait until the registry shows it Ready."""
    e.start(token(fed, e.site))
    wait_cluster(fed, e.site, "Ready", timeout=timeout)


def edge_site(fed: Federation, site: str, hubs: list[str], heartbeat: float = HB) -> EdgeProcess:
    return EdgeProcess(site=site, hubs=hubs, data_dir=fed.root / "edges" / site,
                       listen=f"127.0.0.1:{free_port()}", heartbeat=f"{heartbeat}s")


def stub(e: EdgeProcess) -> pb_grpc.FederationStub:
    return pb_grpc.FederationStub(grpc.insecure_channel(e.listen))


def put(s: pb_grpc.FederationStub, path: str, data: bytes) -> Any:
    header = pb.WriteChunk(header=pb.WriteHeader(target=pb.Target(global_path=path)))
    return s.Write(iter([header, pb.WriteChunk(data=data)]), timeout=30).info


def read(s: pb_grpc.FederationStub, path: str) -> bytes:
    return b"".join(c.data for c in s.Read(pb.ReadRequest(target=pb.Target(global_path=path)), timeout=30))


def edge_list(fed: Federation) -> dict[str, dict[str, Any]]:
    out = fed.gns("edge", "list", "--json")
    assert out.returncode == 0, out.stderr
    return {s["site"]: s for s in json.loads(out.stdout)}


def wait_cluster(fed: Federation, cid: str, state: str, timeout: float) -> None:
    wait_for(lambda: fed.state(cid) == state, timeout, f"{cid} {state}")


def try_rpc(fn: Callable[[], T]) -> T | None:
    """``fn()``, or None if the call failed (for polling a call across a link that may flap)."""
    try:
        return fn()
    except grpc.RpcError:
        return None


def mirrored(fed: Federation) -> int:
    out = fed.gns("mirror", "status", "sensors-dr", "--json")
    return int(json.loads(out.stdout)[0]["targets"][0]["version"]) if out.returncode == 0 else -1


def replica_files(endpoint: str, volume: str) -> tuple[int, dict[str, str]]:
    ch = grpc.insecure_channel(endpoint)
    rs = pb_grpc.ReplicationStub(ch)
    version = int(rs.State(pb.ReplicaStateRequest(volume=volume), timeout=10).version)
    files = {f.path: f.sha256 for f in rs.Files(pb.ReplicaFilesRequest(volume=volume), timeout=10)}
    ch.close()
    return version, files


def start_mirrored_site(fed: Federation, tmp_path: Path, policy: str = POLICY, heartbeat: float = HB
                        ) -> tuple[Controller, Controller, TcpProxy, EdgeProcess]:
    """Hub ``onprem-a``, core ``onprem-b``, and site ``edge-1`` joined through a loopback proxy
    (the test cuts the link there), owning volume ``sensors`` at ``/sensors`` mirrored by
    ``policy``. Returns (hub, core, proxy, site); the caller stops the site and proxy."""
    hub = fed.add("onprem-a")
    core = fed.add("onprem-b")
    proxy = TcpProxy(hub.endpoint).start()
    e = edge_site(fed, "edge-1", [proxy.endpoint], heartbeat)
    try:
        join(fed, e)
        make_volume(fed, "sensors", "edge-1")
        apply_policy(fed, tmp_path, policy)
    except BaseException:
        e.stop()
        proxy.stop()
        raise
    return hub, core, proxy, e
