"""A write whose sender dies mid-stream commits nothing: kill -9 of the writing client, or
of the controller that forwards its stream to the owner (relaying gRPC messages, or moving
the bytes of a stream run end to end through its bulk tunnel).

Both leave the file as it was (old content, or no file) and the volume writable. The owner's
own death mid-write is covered in ``test_fencing_and_crash``; this covers the hops before it.

A grpc.aio owner mostly sees a killed sender as a clean end of the request stream, so what
keeps the cut file invisible is the end the header promises (``WriteHeader.ends``). The kill
tests race against that; ``test_a_stream_that_stops_before_its_end_commits_nothing`` shows
the owner exactly what such a kill looks like (the data, then a clean half-close), every time.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import grpc
import pytest

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from tests.fixtures.federation import Federation
from tests.support import holds_for

WRITER = textwrap.dedent("""
    import sys, time, grpc
    from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
    from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
    def chunks():
        # ends=True, as the gns client sends: the owner commits only after an empty data message
        yield pb.WriteChunk(header=pb.WriteHeader(target=pb.Target(global_path=sys.argv[2]), ends=True))
        sent = int(sys.argv[3])
        for _ in range(sent):
            yield pb.WriteChunk(data=b"n" * 65536)
        print("sent", flush=True)  # (gRPC asks for a message once the one before it went out)
        if sent == 1:  # the owner holds one data message: its one-hop path for a small file
            time.sleep(600)
        while True:  # killed in here, the file never finished
            yield pb.WriteChunk(data=b"n" * 65536)
            time.sleep(0.02)
    # with a 5th argument, through the tunnel at argv[1] to the owner at argv[4], as a client
    # entering at --via does
    tunneled = [("grpc.http_connect_server", sys.argv[4])] if len(sys.argv) > 4 else []
    pb_grpc.FederationStub(grpc.insecure_channel(sys.argv[1], options=tunneled)).Write(chunks(), timeout=600)
""")


@pytest.mark.parametrize("sent", [1, 32])
@pytest.mark.parametrize("killed", ["client", "forwarder", "tunnel"])
def test_write_cut_by_a_killed_sender_commits_nothing(federation: Federation, killed: str, sent: int) -> None:
    owner = federation.add("onprem-a")
    forwarder = federation.add("onprem-b")
    assert federation.gns("volume", "create", "wc", "--cluster", "onprem-a").returncode == 0
    assert federation.gns("mount", "add", "/wc", "wc").returncode == 0
    assert federation.gns("put", "-", "/wc/f.bin", input=b"old").returncode == 0
    assert federation.gns("put", "-", "/wc/keep.bin", input=b"keep").returncode == 0
    route = [forwarder.endpoint]
    if killed == "tunnel":
        tunnel = json.loads(federation.gns("cluster", "show", "onprem-b", "--json").stdout)["tunnel"]
        route = [tunnel, owner.endpoint]
    writer = subprocess.Popen([sys.executable, "-c", WRITER, route[0], "/wc/f.bin", str(sent), *route[1:]],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env=federation.env())
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "sent"
        if killed in ("forwarder", "tunnel"):
            federation.kill("onprem-b")
    finally:
        writer.kill()
        writer.wait(10)
        if writer.stdout is not None:
            writer.stdout.close()

    def old() -> bool:
        got = federation.gns_bytes("cat", "/wc/f.bin")
        # Say what was read: a partial commit and a failed read are different bugs.
        assert got.returncode == 0 and got.stdout == b"old", (
            got.returncode, len(got.stdout), got.stdout[:16], got.stderr[-400:])
        return True

    holds_for(old, 2.0, "the cut write's file keeps its old content")
    # The volume is not left mid-write: new writes commit, old files are whole.
    assert federation.gns("put", "-", "/wc/f.bin", input=b"new").returncode == 0
    assert federation.gns_bytes("cat", "/wc/f.bin").stdout == b"new"
    assert federation.gns_bytes("cat", "/wc/keep.bin").stdout == b"keep"


def _write(endpoint: str, path: str, parts: list[bytes], ends: bool) -> pb.WriteReply:
    """A raw Write: the header, then each of ``parts`` as a data message, then a clean
    half-close (an empty part is the end the header promises when ``ends``)."""
    head = pb.WriteChunk(header=pb.WriteHeader(target=pb.Target(global_path=path), ends=ends))
    with grpc.insecure_channel(endpoint) as ch:
        reply: pb.WriteReply = pb_grpc.FederationStub(ch).Write(
            iter([head] + [pb.WriteChunk(data=p) for p in parts]), timeout=30)
        return reply


@pytest.mark.parametrize("via", ["owner", "forwarder"])
def test_a_stream_that_stops_before_its_end_commits_nothing(federation: Federation, via: str) -> None:
    owner = federation.add("onprem-a")
    forwarder = federation.add("onprem-b")
    assert federation.gns("volume", "create", "we", "--cluster", "onprem-a").returncode == 0
    assert federation.gns("mount", "add", "/we", "we").returncode == 0
    assert federation.gns("put", "-", "/we/f.bin", input=b"old").returncode == 0
    endpoint = (owner if via == "owner" else forwarder).endpoint
    big = b"n" * (1 << 20)
    # one data message (the owner's one-hop path) and several (the streamed path), cut
    for parts in ([b"cut"], [big, big, b"tail"], []):
        with pytest.raises(grpc.RpcError) as cut:
            _write(endpoint, "/we/f.bin", parts, ends=True)
        assert cut.value.code() == grpc.StatusCode.UNAVAILABLE, cut.value.details()
        assert "before its end" in str(cut.value.details())
        assert federation.gns_bytes("cat", "/we/f.bin").stdout == b"old"
    # data after the end: refused, nothing committed
    with pytest.raises(grpc.RpcError) as late:
        _write(endpoint, "/we/f.bin", [b"a", b"", b"b"], ends=True)
    assert late.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert federation.gns_bytes("cat", "/we/f.bin").stdout == b"old"
    # with its end the same streams commit, the end adding nothing
    assert _write(endpoint, "/we/f.bin", [big, big, b"tail", b""], ends=True).info.size == 2 * len(big) + 4
    assert _write(endpoint, "/we/one.bin", [b"one", b""], ends=True).info.size == 3
    assert federation.gns_bytes("cat", "/we/one.bin").stdout == b"one"
    # a sender that promises no end (an older release): the stream's end is the file's end
    assert _write(endpoint, "/we/old.bin", [b"o", b"", b"ld"], ends=False).info.size == 3
    assert federation.gns_bytes("cat", "/we/old.bin").stdout == b"old"
