"""An edge site's certificate is not a controller's (SPEC §8, §10).

A site that joins with a token gets a *cluster* certificate (``cluster:<site>``). Before,
:class:`Authorizer` let every cluster identity do anything and believed its
``gns-on-behalf-of``: whoever held the files under a site's data dir could dial any core
controller and write, read, grant themselves ``admin`` or claim to be the administrator.
Now a cluster the registry records as an edge site is checked on grants like any identity;
its hub's relay (``edge:<site>``) gets only what the site needs for its own volumes."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from edge.sitecert import Request
from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.certs import init_certs, sign_cluster_csr
from federation.controller import authz as authz_mod
from federation.controller.authz import AuditLog, Authorizer, AuthzInterceptor, forward_metadata
from federation.tls import Identity
from namespace.acl import Grant, Grants
from namespace.cache import NamespaceView
from namespace.errors import PermissionDenied
from namespace.models import ClusterSpec, Volume

SITE, CORE = Identity("cluster", "edge-1"), Identity("cluster", "onprem-b")
"""A site whose certificate predates the edge-site mark: the registry says what it is."""
MARKED = Identity("cluster", "edge-1", edge_site=True)
"""What a site's certificate, or a controller passing the site on, says it is."""


def _view() -> NamespaceView:
    view = NamespaceView()
    view.clusters["onprem-a"] = ClusterSpec(id="onprem-a", endpoint="127.0.0.1:1")
    view.clusters["onprem-b"] = ClusterSpec(id="onprem-b", endpoint="127.0.0.1:2")
    # As the hub registers a site (edge_hub._register): provider edge, the hub's label.
    view.clusters["edge-1"] = ClusterSpec(id="edge-1", provider="edge", labels={"gns.io/hub": "onprem-a"},
                                          endpoint="127.0.0.1:1")
    # A controller run with `gns controller --provider edge` (SPEC §4): no hub wrote it.
    view.clusters["edge-x"] = ClusterSpec(id="edge-x", provider="edge", endpoint="127.0.0.1:3")
    view.volumes["core"] = Volume(name="core", owner="onprem-a")
    view.volumes["sensors"] = Volume(name="sensors", owner="edge-1")
    view.volumes["moved"] = Volume(name="moved", owner="onprem-b", former_owners=["edge-1"])
    view.mounts.set("/core", "core", "")
    view.mounts.set("/sensors", "sensors", "")
    view.mounts.set("/moved", "moved", "")
    return view


def _authz(tmp_path: Path, *grants: Grant) -> tuple[Authorizer, Path]:
    held = Grants()
    for g in grants:
        held.set(g)
    view = _view()
    audit = tmp_path / "audit.log"
    return Authorizer(held, lambda: view, AuditLog(audit), registry=None), audit


