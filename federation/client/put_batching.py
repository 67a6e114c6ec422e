"""Small puts from many threads of one client share RPCs: one ``PutBatch`` while a put to
the same controller is in flight, instead of one ``Put`` each.

Why: a 4 KiB put costs the client and the server about 0.3 ms of CPU each in gRPC's own
per-call work, more than the put itself (issue 14). A client shared by several threads (the
FUSE mount, fsspec, an application's worker pool) pays it for every file.

How (natural batching, as Kafka's producer and etcd's proposals do): a put to a controller
with nothing in flight goes out at once, as a plain ``Put``, so a lone writer waits for
nobody. Puts that arrive while a call is in flight queue; when it returns, the first queued
thread leads: it takes the queue, sends it as one ``PutBatch`` (a plain ``Put`` if it holds
one put) and hands every thread its own outcome. Each put still succeeds or fails alone and
is acknowledged only after its own commit, as with ``Put``.

A leader may wait a little first (``LINGER_S``), as the owner's group commit does, and only
while fewer puts are queued than the previous call held: the threads that call answered are
about to put again. A lone writer's calls hold one put, so it never waits. Without it, eight
writers fell into a rhythm of one lone put and one batch of seven, each paying a commit's
latency, for half the throughput.

A server that answers the batch UNIMPLEMENTED (an older release) is sent single puts from
then on. A controller answers a put the caller may not write as that put's own outcome;
a batch refused whole (PERMISSION_DENIED, from a release that did so) is retried one put at
a time, so every put gets its own answer either way.
"""
from __future__ import annotations

import threading
import time

import grpc

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.api.errors import from_outcome
from namespace.errors import InternalError

Stub = pb_grpc.FederationStub

MAX_BATCH = 64
MAX_BATCH_BYTES = 4 << 20  # well inside the 8 MiB message limit (channels.MAX_MESSAGE)
LINGER_S = 0.001
_ONE_BY_ONE = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.PERMISSION_DENIED)


class _Pending:
    """One queued put: its request, then its outcome (a reply, or what to raise)."""

    __slots__ = ("request", "size", "ready", "lead", "reply", "error", "alone")

    def __init__(self, request: pb.PutRequest) -> None:
        self.request = request
        self.size = len(request.data)
        self.ready = threading.Event()
        self.lead = False  # this thread is to send the next batch
        self.reply: pb.WriteReply | None = None
        self.error: BaseException | None = None
        self.alone = False  # send it as a plain Put after all (the batch was refused)


class _Line:
    """The puts of one client to one controller."""

    __slots__ = ("stub", "busy", "queue", "last")

    def __init__(self, stub: Stub) -> None:
        self.stub = stub
        self.busy = False  # a leader gathers, or its call is in flight
        self.queue: list[_Pending] = []
        self.last = 1  # puts in the last call


class PutBatcher:
    """Shared by every thread of one client; one line of puts per controller stub."""

    def __init__(self, timeout: float | None = None) -> None:
        self.timeout = timeout  # a call's deadline (None: none; see Client.put_timeout)
        self._cond = threading.Condition()
        self._lines: dict[Stub, _Line] = {}
        self._single: set[Stub] = set()  # servers without PutBatch
        self.batches = 0  # batches sent (tests and benchmarks)

    def put(self, stub: Stub, request: pb.PutRequest) -> pb.WriteReply:
        """``stub.Put(request)``, sharing an RPC with other threads' puts when it can.
        Raises ``grpc.RpcError`` for the call, or the put's own error (a ``GnsError``)."""
        if stub in self._single:
            return _put_one(stub, request, self.timeout)
        me = _Pending(request)
        with self._cond:
            line = self._lines.get(stub)
            if line is None:
                line = self._lines[stub] = _Line(stub)
            line.queue.append(me)
            if line.busy:
                self._cond.notify_all()  # a lingering leader counts the queue
            else:
                line.busy = me.lead = True
        if not me.lead:
            self._wait(line, me)
        if me.lead:
            self._lead(line)
        if me.alone:
            return _put_one(stub, request, self.timeout)
        if me.error is not None:
            raise me.error
        assert me.reply is not None
        return me.reply

    def _wait(self, line: _Line, me: _Pending) -> None:
        """Until our batch was answered, or it is our turn to lead."""
        try:
            me.ready.wait()
        except BaseException:  # interrupted (Ctrl-C in the main thread)
            with self._cond:
                if not me.lead and me in line.queue:
                    line.queue.remove(me)  # never sent: withdrawn
                    raise
            if me.lead:  # the line waits for us: send the batch all the same
                self._lead(line)
            raise

    def _lead(self, line: _Line) -> None:
        """Send the next batch of ``line``, then pass the lead on."""
        try:
            self._send(line.stub, self._gather(line))
        finally:
            self._hand_over(line)

    def _hand_over(self, line: _Line) -> None:
        """After a call returned: the first queued thread leads the next one."""
        with self._cond:
            if not line.queue:
                line.busy = False
                return
            head = line.queue[0]
            head.lead = True
        head.ready.set()

    def _gather(self, line: _Line) -> list[_Pending]:
        """The next batch, the leader first; after waiting up to ``LINGER_S`` for as many
        puts as the last call held."""
        deadline = time.monotonic() + LINGER_S
        with self._cond:
            while len(line.queue) < min(line.last, MAX_BATCH):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, line.queue = _take(line.queue)
            line.last = len(batch)
            if len(batch) > 1:
                self.batches += 1
        return batch

    def _send(self, stub: Stub, batch: list[_Pending]) -> None:
        """Send ``batch`` as one call and settle every put in it (also if this raises)."""
        try:
            if len(batch) == 1:  # nothing to share
                try:
                    batch[0].reply = _put_one(stub, batch[0].request, self.timeout)
                except grpc.RpcError as exc:
                    batch[0].error = exc
                return
            if stub in self._single:  # found out while these queued
                for p in batch:
                    p.alone = True
                return
            try:
                reply = stub.PutBatch(pb.PutBatchRequest(puts=[p.request for p in batch]), timeout=self.timeout)
            except grpc.RpcError as exc:
                if exc.code() not in _ONE_BY_ONE:
                    for p in batch:
                        p.error = exc
                    return
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    self._single.add(stub)
                for p in batch:
                    p.alone = True
                return
            if len(reply.outcomes) != len(batch):
                raise InternalError(f"PutBatch answered {len(reply.outcomes)} outcomes for {len(batch)} puts")
            for p, outcome in zip(batch, reply.outcomes, strict=True):
                if outcome.HasField("reply"):
                    p.reply = outcome.reply
                else:
                    p.error = from_outcome(outcome.error_kind, outcome.error, outcome.retryable)
        except BaseException as exc:  # every waiter hears of it, then it goes on up
            for p in batch:
                if p.reply is None and p.error is None and not p.alone:
                    p.error = exc
            raise
        finally:
            for p in batch[1:]:
                p.ready.set()


def _take(queue: list[_Pending]) -> tuple[list[_Pending], list[_Pending]]:
    """The first puts of ``queue`` that fit one batch, and the rest."""
    size = 0
    for i, p in enumerate(queue):
        size += p.size
        if i == MAX_BATCH or (i and size > MAX_BATCH_BYTES):
            return queue[:i], queue[i:]
    return queue, []


def _put_one(stub: Stub, request: pb.PutRequest, timeout: float | None) -> pb.WriteReply:
    reply: pb.WriteReply = stub.Put(request, timeout=timeout)
    return reply
