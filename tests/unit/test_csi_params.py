"""StorageClass parameters -> what CreateVolume makes (federation.csi.params), no servers."""
from __future__ import annotations

import pytest

from federation.csi.params import plan, targets, volume_name
from namespace.errors import InvalidInput
from namespace.paths import check_name

PVC = {"csi.storage.k8s.io/pvc/namespace": "apps", "csi.storage.k8s.io/pvc/name": "db",
       "csi.storage.k8s.io/pv/name": "pvc-1"}


@pytest.mark.parametrize("name", [
    "pvc-0b7c2d9e-1111-4c1e-9d7a-2f1c3b4a5d6e", "My_Volume.1", "x" * 200, "-a-", "ü", "A",
])
def test_volume_names_are_stable_dns_labels(name: str) -> None:
    v = volume_name(name)
    assert check_name("volume", v) == v
    assert volume_name(name) == v
    if name.startswith("pvc-"):
        assert v == name


def test_distinct_request_names_never_collide() -> None:
    assert volume_name("My_Volume") != volume_name("my-volume-")
    assert volume_name("a" * 70) != volume_name("a" * 71)


def test_defaults() -> None:
    p = plan("pvc-1", dict(PVC), "onprem-a")
    assert (p.volume, p.path, p.cluster, p.policy) == ("pvc-1", "/k8s/apps/db", "onprem-a", None)
    assert p.context() == {"path": "/k8s/apps/db", "volume": "pvc-1", "cluster": "onprem-a"}
    assert plan("pvc-1", {}, "c").path == "/k8s/pvc-1"  # without --extra-create-metadata


def test_policy_from_parameters_numbers_accepted() -> None:
    p = plan("pvc-1", {**PVC, "cluster": "aws-1", "mountPrefix": "/data//k8s/",
                       "mirrorTargets": " onprem-b , s3://b/x ,", "mirrorMode": "interval",
                       "mirrorInterval": "90", "failoverAfter": "30"}, None)
    assert p.path == "/data/k8s/apps/db" and p.cluster == "aws-1"
    assert p.policy == {
        "apiVersion": "gns.io/v1alpha1", "kind": "MirrorPolicy", "metadata": {"name": "pvc-1"},
        "spec": {"volume": "pvc-1", "mode": "interval", "interval": "90s",
                 "targets": [{"cluster": "onprem-b"}, {"uri": "s3://b/x"}],
                 "failover": {"automatic": True, "after": "30s"}},
    }
    assert targets("") == []


def test_every_problem_at_once() -> None:
    with pytest.raises(InvalidInput) as info:
        plan("", {"cluster": "Bad_Name", "mountPrefix": "rel", "mirrorMode": "often",
                  "failoverAfter": "soon", "mirrorInterval": "5m", "extra": "1"}, None)
    msg = str(info.value)
    for part in ("name is required", "extra", "parameters.cluster", "mountPrefix", "mirrorMode",
                 "failoverAfter", "mirrorInterval", "mirrorTargets is required"):
        assert part in msg, part


def test_owner_is_required_somewhere() -> None:
    with pytest.raises(InvalidInput, match="parameters.cluster is required"):
        plan("pvc-1", dict(PVC), None)
