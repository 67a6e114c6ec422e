"""An edge site ships its volume to an object-store mirror target through its hub (SPEC §8).

Real processes throughout: etcd, a hub controller whose environment holds the object store's
credentials (a moto S3 server), and a ``gns edge join`` process whose environment holds NO
cloud credentials and no etcd: every S3 request is made by the hub on the site's behalf.
The link is cut with a loopback TCP proxy; the edge is killed -9 while away.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import grpc
import pytest

from cloud_adapters import errors as store_errors
from cloud_adapters.registry import open_store
from edge.harness import EdgeProcess
from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.local.emulators import ServerHandle
from federation.local.ports import free_port
from federation.local.tcpproxy import TcpProxy
from federation.object_relay import METHOD, ON_BEHALF_OF, relayed_store
from mirroring.targets import ObjectStoreTarget
from tests.fixtures.federation import Federation
from tests.support import wait_for
from tests.support.edge import (
    join,
    stub,
    try_rpc,
)

POLICY = """
apiVersion: gns.io/v1alpha1
kind: MirrorPolicy
metadata: {{name: sensors-s3}}
spec:
  volume: sensors
  mode: continuous
  targets: [{{uri: "{uri}"}}]
"""


def store_state(srv: ServerHandle, uri: str) -> tuple[int, dict[str, str]]:
    """The target's committed version and its files (path -> sha256 of the bytes held)."""
    with srv.env():
        store = open_store(uri)
        version = ObjectStoreTarget(store, uri, volume="sensors").state().version
        files = {o.key: hashlib.sha256(store.read_bytes(o.key)).hexdigest()
                 for o in store.list() if not o.key.startswith(".gns/")}
    return version, files


def relay_call(endpoint: str, header: dict[str, Any], metadata: list[tuple[str, str]]) -> dict[str, Any]:
    ch = grpc.insecure_channel(endpoint)
    try:
        call = ch.stream_stream(METHOD, request_serializer=None, response_deserializer=None)
        return dict(json.loads(next(iter(call(iter([json.dumps(header).encode()]), metadata=metadata, timeout=30)))))
    finally:
        ch.close()


@pytest.mark.slow
def test_site_ships_to_object_store_through_hub(federation: Federation, moto_s3: ServerHandle, tmp_path: Path) -> None:
    with moto_s3.env():  # the hub (a core controller) has the store's credentials ...
        hub = federation.add("onprem-a")
    uri = moto_s3.new_store_uri("edge-mirror")
    other = moto_s3.new_store_uri("not-a-target")
    proxy = TcpProxy(hub.endpoint).start()
    # Beats of 1s: this test moves megabytes through the link on a loaded 2-core box.
    e = EdgeProcess(site="edge-1", hubs=[proxy.endpoint], data_dir=federation.root / "edges" / "edge-1",
                    listen=f"127.0.0.1:{free_port()}", heartbeat="1s")
    creds = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_PROFILE"}
    assert not creds & set(e.env())  # ... the site has none, nor the store's address
    try:
        join(federation, e)
        assert federation.gns("volume", "create", "sensors", "--cluster", "edge-1").returncode == 0
        assert federation.gns("mount", "add", "/sensors", "sensors").returncode == 0
        (tmp_path / "p.yaml").write_text(POLICY.format(uri=uri))
        out = federation.gns("mirror", "apply", "-f", str(tmp_path / "p.yaml"))
        assert out.returncode == 0, out.stderr
        s = stub(e)
        expected: dict[str, str] = {}

        def write(i: int, size: int = 1000) -> bool:
            data = os.urandom(size)
            header = pb.WriteChunk(header=pb.WriteHeader(target=pb.Target(global_path=f"/sensors/r{i:03d}")))
            s.Write(iter([header] + [pb.WriteChunk(data=data[k:k + (1 << 20)]) for k in range(0, size, 1 << 20)]),
                    timeout=60)
            expected[f"r{i:03d}"] = hashlib.sha256(data).hexdigest()
            return True

        wait_for(lambda: try_rpc(lambda: write(0)), 10, "first write")
        write(1)
        write(2, 9 << 20)  # a multipart upload through the relay
        wait_for(lambda: store_state(moto_s3, uri) == (3, expected), 60, "live shipping to S3")

        # Away: writes go on, the edge is killed -9 and restarted; nothing reaches the store.
        proxy.stall()
        e.wait_link("Down", timeout=10)
        for i in range(3, 8):
            write(i)
        e.kill()
        e.start()
        s = stub(e)
        wait_for(lambda: try_rpc(lambda: write(8)), 15, "write after restart")
        assert store_state(moto_s3, uri)[0] == 3
        proxy.heal()
        e.wait_link("Ready", timeout=20)
        wait_for(lambda: store_state(moto_s3, uri) == (9, expected), 60, "backlog shipped to S3")

        # The hub makes requests only for edge sites, and only to targets of their own volumes.
        with pytest.raises(store_errors.PermissionDenied):
            direct = relayed_store(uri, hub.endpoint)  # no site named: refused
            try:
                direct.stat("r000")
            finally:
                direct.close()
        for who, target in (("edge:edge-1", other), ("edge:edge-2", uri)):
            got = relay_call(hub.endpoint, {"op": "stat", "uri": target, "key": "edge-mirror/r000"},
                             [(ON_BEHALF_OF, who)])
            assert got.get("error", {}).get("type") == "PermissionDenied", (who, target, got)
        with moto_s3.env():
            assert list(open_store(other).list()) == []  # nothing written where not allowed
    finally:
        print(e.tail())  # shown by pytest only if the test failed
        e.stop()
        proxy.stop()
