"""A write whose sender dies mid-stream commits nothing: kill -9 of the writing client, or
of the controller that forwards its stream to the owner.

Both leave the file as it was (old content, or no file) and the volume writable. The owner's
own death mid-write is covered in ``test_fencing_and_crash``; this covers the hops before it.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.fixtures.federation import Federation
from tests.support import holds_for

WRITER = textwrap.dedent("""
    import sys, time, grpc
    from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
    from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
    def chunks():
        yield pb.WriteChunk(header=pb.WriteHeader(target=pb.Target(global_path=sys.argv[2])))
        for _ in range(32):
            yield pb.WriteChunk(data=b"n" * 65536)
        print("sent", flush=True)
        while True:  # killed in here, the file never finished
            yield pb.WriteChunk(data=b"n" * 65536)
            time.sleep(0.02)
    pb_grpc.FederationStub(grpc.insecure_channel(sys.argv[1])).Write(chunks(), timeout=600)
""")


@pytest.mark.parametrize("killed", ["client", "forwarder"])
def test_write_cut_by_a_killed_sender_commits_nothing(federation: Federation, killed: str) -> None:
    federation.add("onprem-a")
    forwarder = federation.add("onprem-b")
    assert federation.gns("volume", "create", "wc", "--cluster", "onprem-a").returncode == 0
    assert federation.gns("mount", "add", "/wc", "wc").returncode == 0
    assert federation.gns("put", "-", "/wc/f.bin", input=b"old").returncode == 0
    assert federation.gns("put", "-", "/wc/keep.bin", input=b"keep").returncode == 0
    writer = subprocess.Popen([sys.executable, "-c", WRITER, forwarder.endpoint, "/wc/f.bin"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env=federation.env())
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "sent"
        if killed == "forwarder":
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
