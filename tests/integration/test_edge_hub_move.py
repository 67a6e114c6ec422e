"""SPEC §8, several ``--hub`` addresses: a site whose hub hangs (SIGSTOP: the TCP port still
accepts, nothing answers) moves to the next address and keeps working through it, rather
than redialing the frozen hub forever."""
from __future__ import annotations

import os
import signal

from tests.fixtures.federation import Federation
from tests.support import wait_for
from tests.support.edge import edge_list, edge_site, put, read, stub, token, try_rpc


def test_two_hubs_first_frozen_site_moves_and_keeps_working(federation: Federation) -> None:
    a = federation.add("onprem-a")
    b = federation.add("onprem-b")
    assert federation.gns("volume", "create", "core", "--cluster", "onprem-b").returncode == 0
    assert federation.gns("mount", "add", "/core", "core").returncode == 0
    e = edge_site(federation, "site-w", [a.endpoint, b.endpoint])
    frozen = False
    try:
        e.start(token(federation, "site-w", "--hub", "onprem-a"))
        e.wait_link("Ready")
        assert e.status()["hub"] == "onprem-a"
        s = stub(e)
        # A core-owned path: the site can only reach it through its link.
        wait_for(lambda: try_rpc(lambda: put(s, "/core/before.txt", b"via a")) is not None, 15, "write through onprem-a")
        os.kill(a.pid, signal.SIGSTOP)
        frozen = True
        # The old code redialed onprem-a (5 s of silence each time) for ever.
        e.wait(lambda st: st.get("hub") == "onprem-b" and st.get("state") == "Ready", 25, "link through onprem-b")
        wait_for(lambda: try_rpc(lambda: put(s, "/core/after.txt", b"via b")) is not None, 15, "write through onprem-b")
        assert read(s, "/core/after.txt") == b"via b"
        assert read(s, "/core/before.txt") == b"via a"
        site = wait_for(lambda: (d := edge_list(federation)["site-w"])["state"] == "Ready"
                        and d["hub"] == "onprem-b" and d, 20, "edge list: site-w Ready through onprem-b")
        assert site["connected_since"]
    finally:
        if frozen:
            os.kill(a.pid, signal.SIGCONT)
        e.stop()
