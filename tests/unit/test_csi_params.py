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
                       "mirrorTargets": " onprem-b , s3://bkt/x ,", "mirrorMode": "interval",
                       "mirrorInterval": "90", "failoverAfter": "30"}, None)
    assert p.path == "/data/k8s/apps/db" and p.cluster == "aws-1"
    assert p.policy == {
        "apiVersion": "gns.io/v1alpha1", "kind": "MirrorPolicy", "metadata": {"name": "pvc-1"},
        "spec": {"volume": "pvc-1", "mode": "interval", "interval": "90s",
                 "targets": [{"cluster": "onprem-b"}, {"uri": "s3://bkt/x"}],
                 "failover": {"automatic": True, "after": "30s", "promoteTo": "onprem-b"}},
    }
    assert targets("") == []


def test_large_and_fractional_numbers_keep_a_duration_the_policy_takes() -> None:
    """``f"{seconds:g}s"`` wrote a million seconds as ``1e+06s``, which the policy then refused
    as an invalid duration (the parameter was fine)."""
    p = plan("pvc-1", {**PVC, "mirrorTargets": "onprem-b", "mirrorMode": "interval",
                       "mirrorInterval": "1000000", "failoverAfter": "0.5"}, "onprem-a")
    assert p.policy is not None
    assert p.policy["spec"]["interval"] == "1000000s"
    assert p.policy["spec"]["failover"]["after"] == "0.5s"


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


STORE = "s3://dr-bucket/k8s"


def _failover(parameters: dict[str, str]) -> dict[str, object]:
    policy = plan("pvc-1", {**PVC, **parameters}, "onprem-a").policy
    assert policy is not None
    return dict(policy["spec"]["failover"])


def test_promote_to_defaults_to_the_first_cluster_target() -> None:
    # what the shipped gns-continuous class asks for: mirror policies refuse automatic
    # failover to a store without promoteTo
    got = _failover({"mirrorTargets": f"{STORE},onprem-b,aws-1", "failoverAfter": "30s"})
    assert got == {"automatic": True, "after": "30s", "promoteTo": "onprem-b"}
    got = _failover({"mirrorTargets": f"onprem-b,{STORE}", "failoverAfter": "30s",
                     "failoverPromoteTo": "aws-1"})
    assert got["promoteTo"] == "aws-1"
    # only cluster targets: nothing to hydrate, the policy stays as before
    assert "promoteTo" not in _failover({"mirrorTargets": "onprem-b", "failoverAfter": "30"})


def test_promote_to_required_with_only_store_targets() -> None:
    with pytest.raises(InvalidInput, match="failoverPromoteTo is required"):
        plan("pvc-1", {"mirrorTargets": STORE, "failoverAfter": "30s"}, "onprem-a")
    p = plan("pvc-1", {"mirrorTargets": STORE, "failoverAfter": "30s",
                       "failoverPromoteTo": "aws-1"}, "onprem-a")
    assert p.policy is not None and p.policy["spec"]["failover"]["promoteTo"] == "aws-1"
    with pytest.raises(InvalidInput) as info:
        plan("pvc-1", {"mirrorTargets": STORE, "failoverPromoteTo": "Bad_Name"}, "onprem-a")
    assert "only meaningful with failoverAfter" in str(info.value)
    assert "parameters.failoverPromoteTo:" in str(info.value)


def test_malformed_targets_listed_with_the_rest() -> None:
    with pytest.raises(InvalidInput) as info:
        plan("pvc-1", {"bogus": "1", "mirrorTargets": "ftp://x,Bad_Cluster",
                       "mirrorMode": "weird"}, "onprem-a")
    msg = str(info.value)
    for part in ("bogus", "ftp", "Bad_Cluster", "weird"):
        assert part in msg, part
