"""Services join a controller's gRPC server as generic handlers only (issue 14).

grpc.aio's server keeps one pending request per registered method and waits on all of them
again for every call that arrives, so the controller's ~30 registered methods cost every
call; these tests pin the registration, and fail if a service is registered as methods again.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import grpc

from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.channels import GenericHandlersOnly
from federation.controller.service import FederationService, add_to_server


class RecordingServer:
    """What a server is told: generic handlers, and registered methods by service."""

    def __init__(self) -> None:
        self.generic: list[Any] = []
        self.registered: dict[str, dict[str, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.registered[service] = dict(handlers)

    def handler(self, method: str) -> grpc.RpcMethodHandler | None:
        """The handler a call of ``method`` finds among the generic handlers, as grpc looks."""
        details = SimpleNamespace(method=method, invocation_metadata=())
        for generic in self.generic:
            found = generic.service(details)
            if found is not None:
                return found
        return None


def test_generated_code_alone_registers_every_method() -> None:
    # Why the wrapper exists: grpcio-tools' code asks for both kinds of registration.
    server = RecordingServer()
    pb_grpc.add_ReplicationServicer_to_server(pb_grpc.ReplicationServicer(), server)
    assert {"State", "Files", "Has", "Lacks"} <= set(server.registered["gns.federation.v1.Replication"])


def test_a_generated_service_joins_as_generic_handlers_only() -> None:
    server = RecordingServer()
    pb_grpc.add_ReplicationServicer_to_server(pb_grpc.ReplicationServicer(), GenericHandlersOnly(server))
    assert server.registered == {}
    for method in ("State", "Files", "Has", "Lacks"):
        assert server.handler(f"/gns.federation.v1.Replication/{method}") is not None
    assert server.handler("/gns.federation.v1.Replication/Nope") is None


def test_the_federation_service_joins_as_generic_handlers_only() -> None:
    server = RecordingServer()
    # Registration only binds the servicer's methods; no instance state is touched.
    add_to_server(FederationService.__new__(FederationService), server)
    assert server.registered == {}
    resolve = server.handler("/gns.federation.v1.Federation/Resolve")
    read = server.handler("/gns.federation.v1.Federation/Read")
    write = server.handler("/gns.federation.v1.Federation/Write")
    assert resolve is not None and resolve.unary_unary is not None
    # Read's replies are already serialized, and Write's data messages stay bytes.
    assert read is not None and read.unary_stream is not None and read.response_serializer is None
    assert write is not None and write.stream_unary is not None
