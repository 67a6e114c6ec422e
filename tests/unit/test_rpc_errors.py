"""One error path, end to end: raised in a servicer on a real grpc.aio server (loopback,
behind the controller's ``ErrorInterceptor``), rebuilt by the client as the same type with
the same ``retryable``, kept across a forwarding hop, and turned into SPEC §4's exit code by
the CLI's ``run()``."""
from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import cast

import click
import grpc
import pytest

from cloud_adapters import errors as store
from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.api.errors import KINDS, from_rpc_error
from federation.cli.main import cli, run
from federation.controller.metrics import ControllerMetrics
from federation.controller.rpc_errors import ErrorInterceptor, put_failure
from federation.loop_thread import LoopThread
from namespace import errors as ns
from tests.support.full_disk import chained_enospc, sqlite_full

# SPEC §4: 1 other · 2 invalid input · 3 not found · 4 conflict · 5 unavailable.
CASES: dict[str, tuple[type[Exception], int]] = {
    "gns": (ns.GnsError, 1),
    "internal": (ns.InternalError, 1),
    "no-space": (ns.OutOfSpace, 1),
    "invalid-input": (ns.InvalidInput, 2),
    "not-found": (ns.NotFound, 3),
    "file-not-found": (ns.FileNotFound, 3),
    "conflict": (ns.Conflict, 4),
    "stale-epoch": (ns.StaleEpoch, 4),
    "not-owner": (ns.NotOwner, 4),
    "permission-denied": (ns.PermissionDenied, 4),
    "unavailable": (ns.Unavailable, 5),
    "epoch-not-seen": (ns.EpochNotSeen, 5),
    "store": (store.ObjectStoreError, 1),
    "store-invalid-uri": (store.InvalidURI, 2),
    "store-missing-sdk": (store.MissingDependency, 1),
    "store-not-found": (store.ObjectNotFound, 3),
    "store-precondition": (store.PreconditionFailed, 4),
    "store-denied": (store.PermissionDenied, 1),
    "store-no-credentials": (store.MissingCredentials, 2),
    "store-integrity": (store.IntegrityError, 1),
    "store-unreachable": (store.TransientError, 5),
}


def retryable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retryable", False))


# A full disk, however a handler meets it: not a bug (OutOfSpace, no traceback logged).
DISK_FULL: dict[str, Callable[[], Exception]] = {
    "enospc": lambda: OSError(errno.ENOSPC, "No space left on device"),
    "edquot": lambda: OSError(errno.EDQUOT, "Disk quota exceeded"),
    "sqlite-full": sqlite_full,
    "chained-enospc": chained_enospc,
}


def make(kind: str) -> Exception:
    if kind == "bug":
        return KeyError("a bug")
    if kind == "io-error":
        return OSError(errno.EIO, "Input/output error")
    if kind in DISK_FULL:
        return DISK_FULL[kind]()
    cls = CASES[kind][0]
    if issubclass(cls, store.ObjectStoreError):
        return cls("it failed", uri="s3://bucket/key")
    return cls(f"{kind} happened")


class Raising(pb_grpc.FederationServicer):
    """Raises what the request names: unary (Stat), server stream (Read), client stream
    (Write)."""

    async def Stat(self, request: pb.StatRequest, context: grpc.aio.ServicerContext) -> pb.FileInfo:
        raise make(request.target.global_path)

    async def Read(self, request: pb.ReadRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ReadChunk]:
        yield pb.ReadChunk(data=b"first")
        raise make(request.target.global_path)

    async def Write(self, request_iterator: AsyncIterator[pb.WriteChunk], context: grpc.aio.ServicerContext) -> pb.WriteReply:
        async for msg in request_iterator:
            raise make(msg.header.target.global_path)
        return pb.WriteReply()


