"""The unary ``Put`` across an edge link (issue 14): from the core down the site's stream to
the edge owner, and from the site up the link to a core owner, each relayed as a Put."""
from __future__ import annotations

import hashlib
import random

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from tests.fixtures.federation import Federation
from tests.support import wait_for
from tests.support.edge import edge_site, join, put, read, stub, try_rpc


def test_put_through_the_edge_link_both_ways(federation: Federation) -> None:
    hub = federation.add("onprem-a")
    e = edge_site(federation, "edge-1", [hub.endpoint])
    try:
        join(federation, e)
        for vol, owner in (("sensors", "edge-1"), ("core", "onprem-a")):
            assert federation.gns("volume", "create", vol, "--cluster", owner).returncode == 0
            assert federation.gns("mount", "add", f"/{vol}", vol).returncode == 0
        s = stub(e)
        wait_for(lambda: try_rpc(lambda: put(s, "/sensors/a.txt", b"site").served_by == "edge-1"), 10, "local write")
        # Core -> hub -> down the site's stream: the client's Put, relayed as a Put.
        down = random.randbytes(5000)
        with federation.client() as c:
            info = c.put(down, "/sensors/from-core.bin")
            assert info.served_by == "edge-1" and info.sha256 == hashlib.sha256(down).hexdigest()
        assert read(s, "/sensors/from-core.bin") == down
        # Site -> up the link to the core owner.
        up = random.randbytes(3000)
        header = pb.WriteHeader(target=pb.Target(global_path="/core/from-site.bin"))
        reply = s.Put(pb.PutRequest(header=header, data=up), timeout=30)
        assert reply.info.served_by == "onprem-a" and reply.info.size == len(up)
        with federation.client() as c:
            assert c.cat("/core/from-site.bin") == up
    finally:
        e.stop()
