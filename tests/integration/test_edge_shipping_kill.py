"""A backlog drain survives kill -9 of the hub and of the edge mid-drain (SPEC §8).

Real processes: etcd, a hub and a core controller, a ``gns edge join`` process behind a
loopback TCP proxy the test owns. Versions travel in groups (one upload call and one commit
call per group); the core replica applies each version in its own transaction. Checked
while draining and after each kill: the replica only ever holds a whole prefix of the site's
versions (files of v1..v, nothing of a later version), and the drain resumes where the
replica stopped until it holds every version, in order.
"""
from __future__ import annotations

import hashlib
import os
import time

import grpc
import pytest

from edge.harness import EdgeProcess
from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.local.ports import free_port
from federation.local.tcpproxy import TcpProxy
from tests.fixtures.federation import Federation
from tests.support import wait_for
from tests.support.edge import (
    POLICY,
    join,
    put,
    stub,
    try_rpc,
)

SIZE = 192 << 10


def replica(endpoint: str) -> tuple[int, dict[str, str], int]:
    """(version before, files, version after) of the core replica of ``sensors``."""
    ch = grpc.insecure_channel(endpoint)
    try:
        rs = pb_grpc.ReplicationStub(ch)
        before = int(rs.State(pb.ReplicaStateRequest(volume="sensors"), timeout=10).version)
        files = {f.path: f.sha256 for f in rs.Files(pb.ReplicaFilesRequest(volume="sensors"), timeout=10)}
        after = int(rs.State(pb.ReplicaStateRequest(volume="sensors"), timeout=10).version)
        return before, files, after
    finally:
        ch.close()


def check_prefix(endpoint: str, written: list[tuple[str, str]]) -> int:
    """The replica holds exactly the files of versions 1..v (version v = written[v-1])."""
    before, files, after = replica(endpoint)
    lo = {p: h for p, h in written[:before]}
    hi = {p: h for p, h in written[:after]}
    assert lo.items() <= files.items() <= hi.items(), (before, after, sorted(set(files) ^ set(hi))[:5])
    return before


def drain_until(endpoint: str, written: list[tuple[str, str]], version: int, timeout: float) -> int:
    """Poll (checking the prefix rule each time) until the replica holds ``version``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = check_prefix(endpoint, written)
        except grpc.RpcError:
            v = -1  # the core is briefly busy: ask again
        if v >= version:
            return v
        assert time.monotonic() < deadline, f"replica at v{v}, waiting for v{version}"
        time.sleep(0.02)


@pytest.mark.slow
def test_drain_survives_kill9_of_hub_and_edge(federation: Federation, tmp_path: os.PathLike[str]) -> None:
    hub = federation.add("onprem-a")
    core = federation.add("onprem-b")
    proxy = TcpProxy(hub.endpoint).start()
    e = EdgeProcess(site="edge-1", hubs=[proxy.endpoint], data_dir=federation.root / "edges" / "edge-1",
                    listen=f"127.0.0.1:{free_port()}", heartbeat="1s")
    written: list[tuple[str, str]] = []
    try:
        join(federation, e, timeout=60)  # process start-up on a loaded box
        assert federation.gns("volume", "create", "sensors", "--cluster", "edge-1").returncode == 0
        assert federation.gns("mount", "add", "/sensors", "sensors").returncode == 0
        policy = federation.root / "p.yaml"
        policy.write_text(POLICY)
        assert federation.gns("mirror", "apply", "-f", str(policy)).returncode == 0
        s = stub(e)

        def write() -> bool:
            data = os.urandom(SIZE)
            name = f"r{len(written):03d}"
            put(s, f"/sensors/{name}", data)
            written.append((name, hashlib.sha256(data).hexdigest()))
            return True

        wait_for(lambda: try_rpc(write), 10, "first write")
        drain_until(core.endpoint, written, 1, 30)

        # Backlog 1, then kill -9 of the hub mid-drain.
        proxy.stall()
        e.wait_link("Down", timeout=10)
        for _ in range(80):
            write()
        proxy.heal()
        mid = drain_until(core.endpoint, written, 3, 60)
        assert mid < len(written), "drained before the kill: nothing tested"
        federation.kill("onprem-a")
        at_kill = check_prefix(core.endpoint, written)
        federation.start("onprem-a")
        drain_until(core.endpoint, written, len(written), 120)

        # Backlog 2, then kill -9 of the edge mid-drain, restarted without a token.
        proxy.stall()
        e.wait_link("Down", timeout=10)
        for _ in range(240):
            write()
        proxy.heal()
        drain_until(core.endpoint, written, 83, 120)
        e.kill()
        at_edge_kill = check_prefix(core.endpoint, written)
        assert at_edge_kill < len(written), "drained before the edge kill: nothing tested"
        e.start()
        drain_until(core.endpoint, written, len(written), 120)
        assert replica(core.endpoint)[1] == dict(written)
        shipped = wait_for(lambda: (got := e.status()["shipped"].get("sensors->onprem-b")) and got[-1] == len(written)
                           and got, 10, "shipping record")
        # This edge process resumed at the replica's version (a group the killed process had
        # already handed over may still land after the kill: it is not sent again), then
        # shipped every later version once, in order.
        assert shipped == list(range(shipped[0], len(written) + 1)) and shipped[0] > at_edge_kill, shipped
        print(f"hub killed at v{at_kill}, edge killed at v{at_edge_kill}")
    finally:
        print(e.tail())  # shown by pytest only if the test failed
        e.stop()
        proxy.stop()
