"""Mirror status (SPEC §4 shape): state and lag computed from status records and head version."""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from mirroring.policy import MirrorPolicy
from mirroring.status import TargetStatus, status_key, statuses, target_state
from namespace import schema
from namespace.cache import NamespaceView
from namespace.models import ClusterSpec, Volume, VolumeState

NOW = 1_000_000.0
TARGET_FIELDS = {"target", "state", "version", "lag_versions", "lag_seconds", "bytes", "files", "last_error"}


def policy(name: str = "p1", mode: str = "continuous", max_lag: str = "60s", **spec: Any) -> MirrorPolicy:
    body: dict[str, Any] = {
        "volume": "sensors", "mode": mode, "maxLag": max_lag,
        "targets": [{"cluster": "onprem-b"}, {"uri": "s3://dr-bucket/sensors/"}],
    }
    if mode == "interval":
        body["interval"] = "5m"
    body.update(spec)
    return MirrorPolicy.model_validate({"metadata": {"name": name}, "spec": body})


def view_with(*policies: MirrorPolicy, head: int = 10, records: Sequence[TargetStatus] = ()) -> NamespaceView:
    view = NamespaceView(
        clusters={c: ClusterSpec(id=c) for c in ("onprem-a", "onprem-b")},
        volumes={"sensors": Volume(name="sensors", owner="onprem-a")},
        volstates={"sensors": VolumeState(version=head)},
    )
    for p in policies:
        view.apply(schema.policy(p.name), p.to_json())
    for r in records:
        view.apply(schema.mirror_status(r.policy, r.target), r.dump())
    return view


def rec(target: str = "onprem-b", **kw: Any) -> TargetStatus:
    return TargetStatus(policy="p1", volume="sensors", target=target, **kw)


def state(st: TargetStatus | None, head: int = 10, mode: str = "continuous", max_lag: float = 60.0) -> dict[str, Any]:
    return target_state(st, mode=mode, head=head, max_lag=max_lag, now=NOW)


def test_synced_when_caught_up() -> None:
    s = state(rec(version=10, synced_at=NOW - 500, bytes=1234, files=3))
    assert s["state"] == "Synced"
    assert s["lag_versions"] == 0 and s["lag_seconds"] == 0.0
    assert (s["bytes"], s["files"], s["last_error"]) == (1234, 3, None)


def test_target_ahead_of_published_head_is_not_negative() -> None:
    # volstate in etcd is batched: a target may briefly report a newer version.
    s = state(rec(version=12, synced_at=NOW - 1))
    assert s["lag_versions"] == 0 and s["state"] == "Synced"


def test_lag_clock_runs_from_pending_since() -> None:
    s = state(rec(version=8, synced_at=NOW - 500, pending_since=NOW - 20))
    assert s["lag_versions"] == 2
    assert s["lag_seconds"] == pytest.approx(20.0)
    assert s["state"] == "Syncing"


def test_lag_without_pending_since_counts_from_the_head_not_the_last_sync() -> None:
    # Idle for 90 s after the last sync, then a write 1 s ago: the lag is 1 s, not 90 s.
    s = target_state(rec(version=8, synced_at=NOW - 90), mode="continuous", head=10,
                     max_lag=60.0, now=NOW, head_updated=NOW - 1)
    assert s["lag_seconds"] == pytest.approx(1.0)
    assert s["state"] == "Syncing"


def test_syncing_needs_a_live_owner_and_a_fresh_record() -> None:
    fresh = rec(version=5, syncing=True, pending_since=NOW - 1, updated=NOW - 1)
    assert target_state(fresh, mode="manual", head=10, max_lag=60.0, now=NOW)["state"] == "Syncing"
    dead = target_state(fresh, mode="manual", head=10, max_lag=60.0, now=NOW, owner_ready=False)
    assert dead["state"] == "Lagging"
    stale = rec(version=5, syncing=True, pending_since=NOW - 1, updated=NOW - 30)
    assert target_state(stale, mode="continuous", head=10, max_lag=60.0, now=NOW)["state"] == "Syncing"
    assert target_state(stale, mode="manual", head=10, max_lag=60.0, now=NOW)["state"] == "Lagging"


