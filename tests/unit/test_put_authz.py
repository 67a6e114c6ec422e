"""Access control of the unary ``Put`` (issue 14): the same write check as a ``Write``
header, on the target inside the request's header."""
from __future__ import annotations

import pytest

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.controller.authz import Authorizer
from federation.tls import Identity
from namespace.acl import Grant, Grants
from namespace.cache import NamespaceView
from namespace.errors import PermissionDenied


def _authz() -> Authorizer:
    grants = Grants()
    grants.set(Grant("/team", "group:ops", frozenset({"write"})))
    grants.set(Grant("/public", "user:bob", frozenset({"read"})))
    view = NamespaceView()
    view.mounts.set("/data", "sec", "")
    view.mounts.set("/team", "sec", "team")
    view.mounts.set("/public", "pub", "")
    return Authorizer(grants, lambda: view, None, registry=None)


def _put(target: pb.Target) -> pb.PutRequest:
    return pb.PutRequest(header=pb.WriteHeader(target=target), data=b"x")


def test_put_needs_write_on_its_target() -> None:
    authz = _authz()
    alice, bob = Identity("user", "alice", ("ops",)), Identity("user", "bob")
    authz.check_message(alice, "Federation", "Put", _put(pb.Target(volume="sec", relative_path="team/f")))
    authz.check_message(alice, "Federation", "Put", _put(pb.Target(global_path="/team/f")))
    with pytest.raises(PermissionDenied):  # read is not write
        authz.check_message(bob, "Federation", "Put", _put(pb.Target(global_path="/public/f")))
    with pytest.raises(PermissionDenied):  # the volume path wins over a claimed global path
        authz.check_message(alice, "Federation", "Put",
                            _put(pb.Target(volume="sec", relative_path="other", global_path="/team/x")))
    with pytest.raises(PermissionDenied):  # no target: only a cluster may send that
        authz.check_message(alice, "Federation", "Put", pb.PutRequest(data=b"x"))
    authz.check_message(Identity("cluster", "onprem-b"), "Federation", "Put", pb.PutRequest(data=b"x"))


def test_put_batch_needs_write_on_every_target() -> None:
    authz = _authz()
    alice = Identity("user", "alice", ("ops",))
    ok = [_put(pb.Target(global_path="/team/a")), _put(pb.Target(volume="sec", relative_path="team/b"))]
    authz.check_message(alice, "Federation", "PutBatch", pb.PutBatchRequest(puts=ok))
    for bad in (_put(pb.Target(global_path="/public/f")), pb.PutRequest(data=b"x"),
                _put(pb.Target(volume="sec", relative_path="other", global_path="/team/x"))):
        with pytest.raises(PermissionDenied):  # one put alice may not write refuses them all
            authz.check_message(alice, "Federation", "PutBatch", pb.PutBatchRequest(puts=[*ok, bad]))
    authz.check_message(alice, "Federation", "PutBatch", pb.PutBatchRequest())  # nothing to write
    authz.check_message(Identity("cluster", "onprem-b"), "Federation", "PutBatch",
                        pb.PutBatchRequest(puts=[pb.PutRequest(data=b"x")]))
