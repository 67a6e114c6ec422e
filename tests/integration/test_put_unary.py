"""Small files in one unary ``Put`` (issue 14), forwarded by a non-owner as a ``Write``, and
the client's fall-back to ``Write`` against a server that has no ``Put`` (an older release)."""
from __future__ import annotations

import asyncio
import hashlib
import random
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import IO, Any, cast

import grpc
import pytest

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.remote import RemoteClient
from namespace.errors import Conflict, InvalidInput, NotFound
from tests.fixtures.federation import Federation, metric

WRITE = "/gns.federation.v1.Federation/Write"


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(scope="module")
def fed(federation3: Federation) -> Federation:
    assert federation3.gns("volume", "create", "pu", "--cluster", "onprem-a").returncode == 0
    assert federation3.gns("mount", "add", "/pu", "pu").returncode == 0
    return federation3


def calls(fed: Federation, cid: str, method: str) -> float:
    """The owner's request counter of ``Federation/<method>`` that ended OK."""
    return metric(fed, cid, "gns_requests_total", code="OK", method=f"Federation/{method}")


def test_small_put_is_one_unary_call_and_round_trips(fed: Federation) -> None:
    data = random.randbytes(4096)
    with fed.client() as c:
        puts, writes = calls(fed, "onprem-a", "Put"), calls(fed, "onprem-a", "Write")
        info = c.put(data, "/pu/small/a.bin", mode=0o600)
        assert info.sha256 == sha(data) and info.size == 4096 and info.mode == 0o600
        assert c.cat("/pu/small/a.bin") == data
        assert calls(fed, "onprem-a", "Put") == puts + 1
        assert calls(fed, "onprem-a", "Write") == writes
        # exactly one chunk still goes whole; one byte more streams
        whole = random.randbytes(c.chunk_size)
        assert c.put(whole, "/pu/small/chunk.bin").sha256 == sha(whole)
        assert calls(fed, "onprem-a", "Write") == writes
        bigger = whole + b"!"
        assert c.put(bigger, "/pu/small/bigger.bin").sha256 == sha(bigger)
        assert calls(fed, "onprem-a", "Write") == writes + 1
        assert c.cat("/pu/small/bigger.bin") == bigger
        # an empty file is a file
        assert c.put(b"", "/pu/small/empty").size == 0
        assert c.cat("/pu/small/empty") == b""


def test_small_put_forwarded_by_a_non_owner(fed: Federation) -> None:
    data = random.randbytes(1000)
    puts, writes = calls(fed, "onprem-a", "Put"), calls(fed, "onprem-a", "Write")
    with fed.client(via="aws-1") as c:
        info = c.put(data, "/pu/via/f.bin")
        assert info.served_by == "onprem-a" and info.sha256 == sha(data)
    # the forwarder relayed it as a Put too
    assert calls(fed, "aws-1", "Put") >= 1
    assert (calls(fed, "onprem-a", "Put"), calls(fed, "onprem-a", "Write")) == (puts + 1, writes)
    with fed.client(via="aws-1") as c, pytest.raises(Conflict):
        c.put(b"again", "/pu/via/f.bin", if_absent=True)  # the owner's refusal comes back as is
    with fed.client() as c:
        assert c.cat("/pu/via/f.bin") == data


class _Pieces:
    """A source with ``read`` only (no seek, no fileno), as a pipe or a write queue is: it
    hands out ``piece`` bytes per call whatever it is asked for, fewer or more."""

    def __init__(self, data: bytes, piece: int) -> None:
        self._data, self._at, self._piece = data, 0, piece

    def read(self, n: int = -1) -> bytes:
        out = self._data[self._at : self._at + self._piece]
        self._at += len(out)
        return out


