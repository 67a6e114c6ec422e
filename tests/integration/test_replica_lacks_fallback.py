"""A newer owner mirroring to a replica of a release before ``Replication.Lacks`` (issue 14).

The replica here is a real gRPC server on loopback built from the generated servicer with
only ``Has`` implemented, so ``Lacks`` answers UNIMPLEMENTED exactly as an older release's
generated code does. The owner's ``ClusterTarget.has_many`` must fall back to one ``Has``
per blob (what that release's owners did), ask ``Lacks`` only once, and give the same answers.
"""
from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.controller.replication import ClusterTarget
from namespace.errors import GnsError

HELD = {"a" * 64, "c" * 64}


class _OldReplica(pb_grpc.ReplicationServicer):
    def __init__(self) -> None:
        self.has_calls = 0
        self.lacks_calls = 0
        self.fail_lacks = False

    def Has(self, request: pb.ReplicaHasRequest, context: grpc.ServicerContext) -> pb.ReplicaHasReply:
        self.has_calls += 1
        return pb.ReplicaHasReply(has=request.sha256 in HELD)

    def Lacks(self, request: pb.ReplicaLacksRequest, context: grpc.ServicerContext) -> pb.ReplicaLacksReply:
        self.lacks_calls += 1
        if self.fail_lacks:
            context.abort(grpc.StatusCode.UNAVAILABLE, "replica busy")
        reply: pb.ReplicaLacksReply = super().Lacks(request, context)  # type: ignore[no-untyped-call]  # the generated base: UNIMPLEMENTED
        return reply


@pytest.fixture
def old_replica() -> Iterator[tuple[_OldReplica, str]]:
    servicer = _OldReplica()
    server = grpc.server(ThreadPoolExecutor(4))
    pb_grpc.add_ReplicationServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def _target(endpoint: str) -> ClusterTarget:
    return ClusterTarget("old-1", "vol", "onprem-a", endpoint, None, "onprem-a", epoch=1)


def test_has_many_falls_back_to_has_on_a_replica_without_lacks(old_replica: tuple[_OldReplica, str]) -> None:
    servicer, endpoint = old_replica
    target = _target(endpoint)
    try:
        files = [(f"f{i}", sha * 64) for i, sha in enumerate("abcd")]
        assert target.has_many(files) == [True, False, True, False]
        assert target.has_many(files[:2]) == [True, False]
        assert servicer.lacks_calls == 1  # asked once, then remembered
        assert servicer.has_calls == 6
    finally:
        target.close()


def test_other_lacks_errors_still_fail_the_pass(old_replica: tuple[_OldReplica, str]) -> None:
    servicer, endpoint = old_replica
    servicer.fail_lacks = True
    target = _target(endpoint)
    try:
        with pytest.raises(GnsError, match="replica busy"):
            target.has_many([("f", "a" * 64)])
        assert servicer.has_calls == 0
    finally:
        target.close()
