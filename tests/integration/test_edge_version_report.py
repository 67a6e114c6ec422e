"""An edge-owned volume's version, as the federation shows it, follows the site's commits
at once rather than at the next heartbeat (SPEC §2: +1 at every committed mutation).
Real processes; the site's heartbeat is 6 s, so a version that arrives within 2.5 s of
its commit came with the commit, not with a beat (three in a row)."""
from __future__ import annotations

import json

from tests.fixtures.federation import Federation
from tests.support import wait_for
from tests.support.edge import edge_site, join, put, stub, try_rpc


def test_site_commit_reaches_volume_show_before_the_next_heartbeat(federation: Federation) -> None:
    hub = federation.add("onprem-a")
    e = edge_site(federation, "edge-v", [hub.endpoint])
    e.heartbeat = "6s"
    try:
        join(federation, e, timeout=30)
        assert federation.gns("volume", "create", "ev", "--cluster", "edge-v").returncode == 0
        assert federation.gns("mount", "add", "/ev", "ev").returncode == 0
        s = stub(e)

        def shown() -> int:
            out = federation.gns("volume", "show", "ev", "--json")
            return int(json.loads(out.stdout)["version"]) if out.returncode == 0 else -1

        # The site learns of its new volume with the hub's next answer (up to a beat).
        first = wait_for(lambda: try_rpc(lambda: put(s, "/ev/f1", b"x")), 20, "a first write at the site")
        assert first is not None and first.version == 1
        wait_for(lambda: shown() == 1, 10, "volume show at v1")
        for n in (2, 3, 4):
            assert put(s, f"/ev/f{n}", b"x").version == n
            wait_for(lambda: shown() == n, 2.5, f"volume show at v{n}")
    finally:
        e.stop()