def _audit(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def _put(path: str = "", volume: str = "", rel: str = "") -> pb.PutRequest:
    return pb.PutRequest(header=pb.WriteHeader(target=pb.Target(global_path=path, volume=volume,
                                                                relative_path=rel)), data=b"x")


def _stat(path: str = "", volume: str = "", rel: str = "") -> pb.StatRequest:
    return pb.StatRequest(target=pb.Target(global_path=path, volume=volume, relative_path=rel))


def _blob(volume: str, source: str) -> pb.ReplicaBlobChunk:
    return pb.ReplicaBlobChunk(header=pb.ReplicaBlobHeader(volume=volume, source=source, epoch=1, sha256="0" * 64))


def test_an_edge_site_is_not_a_trusted_controller(tmp_path: Path) -> None:
    authz, audit = _authz(tmp_path)
    with pytest.raises(PermissionDenied):
        authz.check_message(SITE, "Federation", "Put", _put("/core/x"))
    with pytest.raises(PermissionDenied):
        authz.check_message(SITE, "Federation", "Stat", _stat("/core/x"))
    with pytest.raises(PermissionDenied):  # no target: only a controller may send that
        authz.check_message(SITE, "Federation", "Put", pb.PutRequest(data=b"x"))
    with pytest.raises(PermissionDenied):  # internal services are for controllers
        authz.check_message(SITE, "Replication", "State", pb.ReplicaStateRequest(volume="core"))
    with pytest.raises(PermissionDenied):
        authz.check_message(SITE, "Failover", "Promote", pb.PromoteRequest(volume="core", to="edge-1"))
    assert not authz.allowed(SITE, "admin", ["/"])  # what Control's AclGrant asks
    # A core cluster acting for itself is still a controller.
    authz.check_message(CORE, "Federation", "Put", _put("/core/x"))
    authz.check_message(CORE, "Replication", "State", pb.ReplicaStateRequest(volume="core"))
    assert authz.allowed(CORE, "admin", ["/"])
    # Every denial is audited under the site's identity.
    denied = {(a["identity"], a["action"], a["path"]) for a in _audit(audit)}
    assert {("cluster:edge-1", "Federation/Put", "/core/x"), ("cluster:edge-1", "Federation/Stat", "/core/x"),
            ("cluster:edge-1", "Replication/State", "/")} <= denied
    assert authz.trusted(CORE) and not authz.trusted(SITE)
    assert not authz.trusted(Identity("user", "client"))
    assert authz.trusted(Identity("cluster", "not-registered"))  # what the registry does not say
    assert authz.trusted(Identity("cluster", "edge-x"))  # a controller with --provider edge


def test_a_grant_to_the_site_takes_effect(tmp_path: Path) -> None:
    authz, _ = _authz(tmp_path, Grant("/core/in", "cluster:edge-1", frozenset({"read", "write"})))
    authz.check_message(SITE, "Federation", "Put", _put("/core/in/a"))
    authz.check_message(SITE, "Federation", "Stat", _stat(volume="core", rel="in/a"))
    with pytest.raises(PermissionDenied):
        authz.check_message(SITE, "Federation", "Put", _put("/core/out"))
    assert authz.allowed(SITE, "write", ["/core/in/b"]) and not authz.allowed(SITE, "admin", ["/core/in"])


def test_a_sites_own_calls_relayed_by_its_hub_reach_only_its_own_volumes(tmp_path: Path) -> None:
    authz, _ = _authz(tmp_path)

    def relayed(service: str, method: str, request: Any) -> None:
        authz.check_message(SITE, service, method, request, relayed=True)

    # Shipping its own volume to a mirror target: every Replication call, as itself.
    relayed("Replication", "State", pb.ReplicaStateRequest(volume="sensors"))
    relayed("Replication", "Lacks", pb.ReplicaLacksRequest(volume="sensors"))
    relayed("Replication", "PutBlob", _blob("sensors", "edge-1"))
    relayed("Replication", "Commit", pb.ReplicaCommitChunk(header=pb.ReplicaCommitHeader(
        volume="sensors", source="edge-1", epoch=1, version=3)))
    for volume, source in (("core", "onprem-a"), ("core", "edge-1"), ("sensors", "onprem-a"), ("nope", "edge-1")):
        with pytest.raises(PermissionDenied):
            relayed("Replication", "PutBlob", _blob(volume, source))
    with pytest.raises(PermissionDenied):
        relayed("Replication", "State", pb.ReplicaStateRequest(volume="core"))
    with pytest.raises(PermissionDenied):  # a data message alone names no volume
        relayed("Replication", "PutBlob", pb.ReplicaBlobChunk(data=b"x"))
    # Following the new owner of a volume it used to own (edge.follow): reads by volume.
    relayed("Federation", "List", pb.ListRequest(target=pb.Target(volume="moved", relative_path="")))
    relayed("Federation", "Stat", _stat(volume="moved", rel="a"))
    relayed("Federation", "Read", pb.ReadRequest(target=pb.Target(volume="moved", relative_path="a")))
    relayed("Federation", "VolumeState", pb.VolumeStateRequest(volume="core"))  # open to all
    for denied in (_stat(volume="core", rel="a"), _stat("/core/a"), _stat("/moved/a")):
        with pytest.raises(PermissionDenied):
            relayed("Federation", "Stat", denied)
    with pytest.raises(PermissionDenied):  # reading is not writing
        relayed("Federation", "Put", _put(volume="moved", rel="a"))
    with pytest.raises(PermissionDenied):
        relayed("Mirroring", "Sync", pb.MirrorSyncRequest(policy="p"))
    # Dialling directly, the site gets none of that: it never needs to.
    with pytest.raises(PermissionDenied):
        authz.check_message(SITE, "Replication", "State", pb.ReplicaStateRequest(volume="sensors"))
    with pytest.raises(PermissionDenied):
        authz.check_message(SITE, "Federation", "Stat", _stat(volume="moved", rel="a"))


# -- the interceptor: who a call acts as -------------------------------------------------------
def _ctx(pem: bytes, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
    return _Context(pem, metadata)


class _Context:
    """What AuthzInterceptor reads of a grpc.aio.ServicerContext."""

    def __init__(self, pem: bytes, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.pem, self.metadata = pem, metadata
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self.pem]}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    async def abort(self, code: grpc.StatusCode, details: str, trailing: Any = None) -> None:
        self.aborted = (code, details)
        raise RuntimeError(f"aborted: {details}")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Certificates as ``gns certs init`` makes them; a site's is the same kind (cluster)."""
    d = tmp_path_factory.mktemp("tls")
    init_certs(d, ["onprem-a", "edge-1"])
    return {n: (d / f"{n}.crt").read_bytes() for n in ("onprem-a", "edge-1", "client")}


def test_a_site_dialling_directly_may_not_act_for_anyone(tmp_path: Path, certs: dict[str, bytes]) -> None:
    authz, audit = _authz(tmp_path)
    icpt = AuthzInterceptor(authz)
    for claim in ("user:client", "user:alice,group:ops", "edge:edge-1", "cluster:onprem-a"):
        with pytest.raises(PermissionDenied, match="edge site"):
            icpt._who(_ctx(certs["edge-1"], (("gns-on-behalf-of", claim),)))
    assert icpt._who(_ctx(certs["edge-1"])) == (SITE, False)  # itself: checked on grants
    assert {(a["identity"], a["action"], a["result"]) for a in _audit(audit)} >= {
        ("cluster:edge-1", "on-behalf-of", "denied: claimed user:client")}
    # Its hub (a controller) relays its own calls as edge:<site>, and users' as the user.
    assert icpt._who(_ctx(certs["onprem-a"], (("gns-on-behalf-of", "edge:edge-1"),))) == (MARKED, True)
    assert icpt._who(_ctx(certs["onprem-a"], (("gns-on-behalf-of", "user:bob"),))) == (
        Identity("user", "bob"), False)


def test_a_site_is_forwarded_as_itself_not_as_the_forwarder(tmp_path: Path) -> None:
    """The controller that serves a site's call decides on the site: a forwarder passes it
    on (before, a cluster caller went on as nothing, i.e. as the forwarding controller)."""
    authz, _ = _authz(tmp_path)
    icpt = AuthzInterceptor(authz)

    def forwarded(who: Identity, relayed: bool) -> tuple[tuple[str, str], ...]:
        async def run() -> tuple[tuple[str, str], ...]:  # a task of its own: its own context
            icpt._enter(who, relayed)
            return forward_metadata()
        return asyncio.run(run())

    assert forwarded(SITE, True) == (("gns-on-behalf-of", "edge:edge-1"),)
    assert forwarded(SITE, False) == (("gns-on-behalf-of", "site:edge-1"),)
    assert forwarded(MARKED, False) == (("gns-on-behalf-of", "site:edge-1"),)
    assert forwarded(CORE, False) == ()
    assert forwarded(Identity("user", "bob", ("ops",)), False) == (("gns-on-behalf-of", "user:bob,group:ops"),)


def test_every_header_of_a_sites_replication_stream_is_checked(tmp_path: Path, certs: dict[str, bytes]) -> None:
    """A PutBlob or Commit stream carries one header per blob or version: a site's later
    header naming a volume it does not own is refused before the handler sees it."""
    authz, _ = _authz(tmp_path)
    icpt = AuthzInterceptor(authz)
    seen: list[str] = []

    async def put_blob(requests: AsyncIterator[pb.ReplicaBlobChunk], context: Any) -> pb.ReplicaBlobReply:
        async for chunk in requests:
            seen.append(chunk.header.volume if chunk.HasField("header") else "data")
        return pb.ReplicaBlobReply()

    handler = icpt._wrap(grpc.stream_unary_rpc_method_handler(put_blob), "Replication", "PutBlob")

    async def call(claim: str, *chunks: pb.ReplicaBlobChunk) -> None:
        async def requests() -> AsyncIterator[pb.ReplicaBlobChunk]:
            for c in chunks:
                yield c
        ctx = _Context(certs["onprem-a"], (("gns-on-behalf-of", claim),))
        await handler.stream_unary(requests(), ctx)

    own, data, other = _blob("sensors", "edge-1"), pb.ReplicaBlobChunk(data=b"x"), _blob("core", "onprem-a")
    asyncio.run(call("edge:edge-1", own, data, own, data))
    assert seen == ["sensors", "data", "sensors", "data"]
    seen.clear()
    with pytest.raises(PermissionDenied):
        asyncio.run(call("edge:edge-1", own, data, other, data))
    assert seen == ["sensors", "data"]  # the foreign header never reached the handler
    seen.clear()
    # A controller's stream is relayed untouched, as before.
    ctx = _Context(certs["onprem-a"])

    async def as_controller() -> None:
        async def requests() -> AsyncIterator[pb.ReplicaBlobChunk]:
            for c in (own, data, other, data):
                yield c
        await handler.stream_unary(requests(), ctx)

    asyncio.run(as_controller())
    assert seen == ["sensors", "data", "core", "data"]
    assert authz_mod._FORWARD.get() is None  # nothing leaked into this test's own context


def test_a_site_the_registry_does_not_hold_is_no_controller(tmp_path: Path, certs: dict[str, bytes]) -> None:
    """A site that joined but never linked, or whose cluster record `gns cluster remove`
    deleted, holds a valid certificate for weeks: it was taken for a controller (anything,
    as anyone) because the registry did not say it was a site. Its certificate says so now,
    and so does every controller that passes it on."""
    hub = tmp_path / "hub"
    init_certs(hub, ["onprem-a"])
    pem, _, _ = sign_cluster_csr(hub, "edge-9", Request("edge-9").csr_pem, ttl_seconds=3600)
    authz, audit = _authz(tmp_path)
    icpt = AuthzInterceptor(authz)
    who, relayed = icpt._who(_ctx(pem))
    assert who == Identity("cluster", "edge-9", edge_site=True) and not relayed
    assert "edge-9" not in _view().clusters and not authz.trusted(who)
    with pytest.raises(PermissionDenied):
        authz.check_message(who, "Federation", "Put", _put("/core/x"))
    with pytest.raises(PermissionDenied):
        authz.check_message(who, "Replication", "State", pb.ReplicaStateRequest(volume="core"))
    assert not authz.allowed(who, "admin", ["/"])
    with pytest.raises(PermissionDenied, match="edge site"):
        icpt._who(_ctx(pem, (("gns-on-behalf-of", "user:client"),)))
    # Passed on by the controller it dialled, it is still a site at the next one.
    passed_on = icpt._who(_ctx(certs["onprem-a"], (("gns-on-behalf-of", "site:edge-9"),)))
    assert passed_on == (Identity("cluster", "edge-9", edge_site=True), False)
    with pytest.raises(PermissionDenied):
        authz.check_message(passed_on[0], "Federation", "Put", _put("/core/x"))
    # A site has no groups to claim, and a controller's name stays a controller's.
    with pytest.raises(PermissionDenied, match="no groups"):
        icpt._who(_ctx(certs["onprem-a"], (("gns-on-behalf-of", "site:edge-9,group:ops"),)))
    assert authz.trusted(Identity("cluster", "not-registered"))
    assert ("cluster:edge-9", "Federation/Put", "/core/x") in {
        (a["identity"], a["action"], a["path"]) for a in _audit(audit)}