class Forwarding(pb_grpc.FederationServicer):
    """A controller that forwards Stat to another and re-raises what came back."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    async def Stat(self, request: pb.StatRequest, context: grpc.aio.ServicerContext) -> pb.FileInfo:
        async with grpc.aio.insecure_channel(self.endpoint) as channel:
            try:
                reply: pb.FileInfo = await pb_grpc.FederationStub(channel).Stat(request, timeout=10)
                return reply
            except grpc.RpcError as exc:
                raise from_rpc_error(exc, "owner") from None


class Servers:
    def __init__(self) -> None:
        self.loop = LoopThread("test-rpc-errors")
        self.metrics = ControllerMetrics("test")
        self.servers: list[grpc.aio.Server] = []

    def start(self, servicer: pb_grpc.FederationServicer) -> str:
        async def go() -> int:
            server = grpc.aio.server(interceptors=[ErrorInterceptor(self.metrics)])
            pb_grpc.add_FederationServicer_to_server(servicer, server)
            port: int = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            self.servers.append(server)
            return port

        return f"127.0.0.1:{self.loop.run(go(), timeout=10)}"

    def stop(self) -> None:
        async def go() -> None:
            await asyncio.gather(*(s.stop(grace=None) for s in self.servers))

        self.loop.run(go(), timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def endpoints() -> Iterator[tuple[str, str, ControllerMetrics]]:
    servers = Servers()
    try:
        owner = servers.start(Raising())
        forwarder = servers.start(Forwarding(owner))
        yield owner, forwarder, servers.metrics
    finally:
        servers.stop()


@pytest.fixture()
def stub(endpoints: tuple[str, str, ControllerMetrics]) -> Iterator[pb_grpc.FederationStub]:
    with grpc.insecure_channel(endpoints[0]) as channel:
        yield pb_grpc.FederationStub(channel)


def stat_error(endpoint: str, kind: str) -> Exception:
    with grpc.insecure_channel(endpoint) as channel:
        try:
            pb_grpc.FederationStub(channel).Stat(pb.StatRequest(target=pb.Target(global_path=kind)), timeout=10)
        except grpc.RpcError as exc:
            return from_rpc_error(exc, "test")
    raise AssertionError("the call succeeded")


def test_every_kind_of_the_table_is_tested() -> None:
    assert {k.name for k in KINDS} == set(CASES)
    for k in KINDS:  # the table and the exception classes agree on exit codes
        assert k.exit_code == getattr(k.type, "exit_code", 1) == CASES[k.name][1], k.name


@pytest.mark.parametrize("kind", sorted(CASES))
def test_unary_error_arrives_as_the_same_type(endpoints: tuple[str, str, ControllerMetrics], kind: str) -> None:
    sent = make(kind)
    got = stat_error(endpoints[0], kind)
    assert type(got) is type(sent)
    assert retryable(got) == retryable(sent)
    assert str(sent) in str(got)
    if isinstance(sent, store.ObjectStoreError):
        assert isinstance(got, store.ObjectStoreError) and got.uri == sent.uri


@pytest.mark.parametrize("kind", sorted(CASES))
def test_kind_survives_a_forwarding_hop(endpoints: tuple[str, str, ControllerMetrics], kind: str) -> None:
    sent = make(kind)
    got = stat_error(endpoints[1], kind)
    assert type(got) is type(sent)
    assert retryable(got) == retryable(sent)


def test_an_unexpected_exception_is_internal_and_logged_once(
    endpoints: tuple[str, str, ControllerMetrics], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("ERROR", logger="federation.controller.rpc_errors"):
        got = stat_error(endpoints[0], "bug")
    assert type(got) is ns.InternalError and not got.retryable
    assert "KeyError" in str(got) and "a bug" in str(got)
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert logged[0].exc_info[0] is KeyError


@pytest.mark.parametrize("kind", sorted(DISK_FULL))
def test_a_full_disk_is_out_of_space_not_a_bug(
    endpoints: tuple[str, str, ControllerMetrics], caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    with caplog.at_level("WARNING", logger="federation.controller.rpc_errors"):
        got = stat_error(endpoints[1], kind)  # through a forwarding hop, too
    assert type(got) is ns.OutOfSpace and not got.retryable
    assert "this cluster has no space left on its disk" in str(got), got
    assert "nothing was committed" in str(got)
    assert [r for r in caplog.records if r.exc_info] == []  # a warning, no traceback
    assert any("out of disk space" in r.getMessage() for r in caplog.records)


def test_other_os_errors_stay_internal(endpoints: tuple[str, str, ControllerMetrics]) -> None:
    got = stat_error(endpoints[0], "io-error")
    assert type(got) is ns.InternalError and "Input/output error" in str(got)


def test_a_put_of_a_batch_that_met_a_full_disk_says_so() -> None:
    outcome = put_failure(OSError(errno.ENOSPC, "No space left on device"), "Federation/PutBatch", "cluster c1")
    assert outcome.error_kind == "no-space" and not outcome.retryable
    assert outcome.error.startswith("cluster c1 has no space left on its disk"), outcome.error


@pytest.mark.parametrize("kind", ["stale-epoch", "store-invalid-uri", "unavailable", "bug"])
def test_server_stream_error_after_a_reply(stub: pb_grpc.FederationStub, kind: str) -> None:
    call = stub.Read(pb.ReadRequest(target=pb.Target(global_path=kind)), timeout=10)
    try:
        assert next(call).data == b"first"
        with pytest.raises(grpc.RpcError) as ei:
            next(call)
    finally:
        call.cancel()
    got = from_rpc_error(ei.value)
    expected = ns.InternalError if kind == "bug" else type(make(kind))
    assert type(got) is expected


@pytest.mark.parametrize("kind", ["not-owner", "store-no-credentials"])
def test_client_stream_error(stub: pb_grpc.FederationStub, kind: str) -> None:
    def chunks() -> Iterator[pb.WriteChunk]:
        yield pb.WriteChunk(header=pb.WriteHeader(target=pb.Target(global_path=kind)))

    with pytest.raises(grpc.RpcError) as ei:
        stub.Write(chunks(), timeout=10)
    got = from_rpc_error(ei.value)
    assert type(got) is type(make(kind)) and retryable(got) == retryable(make(kind))


def test_calls_are_counted_by_method_and_code(endpoints: tuple[str, str, ControllerMetrics]) -> None:
    def count(code: str) -> float:
        value = endpoints[2].registry.get_sample_value(
            "gns_requests_total", {"method": "Federation/Stat", "code": code})
        return value or 0.0

    before = count("FAILED_PRECONDITION")
    stat_error(endpoints[0], "stale-epoch")
    # The client may see the status a moment before the server's handler has unwound.
    deadline = time.monotonic() + 5
    while count("FAILED_PRECONDITION") < before + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert count("FAILED_PRECONDITION") == before + 1


@pytest.fixture()
def cli_stat() -> Iterator[None]:
    """A throwaway ``gns`` command that makes one call, so ``run()`` sees the real error."""

    @cli.command("test-stat", hidden=True)
    @click.argument("endpoint")
    @click.argument("kind")
    def test_stat(endpoint: str, kind: str) -> None:
        raise stat_error(endpoint, kind)

    try:
        yield
    finally:
        cli.commands.pop("test-stat", None)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_cli_exit_code(endpoints: tuple[str, str, ControllerMetrics], cli_stat: None, kind: str,
                       capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["test-stat", endpoints[1], kind]) == CASES[kind][1]
    err = capsys.readouterr().err
    assert err.startswith("gns: error: ") and err.count("\n") == 1


class _TransportError:
    """A status the TLS layer made, not a gns server: what a hung peer's channel gives."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[()]:
        return ()


def test_a_hung_peer_is_not_called_a_certificate_problem() -> None:
    """A SIGSTOPped controller accepts TCP and never answers the handshake: it read
    'refused the connection: TLS handshake failed', sending users to their certificates."""
    from federation.api.errors import from_rpc_error
    from namespace.errors import Unavailable

    hung = _TransportError(grpc.StatusCode.UNAVAILABLE,
                           "failed to connect to all addresses; last error: UNAVAILABLE: "
                           "ipv4:127.0.0.1:1: Handshake read failed (Endpoint closing)")
    err = from_rpc_error(cast(grpc.RpcError, hung), "cluster onprem-b")
    assert isinstance(err, Unavailable)
    assert str(err).startswith("cluster onprem-b did not complete the TLS handshake: it is not answering")
    untrusted = _TransportError(grpc.StatusCode.UNAVAILABLE,
                                "Ssl handshake failed: CERTIFICATE_VERIFY_FAILED: certificate verify failed")
    assert "refused the connection: certificate not trusted" in str(
        from_rpc_error(cast(grpc.RpcError, untrusted), "cluster x"))
