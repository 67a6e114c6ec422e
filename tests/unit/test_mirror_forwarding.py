"""Where a controller sends ``Mirroring`` calls for a volume it does not own, and how long
a client waits for one.

An edge site's registered endpoint is its hub's: the hub used to forward a site volume's
``mirror sync``/``verify`` to that endpoint, itself, round and round until the caller gave
up, and the CLI's sync call had no deadline at all. Now a hub sends it down the site's link,
a controller never forwards to its own endpoint, and every call has a deadline.
"""
from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.client import Client, MirrorStatus
from federation.client.control import SYNC_TRIGGER_TIMEOUT, SYNC_WAIT_TIMEOUT, VERIFY_TIMEOUT
from federation.controller.mirror_service import MirroringService
from namespace.cache import NamespaceView
from namespace.errors import Unavailable
from namespace.models import ClusterSpec, Volume

HUB = "127.0.0.1:7001"
POLICY = {"apiVersion": "gns.io/v1alpha1", "kind": "MirrorPolicy", "metadata": {"name": "evol-dr"},
          "spec": {"volume": "evol", "mode": "continuous", "targets": [{"cluster": "onprem-b"}]}}


class Peers:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def get(self, endpoint: str) -> Any:
        self.asked.append(endpoint)
        return _Channel()


class _Channel:
    """Enough of a channel to build a stub on (nothing is called through it here)."""

    def __getattr__(self, kind: str) -> Any:
        return lambda *args, **kw: None


def _service(cluster: str, relay: dict[str, str]) -> tuple[MirroringService, Peers]:
    view = NamespaceView()
    view.clusters = {
        "onprem-a": ClusterSpec(id="onprem-a", endpoint=HUB),
        "onprem-b": ClusterSpec(id="onprem-b", endpoint="127.0.0.1:7002"),
        "edge-1": ClusterSpec(id="edge-1", provider="edge", endpoint=HUB),  # its hub's
    }
    view.alive = dict.fromkeys(view.clusters, b"")
    view.volumes = {"evol": Volume(name="evol", owner="edge-1")}
    view.policies = {"evol-dr": POLICY}
    runner: Any = SimpleNamespace(cluster=cluster, cache=SimpleNamespace(view=view))
    peers = Peers()
    return MirroringService(runner, peers, edge_relay=relay.get), peers


def test_a_hub_sends_a_linked_sites_call_down_its_link() -> None:
    svc, peers = _service("onprem-a", {"edge-1": "edge-link:edge-1"})
    assert svc._owner_stub("evol-dr") is not None
    assert peers.asked == ["edge-link:edge-1"]


def test_another_controller_sends_it_to_the_sites_hub() -> None:
    svc, peers = _service("onprem-b", {})
    assert svc._owner_stub("evol-dr") is not None
    assert peers.asked == [HUB]


def test_a_hub_never_forwards_to_itself() -> None:
    """The site is registered through this hub (its endpoint is ours) but not linked here."""
    svc, peers = _service("onprem-a", {})
    with pytest.raises(Unavailable, match="edge-1 .* not connected to onprem-a"):
        svc._owner_stub("evol-dr")
    assert peers.asked == []


class _Stub:
    def __init__(self, fail: grpc.StatusCode | None = None) -> None:
        self.timeouts: list[float | None] = []
        self.fail = fail

    def Sync(self, request: pb.MirrorSyncRequest, timeout: float | None = None) -> Iterator[pb.MirrorProgress]:
        self.timeouts.append(timeout)
        if self.fail is not None:
            raise grpc.aio.AioRpcError(self.fail, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       details="Deadline Exceeded")
        return iter([pb.MirrorProgress(target="onprem-b", done=True, version=3)])

    def Verify(self, request: pb.MirrorVerifyRequest, timeout: float | None = None) -> pb.MirrorVerifyReply:
        self.timeouts.append(timeout)
        return pb.MirrorVerifyReply()


def _status(version: int) -> MirrorStatus:
    return MirrorStatus.from_json({"policy": "evol-dr", "volume": "evol", "mode": "continuous", "targets": [{
        "target": "onprem-b", "state": "Synced", "version": version, "lag_versions": 0, "lag_seconds": 0.0,
        "bytes": 0, "files": 0}]})


def _client(stub: _Stub, monkeypatch: pytest.MonkeyPatch, shown: list[int] | None = None) -> Client:
    """A client whose Mirroring calls go to ``stub`` and whose ``mirror status`` shows the
    versions ``shown``, one per call (the last one for ever after)."""
    c = Client("http://127.0.0.1:9", watch=False)
    versions = list(shown or [3])
    monkeypatch.setattr(c, "_mirroring_stub", lambda name: (stub, "onprem-a"))
    monkeypatch.setattr(c, "mirror_status",
                        lambda name=None: [_status(versions.pop(0) if len(versions) > 1 else versions[0])])
    return c


def test_every_mirroring_call_of_the_client_has_a_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    stub = _Stub()
    with _client(stub, monkeypatch) as c:
        c.mirror_sync("evol-dr")
        c.mirror_sync("evol-dr", wait=True)
        c.mirror_sync("evol-dr", timeout=5.0)
        c.mirror_verify("evol-dr")
    assert stub.timeouts == [SYNC_TRIGGER_TIMEOUT, SYNC_WAIT_TIMEOUT, 5.0, VERIFY_TIMEOUT]
    assert all(t is not None and 0 < t <= 3600 for t in stub.timeouts)


def test_a_sync_out_of_time_is_unavailable_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    with _client(_Stub(grpc.StatusCode.DEADLINE_EXCEEDED), monkeypatch) as c, \
            pytest.raises(Unavailable, match=r"mirror sync evol-dr: not done within 30s"):
        c.mirror_sync("evol-dr")


def test_sync_wait_returns_the_status_once_it_shows_what_the_pass_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    """An edge site's statuses reach etcd with its next report, through its hub: the
    status a waiting sync returns is the one showing the version its pass reached (v3)."""
    with _client(_Stub(), monkeypatch, shown=[2, 2, 3]) as c:
        (st,) = c.mirror_sync("evol-dr", wait=True)
    assert st.targets[0].version == 3
