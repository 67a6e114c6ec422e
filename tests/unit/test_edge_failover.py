"""SPEC §8: the leader never promotes a volume whose owner is an edge site, however long it is away."""
from __future__ import annotations

from mirroring.policy.document import parse_policy
from mirroring.promotion import due
from namespace.cache import NamespaceView
from namespace.models import ClusterSpec, Volume

DOC = """
apiVersion: gns.io/v1alpha1
kind: MirrorPolicy
metadata: {name: %s}
spec:
  volume: %s
  mode: continuous
  targets: [{cluster: onprem-b}]
  failover: {automatic: true, after: 30s}
"""


def test_edge_owned_volume_never_due_for_automatic_failover() -> None:
    view = NamespaceView()
    view.clusters = {
        "edge-1": ClusterSpec(id="edge-1", provider="edge"),
        "onprem-a": ClusterSpec(id="onprem-a", provider="onprem"),
        "onprem-b": ClusterSpec(id="onprem-b", provider="onprem"),
    }
    view.alive = {"onprem-b": b""}  # both owners are Down
    view.volumes = {"sensors": Volume(name="sensors", owner="edge-1"), "core": Volume(name="core", owner="onprem-a")}
    view.policies = {
        "sensors-dr": parse_policy(DOC % ("sensors-dr", "sensors")).model_dump(mode="json"),
        "core-dr": parse_policy(DOC % ("core-dr", "core")).model_dump(mode="json"),
    }
    gone = {"edge-1": 0.0, "onprem-a": 0.0}
    picked = [vol.name for _, vol in due(view, gone, now=86400.0 * 365)]
    assert picked == ["core"]
