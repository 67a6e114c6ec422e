"""The client's put batching (``federation.client.put_batching``) step by step, against a real
gRPC server on loopback that speaks the controller's ``Put`` and ``PutBatch`` and can hold a
call, so which puts share a call is certain. (The real controllers' side of PutBatch, and
batching under real load, are in ``test_put_unary``.)"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.client.put_batching import PutBatcher
from namespace.errors import Conflict

SERVICE = "gns.federation.v1.Federation"


def _path(put: pb.PutRequest) -> str:
    return put.header.target.global_path


class _Controller:
    """Answers Put with the path it was given; PutBatch per ``batch_mode``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.hold = threading.Event()  # while clear, the next Put waits for it
        self.hold.set()
        self.holding = threading.Event()  # a Put is being held
        self.batch_mode = "ok"  # ok | unimplemented | denied | unavailable
        self.conflicts: set[str] = set()  # puts answered "conflict"
        self.denied: set[str] = set()  # paths a Put is refused for
        self._lock = threading.Lock()

    def put(self, request: pb.PutRequest, context: grpc.ServicerContext) -> pb.WriteReply:
        with self._lock:
            self.calls.append(("Put", [_path(request)]))
        if not self.hold.is_set():
            self.holding.set()
            self.hold.wait(10)
        if _path(request) in self.denied:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "permission denied")
        return pb.WriteReply(info=pb.FileInfo(path=_path(request), size=len(request.data)))

    def put_batch(self, request: pb.PutBatchRequest, context: grpc.ServicerContext) -> pb.PutBatchReply:
        paths = [_path(p) for p in request.puts]
        with self._lock:
            self.calls.append(("PutBatch", paths))
        if self.batch_mode == "unimplemented":
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        if self.batch_mode == "denied":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "permission denied")
        if self.batch_mode == "unavailable":
            context.abort(grpc.StatusCode.UNAVAILABLE, "owner away")
        reply = pb.PutBatchReply()
        for p in request.puts:
            if _path(p) in self.conflicts:
                reply.outcomes.add(error_kind="conflict", error=f"{_path(p)} exists", retryable=False)
            else:
                reply.outcomes.add(reply=pb.WriteReply(info=pb.FileInfo(path=_path(p), size=len(p.data))))
        return reply

    def methods(self) -> list[tuple[str, list[str]]]:
        with self._lock:
            return list(self.calls)