def test_a_source_that_cannot_seek_goes_whole_when_small_and_streams_the_rest(fed: Federation) -> None:
    """stdin, fsspec's and FUSE's write queues: small content in one Put (re-routable, its
    bytes are in memory), longer content streamed with the bytes read ahead going first."""
    with fed.client() as c:
        puts, writes = calls(fed, "onprem-a", "Put"), calls(fed, "onprem-a", "Write")
        small = random.randbytes(5000)
        assert c.put(cast(IO[bytes], _Pieces(small, 777)), "/pu/pipe/small").sha256 == sha(small)
        assert c.put(cast(IO[bytes], _Pieces(b"", 1)), "/pu/pipe/empty").size == 0
        assert (calls(fed, "onprem-a", "Put"), calls(fed, "onprem-a", "Write")) == (puts + 2, writes)
        for piece in (300_001, 3 * c.chunk_size):  # fewer bytes per read than asked, and more
            big = random.randbytes(2 * c.chunk_size + 12_345)
            seen: list[int] = []
            info = c.put(cast(IO[bytes], _Pieces(big, piece)), "/pu/pipe/big", progress=seen.append)
            assert info.sha256 == sha(big) and info.size == len(big)
            assert c.cat("/pu/pipe/big") == big and sum(seen) == len(big)
        assert calls(fed, "onprem-a", "Write") == writes + 2
        assert c.cat("/pu/pipe/small") == small
    out = fed.gns_bytes("put", "-", "/pu/pipe/stdin", input=small)
    assert out.returncode == 0, out.stderr
    assert (calls(fed, "onprem-a", "Put"), calls(fed, "onprem-a", "Write")) == (puts + 3, writes + 2)
    with fed.client() as c:
        assert c.cat("/pu/pipe/stdin") == small


def test_put_bad_input_changes_nothing(fed: Federation) -> None:
    with fed.client() as c:
        c.put(b"old", "/pu/bad/kept")
        version = c.stat("/pu/bad/kept").version
        with pytest.raises(Conflict):
            c.put(b"new", "/pu/bad/kept", if_absent=True)
        with pytest.raises(InvalidInput):
            c.put(b"x", "/pu")  # the root of the volume
        assert c.cat("/pu/bad/kept") == b"old" and c.stat("/pu/bad/kept").version == version
        with pytest.raises(NotFound):
            c.stat("/pu/bad/never")
    with grpc.insecure_channel(fed.controllers["onprem-a"].endpoint) as ch:
        stub = pb_grpc.FederationStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.Put(pb.PutRequest(data=b"no header"), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # a wrong end-to-end hash commits nothing
        header = pb.WriteHeader(target=pb.Target(global_path="/pu/bad/kept"), expect_sha256="0" * 64)
        with pytest.raises(grpc.RpcError) as err:
            stub.Put(pb.PutRequest(header=header, data=b"new"), timeout=10)
    with fed.client() as c:
        assert c.cat("/pu/bad/kept") == b"old" and c.stat("/pu/bad/kept").version == version


class _Record(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no types: the base is Any
    """Every method asked for, known or not."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        self.methods.append(str(details.method).rsplit("/", 1)[-1])
        return await continuation(details)


class _OldRelease:
    """A real gRPC server that knows ``Write`` only (as releases before ``Put`` did): it
    relays each Write stream to the real controller, the header read as such a release
    reads it (without ``ends``, a field it does not know), the data as the bytes they came in."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.writes: list[int] = []  # messages per Write stream seen
        self.asked = _Record()
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with grpc.aio.insecure_channel(self.upstream) as up:
            relay = up.stream_unary(WRITE, request_serializer=None, response_deserializer=None)

            async def write(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
                seen: list[bytes] = [m async for m in requests]
                self.writes.append(len(seen))
                head = pb.WriteChunk.FromString(seen[0])
                head.header.ends = False
                seen[0] = head.SerializeToString()
                reply: bytes = await relay(iter(seen))
                return reply

            server = grpc.aio.server(interceptors=[self.asked])
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
                "gns.federation.v1.Federation", {"Write": grpc.stream_unary_rpc_method_handler(write)}),))
            self.port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            self._ready.set()
            await self._stop.wait()
            await server.stop(None)

    def __enter__(self) -> _OldRelease:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def old_release(fed: Federation) -> Iterator[_OldRelease]:
    with _OldRelease(fed.controllers["onprem-a"].endpoint) as old:
        yield old


def test_client_falls_back_to_write_on_a_server_without_put(fed: Federation, old_release: _OldRelease) -> None:
    first, second = random.randbytes(3000), random.randbytes(10)
    with RemoteClient(controller=f"127.0.0.1:{old_release.port}") as c:
        assert c.put(first, "/pu/old/a.bin").sha256 == sha(first)
        assert c.put(second, "/pu/old/b.bin").sha256 == sha(second)
    # a header, a data message and the (empty) end each; the second put did not try Put
    # again; the end reads as no data to a release that does not know it, so the files are whole
    assert old_release.writes == [3, 3]
    assert old_release.asked.methods == ["Put", "Write", "Write"]
    with fed.client() as c:
        assert c.cat("/pu/old/a.bin") == first and c.cat("/pu/old/b.bin") == second


