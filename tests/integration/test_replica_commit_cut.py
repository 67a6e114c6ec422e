"""A replica never applies a version whose sender died inside it (kill -9 mid-Commit).

A grpc.aio server sees a client killed mid-stream as a clean end of its request stream, so a
``Commit`` stream cut after a version's header looked like that version, complete and empty.
Headers now promise an ``end`` message; a version without one is refused, nothing applied.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import grpc

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from tests.fixtures.federation import Federation
from tests.support import holds_for

SENDER = textwrap.dedent("""
    import sys, time, grpc
    from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
    from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
    def chunks():
        yield pb.ReplicaCommitChunk(header=pb.ReplicaCommitHeader(
            volume="cv", source="onprem-a", epoch=1, version=1, with_dirs=True, ends=True))
        yield pb.ReplicaCommitChunk(dir=pb.ReplicaDir(path="d", mode=0o755, mtime=1.0))
        print("sent", flush=True)
        time.sleep(600)  # killed here: the version's end never comes
    pb_grpc.ReplicationStub(grpc.insecure_channel(sys.argv[1])).Commit(chunks(), timeout=600)
""")


def _state(stub: pb_grpc.ReplicationStub) -> tuple[bool, int]:
    r = stub.State(pb.ReplicaStateRequest(volume="cv"), timeout=10)
    return bool(r.exists), int(r.version)


def _version(n: int, *, ends: bool) -> list[pb.ReplicaCommitChunk]:
    msgs = [pb.ReplicaCommitChunk(header=pb.ReplicaCommitHeader(
                volume="cv", source="onprem-a", epoch=1, version=n, with_dirs=True, ends=ends)),
            pb.ReplicaCommitChunk(dir=pb.ReplicaDir(path=f"d{n}", mode=0o755, mtime=1.0))]
    if ends:
        msgs.append(pb.ReplicaCommitChunk(end=pb.ReplicaCommitEnd()))
    return msgs


def test_commit_cut_by_a_killed_sender_applies_nothing(federation: Federation) -> None:
    federation.add("onprem-a")
    replica = federation.add("onprem-b")
    assert federation.gns("volume", "create", "cv", "--cluster", "onprem-a").returncode == 0
    channel = grpc.insecure_channel(replica.endpoint)
    stub = pb_grpc.ReplicationStub(channel)
    try:
        sender = subprocess.Popen([sys.executable, "-c", SENDER, replica.endpoint],
                                  stdout=subprocess.PIPE, text=True, env=federation.env())
        try:
            assert sender.stdout is not None and sender.stdout.readline().strip() == "sent"
        finally:
            sender.send_signal(signal.SIGKILL)
            sender.wait(10)
            if sender.stdout is not None:
                sender.stdout.close()
        # The replica sees the stream end moments after the kill; the cut version must never
        # show up (on the previous code it did, as an empty v1).
        holds_for(lambda: _state(stub)[1] == 0, 3.0, "the replica stays at v0", every=0.05)
        # A whole version (header, entries, end) applies; so does an older sender's (no end).
        assert stub.Commit(iter(_version(1, ends=True)), timeout=30).version == 1
        assert stub.Commit(iter(_version(2, ends=False)), timeout=30).version == 2
        # A stream that stops inside a version is refused whole: v3 whole, v4 cut.
        cut = _version(3, ends=True) + _version(4, ends=True)[:-1]
        try:
            stub.Commit(iter(cut), timeout=30)
            raise AssertionError("a cut commit stream was accepted")
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            assert "ended inside v4" in (exc.details() or "")
        assert _state(stub) == (True, 2)
    finally:
        channel.close()
