"""A core volume mounted below an edge site's mount (``/site/archive`` inside the site's
``/site``): at the site its paths belong to the core volume, as everywhere else (SPEC §3:
the longest mount prefix wins). The site's slice of the namespace left that mount out, so
the site took ``/site/archive/x`` for its own volume's ``archive/x`` and wrote it there,
where no core reader would ever find it."""
from __future__ import annotations

from tests.fixtures.federation import Federation
from tests.support import wait_for
from tests.support.edge import edge_site, join, put, read, stub, try_rpc
from tests.support.mirrors import make_volume


def test_a_core_mount_inside_a_sites_mount_is_the_core_volumes_at_the_site(federation: Federation) -> None:
    hub = federation.add("onprem-a")
    e = edge_site(federation, "edge-n", [hub.endpoint])
    try:
        join(federation, e)
        make_volume(federation, "sitevol", "edge-n", at="/site")
        make_volume(federation, "archive", "onprem-a", at="/site/archive")
        s = stub(e)
        wait_for(lambda: try_rpc(lambda: put(s, "/site/own.txt", b"the site's")), 15, "a write at the site")

        def archived() -> bool:
            put(s, "/site/archive/x", b"for the archive")
            return federation.gns("cat", "/site/archive/x").stdout == "for the archive"

        wait_for(lambda: try_rpc(archived), 15, "a write at the site to reach the core volume")
        assert read(s, "/site/archive/x") == b"for the archive"  # read back through the hub
        assert federation.gns("cat", "/site/own.txt").stdout == "the site's"  # forwarded down
        listing = federation.gns("ls", "/site/archive").stdout
        assert "x" in listing, listing
    finally:
        print(e.tail())  # shown by pytest only if the test failed
        e.stop()