@pytest.fixture
def controller() -> Iterator[tuple[_Controller, pb_grpc.FederationStub]]:
    ctl = _Controller()
    server = grpc.server(ThreadPoolExecutor(max_workers=16))
    handlers: dict[str, grpc.RpcMethodHandler] = {
        "Put": grpc.unary_unary_rpc_method_handler(
            ctl.put, pb.PutRequest.FromString, pb.WriteReply.SerializeToString),
        "PutBatch": grpc.unary_unary_rpc_method_handler(
            ctl.put_batch, pb.PutBatchRequest.FromString, pb.PutBatchReply.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield ctl, pb_grpc.FederationStub(channel)
    finally:
        ctl.hold.set()
        channel.close()
        server.stop(None)


def _request(path: str) -> pb.PutRequest:
    return pb.PutRequest(header=pb.WriteHeader(target=pb.Target(global_path=path)), data=path.encode())


def _until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _queued(batcher: PutBatcher, stub: pb_grpc.FederationStub) -> int:
    line = batcher._lines.get(stub)
    return 0 if line is None else len(line.queue)


def _overlapped(ctl: _Controller, stub: pb_grpc.FederationStub, batcher: PutBatcher,
                paths: list[str]) -> dict[str, Any]:
    """Put ``paths[0]`` and hold it at the server; put the rest from their own threads while
    it is held; release. Each path's reply (its FileInfo path) or the exception it raised."""
    results: dict[str, Any] = {}

    def one(path: str) -> None:
        try:
            results[path] = batcher.put(stub, _request(path)).info.path
        except Exception as exc:  # the test looks at what each put raised
            results[path] = exc

    ctl.holding.clear()
    ctl.hold.clear()
    first = threading.Thread(target=one, args=(paths[0],))
    first.start()
    assert ctl.holding.wait(10)
    rest = [threading.Thread(target=one, args=(p,)) for p in paths[1:]]
    for th in rest:
        th.start()
    _until(lambda: _queued(batcher, stub) == len(paths) - 1, "the puts to queue")
    ctl.hold.set()
    for th in [first, *rest]:
        th.join(10)
    assert set(results) == set(paths)
    return results


def test_a_lone_writer_sends_plain_puts(controller: tuple[_Controller, pb_grpc.FederationStub]) -> None:
    ctl, stub = controller
    batcher = PutBatcher()
    for i in range(5):
        assert batcher.put(stub, _request(f"/v/{i}")).info.path == f"/v/{i}"
    assert ctl.methods() == [("Put", [f"/v/{i}"]) for i in range(5)]
    assert batcher.batches == 0


def test_puts_queued_behind_a_call_go_in_one_batch(controller: tuple[_Controller, pb_grpc.FederationStub]) -> None:
    ctl, stub = controller
    batcher = PutBatcher()
    paths = ["/v/first", "/v/a", "/v/b", "/v/c"]
    results = _overlapped(ctl, stub, batcher, paths)
    assert results == {p: p for p in paths}  # every thread got its own answer
    calls = ctl.methods()
    assert calls[0] == ("Put", ["/v/first"])
    assert [m for m, _ in calls[1:]] == ["PutBatch"] and sorted(calls[1][1]) == ["/v/a", "/v/b", "/v/c"]
    assert batcher.batches == 1


def test_each_put_in_a_batch_fails_alone(controller: tuple[_Controller, pb_grpc.FederationStub]) -> None:
    ctl, stub = controller
    ctl.conflicts = {"/v/taken"}
    results = _overlapped(ctl, stub, PutBatcher(), ["/v/first", "/v/free", "/v/taken", "/v/other"])
    assert isinstance(results["/v/taken"], Conflict) and "exists" in str(results["/v/taken"])
    assert (results["/v/free"], results["/v/other"]) == ("/v/free", "/v/other")


def test_a_server_without_put_batch_gets_single_puts(controller: tuple[_Controller, pb_grpc.FederationStub]) -> None:
    ctl, stub = controller
    ctl.batch_mode = "unimplemented"
    batcher = PutBatcher()
    paths = ["/v/first", "/v/a", "/v/b"]
    assert _overlapped(ctl, stub, batcher, paths) == {p: p for p in paths}
    calls = ctl.methods()
    assert [m for m, _ in calls].count("PutBatch") == 1
    assert sorted(p for m, ps in calls if m == "Put" for p in ps) == sorted(paths)
    # ... and it is not asked again: overlapping puts now go out side by side, as Puts
    ctl.calls.clear()
    ctl.hold.clear()
    threads = [threading.Thread(target=batcher.put, args=(stub, _request(f"/v/2{i}"))) for i in range(3)]
    for th in threads:
        th.start()
    _until(lambda: len(ctl.methods()) == 3, "three puts in flight at once")
    ctl.hold.set()
    for th in threads:
        th.join(10)
    assert {m for m, _ in ctl.methods()} == {"Put"}


def test_a_refused_batch_is_retried_put_by_put(controller: tuple[_Controller, pb_grpc.FederationStub]) -> None:
    """One put the caller may not write refuses the whole call; sent alone, the others
    succeed and only that one is denied."""
    ctl, stub = controller
    ctl.batch_mode = "denied"
    ctl.denied = {"/v/secret"}
    results = _overlapped(ctl, stub, PutBatcher(), ["/v/first", "/v/a", "/v/secret", "/v/b"])
    assert (results["/v/a"], results["/v/b"]) == ("/v/a", "/v/b")
    assert isinstance(results["/v/secret"], grpc.RpcError)
    assert results["/v/secret"].code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_failed_batch_call_fails_each_of_its_puts(controller: tuple[_Controller, pb_grpc.FederationStub]) -> None:
    ctl, stub = controller
    ctl.batch_mode = "unavailable"
    batcher = PutBatcher()
    results = _overlapped(ctl, stub, batcher, ["/v/first", "/v/a", "/v/b"])
    assert results["/v/first"] == "/v/first"
    for p in ("/v/a", "/v/b"):
        assert isinstance(results[p], grpc.RpcError) and results[p].code() == grpc.StatusCode.UNAVAILABLE
    # the line is free again: the next put goes out at once
    ctl.batch_mode = "ok"
    assert batcher.put(stub, _request("/v/after")).info.path == "/v/after"
