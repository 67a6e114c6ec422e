"""An edge site's certificate dialled straight at a core controller is not a controller's
(SPEC §8, §10). Real processes, TLS and access control on, as ``gns up`` runs them.

A site that joins with a token gets a *cluster* certificate (``cluster:<site>``), kept in
its data dir. Before, every controller trusted any cluster certificate for everything and
believed its ``gns-on-behalf-of``: whoever copied ``<data-dir>/tls`` could write any core
path, grant themselves ``admin`` on ``/``, or act as the administrator. Now such a call is
checked on grants (a grant to ``cluster:<site>`` takes effect), denied and audited without
one, and the site keeps doing what it does over its link (shipping its volume)."""
from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from federation.api._gen.gns.control.v1 import control_pb2 as cpb
from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.certs import init_certs
from federation.tls import channel_credentials, channel_options
from tests.fixtures.federation import Federation
from tests.support import wait_for
from tests.support.edge import edge_site, join, wait_cluster
from tests.support.mirrors import apply_policy, make_volume

POLICY = """
apiVersion: gns.io/v1alpha1
kind: MirrorPolicy
metadata: {name: site-dr}
spec:
  volume: sitevol
  mode: continuous
  targets: [{cluster: onprem-b}]
"""
BEHALF = "gns-on-behalf-of"


def _channel(endpoint: str, tls: Path, identity: str) -> grpc.Channel:
    return grpc.secure_channel(endpoint, channel_credentials(tls, identity), options=channel_options(tls))


def _denied(call: Callable[..., Any], *args: Any, **kw: Any) -> str:
    """The details of the PERMISSION_DENIED that ``call(*args, timeout=15, **kw)`` ends in."""
    with pytest.raises(grpc.RpcError) as err:
        result = call(*args, timeout=15, **kw)
        if isinstance(result, Iterator):  # a server stream fails when read
            list(result)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value
    return str(err.value.details())


def _put(path: str, data: bytes) -> pb.PutRequest:
    return pb.PutRequest(header=pb.WriteHeader(target=pb.Target(global_path=path)), data=data)


def _acl_grant(path: str, subject: str, perms: str) -> cpb.Call:
    return cpb.Call(args_json=json.dumps({"path": path, "subject": subject, "perms": perms}))