def test_lagging_beats_syncing() -> None:
    # A continuous mirror that cannot keep up is always syncing; it must still show Lagging.
    s = state(rec(version=5, syncing=True, pending_since=NOW - 61))
    assert s["state"] == "Lagging"
    s = state(rec(version=5, syncing=True, pending_since=NOW - 59))
    assert s["state"] == "Syncing"


def test_error_only_while_the_last_attempt_failed() -> None:
    s = state(rec(version=9, synced_at=NOW - 10, last_error="boom", error_at=NOW - 5))
    assert (s["state"], s["last_error"], s["error_at"]) == ("Error", "boom", NOW - 5)
    # A later success clears the state and the error shown (the record keeps it): next
    # to `Synced`, an old error reads as a current one.
    s = state(rec(version=10, synced_at=NOW - 1, last_error="boom", error_at=NOW - 5))
    assert (s["state"], s["last_error"], s["error_at"]) == ("Synced", None, None)
    # No error time: the last attempt failed.
    assert state(rec(version=10, last_error="boom"))["state"] == "Error"


def test_future_clock_is_clamped() -> None:
    s = state(rec(version=8, pending_since=NOW + 30))
    assert s["lag_seconds"] == 0.0


@pytest.mark.parametrize(
    ("mode", "head", "expected"),
    [("continuous", 10, "Syncing"), ("interval", 10, "Syncing"), ("sync", 0, "Syncing"),
     ("manual", 10, "Lagging"), ("manual", 0, "Synced")],
)
def test_target_without_a_record(mode: str, head: int, expected: str) -> None:
    s = state(None, head=head, mode=mode)
    assert s["state"] == expected
    assert s["version"] == 0 and s["lag_versions"] == head and s["lag_seconds"] == 0.0
    # with the head's publication time known, a target that lacks it lags at least since
    s = target_state(None, mode=mode, head=head, max_lag=60.0, now=NOW, head_updated=NOW - 7)
    assert s["lag_seconds"] == (pytest.approx(7.0) if head else 0.0)


def test_statuses_shape_order_and_names() -> None:
    p2 = policy("b-policy")
    p1 = policy("a-policy", max_lag="10s")
    records = [
        TargetStatus(policy="a-policy", volume="sensors", target="s3://dr-bucket/sensors",
                     version=10, synced_at=NOW - 3, bytes=99, files=2),
        TargetStatus(policy="a-policy", volume="sensors", target="onprem-b",
                     version=7, pending_since=NOW - 11),
    ]
    out = statuses(view_with(p2, p1, records=records), now=NOW)
    assert [e["policy"] for e in out] == ["a-policy", "b-policy"]
    first = out[0]
    assert first["volume"] == "sensors"
    assert [t["target"] for t in first["targets"]] == ["onprem-b", "s3://dr-bucket/sensors"]
    for t in first["targets"]:
        assert TARGET_FIELDS <= set(t)
    b, s3 = first["targets"]
    assert (b["state"], b["lag_versions"], b["lag_seconds"]) == ("Lagging", 3, pytest.approx(11.0))
    assert (s3["state"], s3["bytes"], s3["files"]) == ("Synced", 99, 2)
    json.dumps(out)  # plain JSON data


def test_statuses_for_one_policy_and_unknown() -> None:
    view = view_with(policy("a"), policy("b"))
    assert [e["policy"] for e in statuses(view, "b", now=NOW)] == ["b"]
    assert statuses(view, "zzz", now=NOW) == []


def test_missing_volume_state_and_malformed_records_do_not_break_status() -> None:
    view = view_with(policy("p1"))
    view.volstates.clear()
    view.mirror_status[status_key("p1", "onprem-b")] = {"nonsense": True}
    view.policies["broken"] = {"spec": 1}
    out = statuses(view, now=NOW)
    assert [e["policy"] for e in out] == ["p1"]
    assert out[0]["targets"][0]["lag_versions"] == 0


def test_status_key_matches_the_etcd_schema() -> None:
    key = schema.mirror_status("p1", "s3://dr-bucket/x")
    assert key.decode() == schema.MIRRORS + status_key("p1", "s3://dr-bucket/x")
    view = NamespaceView()
    view.apply(key, rec(target="s3://dr-bucket/x").dump())
    assert status_key("p1", "s3://dr-bucket/x") in view.mirror_status
