"""federation.controller.authz: identities on the wire, targets to paths, and decisions."""
from __future__ import annotations

import pytest

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.controller.authz import Authorizer, decode_identity, encode_identity, volume_paths
from federation.tls import Identity
from namespace.acl import Grant, Grants
from namespace.cache import NamespaceView
from namespace.errors import InvalidInput, PermissionDenied


def test_forwarded_identity_round_trips() -> None:
    who = Identity("user", "alice", ("ops", "dev"))
    assert decode_identity(encode_identity(who)) == who
    assert decode_identity("edge:edge-1") == Identity("cluster", "edge-1", edge_site=True)
    site = Identity("cluster", "edge-1", edge_site=True)
    assert decode_identity(encode_identity(site)) == site
    for bad in ("*", "group:ops", "user:alice,user:bob", "nobody", "user:alice,group:bad/g",
                "site:", "site:a/b", "edge:edge-1,group:ops"):
        with pytest.raises(InvalidInput):
            decode_identity(bad)


def _view() -> NamespaceView:
    view = NamespaceView()
    view.mounts.set("/data", "sec", "")
    view.mounts.set("/team", "sec", "team")
    return view


def test_volume_paths_follow_the_mount_table() -> None:
    view = _view()
    assert sorted(volume_paths(view, "sec", "team/a")) == ["/data/team/a", "/team/a"]
    assert volume_paths(view, "sec", "x") == ["/data/x"]
    assert volume_paths(view, "other", "x") == []


def test_requests_are_checked_on_the_volume_path_not_the_claimed_global_path() -> None:
    grants = Grants()
    grants.set(Grant("/public", "user:mallory", frozenset({"read", "write"})))
    grants.set(Grant("/team", "group:ops", frozenset({"write"})))
    view = _view()
    authz = Authorizer(grants, lambda: view, None, registry=None)
    mallory = Identity("user", "mallory")
    forged = pb.StatRequest(target=pb.Target(volume="sec", relative_path="x", global_path="/public/x"))
    with pytest.raises(PermissionDenied):
        authz.check_message(mallory, "Federation", "Stat", forged)
    authz.check_message(mallory, "Federation", "Stat", pb.StatRequest(target=pb.Target(global_path="/public/x")))
    alice = Identity("user", "alice", ("ops",))
    header = pb.WriteChunk(header=pb.WriteHeader(target=pb.Target(volume="sec", relative_path="team/f")))
    authz.check_message(alice, "Federation", "Write", header)  # via /team (group ops)
    with pytest.raises(PermissionDenied):
        authz.check_message(alice, "Federation", "Stat", pb.StatRequest(target=pb.Target(global_path="/team/f")))
    with pytest.raises(PermissionDenied):  # internal services are for clusters
        authz.check_message(alice, "Replication", "State", pb.ReplicaStateRequest())
    authz.check_message(Identity("cluster", "onprem-b"), "Replication", "State", pb.ReplicaStateRequest())
