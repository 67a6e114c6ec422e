"""``gns resolve``'s ``replicas`` (SPEC §4) after a failover: the policy's targets other than
the owner, plus the former owner the new owner mirrors to (SPEC §7); never the owner itself,
whose record from when it was a target stays in etcd, frozen at the version it last got."""
from __future__ import annotations

import json
import time

from federation.resolution import describe, replicas_of
from mirroring.status import TargetStatus
from namespace import schema
from namespace.cache import NamespaceView
from namespace.models import ClusterSpec, Mount, Volume, VolumeState

POLICY = {
    "apiVersion": "gns.io/v1alpha1", "kind": "MirrorPolicy", "metadata": {"name": "sensors-dr"},
    "spec": {"volume": "sensors", "targets": [{"cluster": "onprem-b"}, {"uri": "s3://dr-bucket/sensors"}],
             "failover": {"automatic": True, "promoteTo": "aws-1"}},
}


def _status(target: str, version: int, *, policy: str = "sensors-dr", volume: str = "sensors",
            pending_since: float | None = None) -> bytes:
    return TargetStatus(policy=policy, volume=volume, target=target, version=version,
                        synced_at=1.0, updated=1.0, pending_since=pending_since).dump()


def failed_over_view() -> NamespaceView:
    """sensors: owned by onprem-a, mirrored to onprem-b (v27) and S3; failed over to
    onprem-b, which is at v30; S3 and the returned onprem-a hold v30 too."""
    now = time.time()
    view = NamespaceView()
    for cid in ("onprem-a", "onprem-b", "aws-1"):
        view.apply(schema.cluster(cid), ClusterSpec(id=cid).dump())
        view.apply(schema.alive(cid), b"1")
    view.apply(schema.volume("sensors"), Volume(
        name="sensors", owner="onprem-b", epoch=2, base_version=27, former_owners=["onprem-a"]).dump())
    view.apply(schema.volstate("sensors"), VolumeState(version=30, epoch=2, updated=now - 1).dump())
    view.apply(schema.mount("/sensors"), Mount(path="/sensors", volume="sensors").dump())
    view.apply(schema.policy("sensors-dr"), json.dumps(POLICY).encode())
    # What onprem-a's controller wrote when onprem-b was its target: left behind at v27.
    view.apply(schema.mirror_status("sensors-dr", "onprem-b"), _status("onprem-b", 27, pending_since=now - 219))
    view.apply(schema.mirror_status("sensors-dr", "s3://dr-bucket/sensors"), _status("s3://dr-bucket/sensors", 30))
    view.apply(schema.mirror_status("sensors-dr", "onprem-a"), _status("onprem-a", 30))
    return view


def test_the_owner_is_never_its_own_replica_after_a_failover() -> None:
    view = failed_over_view()
    assert [r["target"] for r in replicas_of(view, "sensors")] == ["onprem-a", "s3://dr-bucket/sensors"]
    answer = describe(view, "/sensors/x")
    assert answer["owner"]["cluster"] == "onprem-b"
    assert [r["target"] for r in answer["replicas"]] == ["onprem-a", "s3://dr-bucket/sensors"]
    assert all(r["version"] == 30 and r["lag_seconds"] == 0.0 for r in answer["replicas"])


def test_records_of_targets_no_policy_has_now_are_not_replicas() -> None:
    view = failed_over_view()
    # A record of a target the policy no longer names, and one of a policy that is gone.
    view.apply(schema.mirror_status("sensors-dr", "aws-1"), _status("aws-1", 30))
    view.apply(schema.mirror_status("gone-dr", "aws-1"), _status("aws-1", 30, policy="gone-dr"))
    # A policy of another volume naming the same cluster says nothing about this one.
    other = {**POLICY, "metadata": {"name": "logs-dr"},
             "spec": {"volume": "logs", "targets": [{"cluster": "aws-1"}]}}
    view.apply(schema.policy("logs-dr"), json.dumps(other).encode())
    view.apply(schema.mirror_status("logs-dr", "aws-1"), _status("aws-1", 30, policy="logs-dr"))
    assert [r["target"] for r in replicas_of(view, "sensors")] == ["onprem-a", "s3://dr-bucket/sensors"]


def test_before_the_failover_the_targets_are_the_replicas() -> None:
    view = failed_over_view()
    view.apply(schema.volume("sensors"), Volume(name="sensors", owner="onprem-a").dump())
    view.apply(schema.mirror_status("sensors-dr", "onprem-a"), None)
    view.apply(schema.mirror_status("sensors-dr", "onprem-b"), _status("onprem-b", 30))
    assert [r["target"] for r in replicas_of(view, "sensors")] == ["onprem-b", "s3://dr-bucket/sensors"]
