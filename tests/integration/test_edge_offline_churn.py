"""Files an edge site writes and then deletes or replaces while cut off still let shipping
resume: the content of those versions is collected before it can ship, so the shipper sends
the current state as one version instead of failing on the lost content forever.
Real processes; the link is cut by a loopback proxy."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from tests.fixtures.federation import Federation
from tests.support import wait_for
from tests.support.edge import put, replica_files, start_mirrored_site, stub, try_rpc


def mirror_target(fed: Federation) -> dict[str, Any]:
    out = fed.gns("mirror", "status", "sensors-dr", "--json")
    assert out.returncode == 0, out.stderr
    target: dict[str, Any] = json.loads(out.stdout)[0]["targets"][0]
    assert target["target"] == "onprem-b"
    return target


def test_offline_put_then_delete_ships_after_reconnect(federation: Federation, tmp_path: Path) -> None:
    _, core, proxy, e = start_mirrored_site(federation, tmp_path)
    try:
        s = stub(e)
        wait_for(lambda: try_rpc(lambda: put(s, "/sensors/a", b"first")), 10, "first write")
        wait_for(lambda: replica_files(core.endpoint, "sensors")[0] == 1, 20, "live shipping")

        proxy.stall()
        e.wait_link("Down", timeout=10)
        put(s, "/sensors/gone", b"written, then deleted while cut off")
        s.Delete(pb.DeleteRequest(target=pb.Target(global_path="/sensors/gone")), timeout=10)
        put(s, "/sensors/a", b"first, replaced")
        put(s, "/sensors/a", b"first, replaced twice")
        put(s, "/sensors/kept", b"kept")
        head = int(s.VolumeState(pb.VolumeStateRequest(volume="sensors"), timeout=10).version)
        proxy.heal()
        e.wait_link("Ready", timeout=20)

        wait_for(lambda: replica_files(core.endpoint, "sensors")[0] == head, 30, "the backlog shipped")
        _, files = replica_files(core.endpoint, "sensors")
        assert set(files) == {"a", "kept"}, files
        wait_for(lambda: mirror_target(federation)["version"] == head, 15, "mirror status at the head")
        # Shipping goes on afterwards, version by version.
        put(s, "/sensors/after", b"after")
        wait_for(lambda: "after" in replica_files(core.endpoint, "sensors")[1], 20, "a later write ships")
    finally:
        e.stop()
        proxy.stop()