def test_concurrent_small_puts_share_put_batch_calls(fed: Federation) -> None:
    """Eight threads of one client: their puts travel in PutBatch calls, each committed and
    answered on its own, straight to the owner and through a forwarder alike."""
    for via, prefix in ((None, "/pu/many/direct"), ("aws-1", "/pu/many/via")):
        batches = calls(fed, "onprem-a" if via is None else "aws-1", "PutBatch")
        payloads = {f"{prefix}/t{t}/f{i}": random.randbytes(100 + 37 * i + t) for t in range(8) for i in range(25)}
        by_thread = [[p for p in payloads if f"/t{t}/" in p] for t in range(8)]
        infos: dict[str, str] = {}

        def run(paths: list[str], c: RemoteClient) -> None:
            for p in paths:
                infos[p] = c.put(payloads[p], p).sha256

        with fed.client(via=via) as c:
            threads = [threading.Thread(target=run, args=(paths, c)) for paths in by_thread]
            for th in threads:
                th.start()
            for th in threads:
                th.join(60)
            assert c._put_batcher.batches > 0  # the threads did overlap
        assert calls(fed, "onprem-a" if via is None else "aws-1", "PutBatch") > batches
        assert infos == {p: sha(d) for p, d in payloads.items()}
        with fed.client() as c:
            for p, d in payloads.items():
                assert c.cat(p) == d
            versions = [c.stat(p).version for p in payloads]
        assert len(set(versions)) == len(versions)  # one version per put, none merged


def test_put_batch_outcomes_are_per_put(fed: Federation) -> None:
    """One PutBatch call: each put commits or fails alone, with the error its own Put would
    have ended with; the owner and a forwarder answer the same."""
    with fed.client() as c:
        c.put(b"old", "/pu/outcomes/kept")

    def put(path: str, data: bytes, **header: Any) -> pb.PutRequest:
        return pb.PutRequest(header=pb.WriteHeader(target=pb.Target(global_path=path), **header), data=data)

    for cid in ("onprem-a", "aws-1"):
        with grpc.insecure_channel(fed.controllers[cid].endpoint) as ch:
            reply = pb_grpc.FederationStub(ch).PutBatch(pb.PutBatchRequest(puts=[
                put(f"/pu/outcomes/{cid}-new", b"new"),
                put("/pu/outcomes/kept", b"x", if_absent=True),  # exists: a conflict
                put("/pu", b"x"),  # the root of the volume
                pb.PutRequest(data=b"no header"),
                put("/nowhere/f", b"x"),  # no mount
                put("/pu/outcomes/bad-hash", b"x", expect_sha256="0" * 64),
            ]), timeout=30)
        first, *failed = reply.outcomes
        assert first.HasField("reply") and first.reply.info.sha256 == sha(b"new")
        assert [(o.HasField("reply"), o.error_kind) for o in failed] == [
            (False, "conflict"), (False, "invalid-input"), (False, "invalid-input"),
            (False, "not-found"), (False, "invalid-input"),
        ]
        assert all(o.error for o in failed)
    with fed.client() as c:
        assert c.cat("/pu/outcomes/kept") == b"old"
        assert c.cat("/pu/outcomes/onprem-a-new") == b"new" and c.cat("/pu/outcomes/aws-1-new") == b"new"
        with pytest.raises(NotFound):
            c.stat("/pu/outcomes/bad-hash")
    with grpc.insecure_channel(fed.controllers["onprem-a"].endpoint) as ch:
        stub = pb_grpc.FederationStub(ch)
        # an empty batch is an empty answer
        assert len(stub.PutBatch(pb.PutBatchRequest(), timeout=10).outcomes) == 0
        # too many puts in one call: refused whole, nothing written
        with pytest.raises(grpc.RpcError) as err:
            stub.PutBatch(pb.PutBatchRequest(puts=[put(f"/pu/outcomes/many/{i}", b"") for i in range(1025)]),
                          timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 1024" in (err.value.details() or "")
    assert fed.gns("stat", "/pu/outcomes/many").returncode == 3
