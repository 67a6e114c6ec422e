"""An edge site ships its volume to a ``file://`` mirror target (a directory on its hub's
machine, such as an NFS export) through its hub, as it does to an object store (SPEC §8)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cloud_adapters.registry import open_store
from mirroring.targets import ObjectStoreTarget
from tests.fixtures.federation import Federation
from tests.support import wait_for
from tests.support.edge import edge_site, join, put, stub, try_rpc
from tests.support.mirrors import apply_policy, make_volume

POLICY = """
apiVersion: gns.io/v1alpha1
kind: MirrorPolicy
metadata: {{name: sensors-nfs}}
spec:
  volume: sensors
  mode: continuous
  targets: [{{uri: "{uri}"}}]
"""


def held(uri: str) -> tuple[int, dict[str, str]]:
    """The target's committed version and its files (path -> sha256 of the bytes held)."""
    store = open_store(uri)
    if not Path(uri[len("file://"):]).is_dir():
        return 0, {}  # the site has not shipped yet: the hub makes the directory then
    version = ObjectStoreTarget(store, uri, volume="sensors").state().version
    return version, {o.key: hashlib.sha256(store.read_bytes(o.key)).hexdigest()
                     for o in store.list() if not o.key.startswith(".gns/")}


def test_site_ships_to_a_file_target_through_its_hub(federation: Federation, tmp_path: Path) -> None:
    hub = federation.add("onprem-a")
    uri = f"file://{tmp_path}/nfs/sensors"
    e = edge_site(federation, "edge-f", [hub.endpoint])
    try:
        join(federation, e)
        make_volume(federation, "sensors", "edge-f")
        apply_policy(federation, tmp_path, POLICY.format(uri=uri))
        s = stub(e)
        expected: dict[str, str] = {}
        for i, size in enumerate((10, 100_000, 3 << 20)):
            data = os.urandom(size)
            wait_for(lambda: try_rpc(lambda: put(s, f"/sensors/r{i}", data)), 15, f"write r{i}")
            expected[f"r{i}"] = hashlib.sha256(data).hexdigest()
        wait_for(lambda: held(uri) == (3, expected), 60, "shipping to the file target")
    finally:
        print(e.tail())  # shown by pytest only if the test failed
        e.stop()