def test_a_sites_certificate_dialled_directly_is_checked_on_grants(federation: Federation,
                                                                   tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    init_certs(tls, ["onprem-a", "onprem-b"])
    federation.tls_dir = tls
    hub = federation.add("onprem-a")
    core = federation.add("onprem-b")
    make_volume(federation, "core", "onprem-a")
    assert federation.gns("put", "-", "/core/x", input=b"core data").returncode == 0
    e = edge_site(federation, "edge-t", [hub.endpoint])
    try:
        join(federation, e, timeout=30)
        make_volume(federation, "sitevol", "edge-t", at="/site")
        apply_policy(federation, tmp_path, POLICY)
        stolen = e.data_dir / "tls"  # what a copy of the site's data dir holds
        assert {p.name for p in stolen.iterdir()} >= {"ca.crt", "edge-t.crt", "edge-t.key"}

        for cid in ("onprem-a", "onprem-b"):  # its hub and another core controller
            with _channel(federation.controllers[cid].endpoint, stolen, "edge-t") as ch:
                fed, ctl = pb_grpc.FederationStub(ch), ch.unary_unary(
                    "/gns.control.v1.Control/AclGrant", request_serializer=cpb.Call.SerializeToString,
                    response_deserializer=cpb.Reply.FromString)
                _denied(fed.Put, _put(f"/core/stolen-{cid}", b"no"))
                _denied(fed.Stat, pb.StatRequest(target=pb.Target(global_path="/core/x")))
                _denied(fed.Read, pb.ReadRequest(target=pb.Target(volume="core", relative_path="x")))
                _denied(ctl, _acl_grant("/", "user:mallory", "admin"))
                # Claiming to be the administrator (or anyone) is refused outright.
                for claim in ("user:client", "edge:edge-t", "cluster:onprem-a"):
                    assert "edge site" in _denied(fed.Put, _put("/core/claimed", b"no"), metadata=((BEHALF, claim),))
                    _denied(ctl, _acl_grant("/", "user:mallory", "admin"), metadata=((BEHALF, claim),))
                _denied(pb_grpc.ReplicationStub(ch).State, pb.ReplicaStateRequest(volume="core"))
                assert fed.Health(pb.HealthRequest(), timeout=15) is not None  # open to every peer
        for path in ("/core/stolen-onprem-a", "/core/stolen-onprem-b", "/core/claimed"):
            assert federation.gns("stat", path).returncode == 3
        grants = json.loads(federation.gns("acl", "list", "--json").stdout)
        assert not [g for g in grants if g["subject"] == "user:mallory"], grants
        audit = [json.loads(ln) for ln in (hub.data_dir / "audit.log").read_text().splitlines()]
        mine = {(a["action"], a["path"]) for a in audit if a["identity"] == "cluster:edge-t"}
        assert {("Federation/Put", "/core/stolen-onprem-a"), ("acl.grant", "/"), ("on-behalf-of", "/")} <= mine, mine

        # What the site does over its link still works: an app's call as the administrator,
        # and shipping its own volume to its mirror target (Replication, relayed as edge:<site>).
        def at_site(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[str]:
            return federation.gns("--controller", e.listen, "--tls-dir", str(tls), "--identity", "client",
                                  *args, input=data)

        assert at_site("cat", "/core/x").stdout == "core data"
        wait_for(lambda: at_site("put", "-", "/site/a", data=b"site data").returncode == 0, 20,
                 "a write at the site (once it has the mount)")
        with _channel(core.endpoint, tls, "onprem-a") as ch:
            replica = pb_grpc.ReplicationStub(ch)
            wait_for(lambda: replica.State(pb.ReplicaStateRequest(volume="sitevol"), timeout=10).version >= 1, 30,
                     "the site's write shipped to onprem-b")

            # A hub relaying its site's own calls: only the site's own volumes, and every
            # header of a replication stream is checked, not only the first.
            relayed = ((BEHALF, "edge:edge-t"),)
            _denied(pb_grpc.FederationStub(ch).Put, _put("/core/relayed", b"no"), metadata=relayed)
            _denied(replica.State, pb.ReplicaStateRequest(volume="core"), metadata=relayed)
            assert replica.State(pb.ReplicaStateRequest(volume="sitevol"), timeout=10, metadata=relayed).exists
            blob = b"not the site's"
            sha = hashlib.sha256(blob).hexdigest()

            def blobs() -> Iterator[pb.ReplicaBlobChunk]:
                for volume, source in (("sitevol", "edge-t"), ("core", "onprem-a")):
                    yield pb.ReplicaBlobChunk(header=pb.ReplicaBlobHeader(
                        volume=volume, source=source, epoch=1, sha256=sha, size=len(blob)))
                    yield pb.ReplicaBlobChunk(data=blob)

            _denied(replica.PutBlob, blobs(), metadata=relayed)
            lacks = replica.Lacks(pb.ReplicaLacksRequest(volume="core", sha256=[sha]), timeout=10)
            assert list(lacks.lacking) == [0]  # nothing stored in core's replica

        # A grant to the site takes effect, for the site dialling directly.
        assert federation.gns("acl", "grant", "/core/drop", "cluster:edge-t", "write").returncode == 0
        with _channel(hub.endpoint, stolen, "edge-t") as ch:
            fed = pb_grpc.FederationStub(ch)

            def granted() -> bool:
                try:
                    fed.Put(_put("/core/drop/by-site", b"granted"), timeout=15)
                    return True
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.PERMISSION_DENIED, exc
                    return False

            wait_for(granted, 15, "the grant to cluster:edge-t to take effect")
            _denied(fed.Put, _put("/core/beside", b"no"))  # only where granted
            _denied(fed.Stat, pb.StatRequest(target=pb.Target(global_path="/core/drop/by-site")))  # write only
        assert federation.gns("cat", "/core/drop/by-site").stdout == "granted"
    finally:
        print(e.tail())  # shown by pytest only if the test failed
        e.stop()


def test_a_removed_sites_certificate_is_no_controllers(federation: Federation, tmp_path: Path) -> None:
    """A site whose cluster record `gns cluster remove` deleted keeps a valid certificate (for
    up to 30 days) in its data dir. With no record saying it was a site, it was taken for a
    controller: anything, as anyone. Its certificate says it is a site's now."""
    tls = tmp_path / "tls"
    init_certs(tls, ["onprem-a", "onprem-b"])
    federation.tls_dir = tls
    hub = federation.add("onprem-a")
    core = federation.add("onprem-b")
    make_volume(federation, "core", "onprem-b")
    e = edge_site(federation, "edge-r", [hub.endpoint])
    try:
        join(federation, e, timeout=30)
    finally:
        print(e.tail())  # shown by pytest only if the test failed
        e.stop()
    wait_cluster(federation, "edge-r", "Down", timeout=30)
    removed = federation.gns("cluster", "remove", "edge-r")
    assert removed.returncode == 0, removed.stderr
    assert "edge-r" not in federation.gns("cluster", "list").stdout
    stolen = e.data_dir / "tls"
    for controller in (hub, core):
        with _channel(controller.endpoint, stolen, "edge-r") as ch:
            fed = pb_grpc.FederationStub(ch)
            _denied(fed.Put, _put("/core/after-remove", b"no"))
            assert "edge site" in _denied(fed.Put, _put("/core/after-remove", b"no"),
                                          metadata=((BEHALF, "user:client"),))
            _denied(ch.unary_unary("/gns.control.v1.Control/AclGrant",
                                   request_serializer=cpb.Call.SerializeToString,
                                   response_deserializer=cpb.Reply.FromString),
                    _acl_grant("/", "user:mallory", "admin"))
            _denied(pb_grpc.ReplicationStub(ch).State, pb.ReplicaStateRequest(volume="core"))
    assert federation.gns("stat", "/core/after-remove").returncode == 3
    grants = json.loads(federation.gns("acl", "list", "--json").stdout)
    assert not [g for g in grants if g["subject"] == "user:mallory"], grants
