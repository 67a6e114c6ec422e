"""The client's result models: ``to_json()`` is the CLI's ``--json`` shape (SPEC §4), and
``from_json()`` (what a ``--controller`` client reads back) gives the same model."""
from __future__ import annotations

import json
from typing import Any

import pytest

from federation.cli.output import to_plain
from federation.client import (
    AccessReport,
    CallerIdentity,
    Change,
    DirEntry,
    Divergence,
    EdgeBacklog,
    EdgeSite,
    EdgeToken,
    FailoverSettings,
    FileInfo,
    MirrorApplyResult,
    MirrorPlanEntry,
    MirrorPolicySummary,
    MirrorStatus,
    MirrorTargetStatus,
    MirrorVerifyReport,
    Replica,
    Resolution,
    Status,
    VolumeOwner,
    VolumeStatus,
)
from federation.client.models import grant_from_json
from namespace.acl import Grant
from namespace.models import ClusterView, Mount

TARGET = MirrorTargetStatus(target="s3://dr/x", state="Lagging", version=3, lag_versions=2,
                            lag_seconds=1.5, bytes=10, files=2, last_error=None, synced_at=12.0)
MIRROR = MirrorStatus(policy="p", volume="v", mode="continuous", targets=[TARGET])
RESOLUTION = Resolution(path="/a/b", mount="/a", volume="v", relative_path="b",
                        owner=VolumeOwner(cluster="c1", endpoint="127.0.0.1:1", epoch=2),
                        replicas=[Replica(target="c2", version=5, lag_seconds=0.0)])


def test_file_info_prints_optional_fields_only_when_set() -> None:
    plain = FileInfo(path="/a", type="file", size=3, mtime=1.5, sha256="ab", version=7, mode=0o644)
    assert json.dumps(plain.to_json()) == json.dumps(
        {"path": "/a", "type": "file", "size": 3, "mtime": 1.5, "sha256": "ab", "version": 7, "mode": 420})
    away = FileInfo(path="/a", type="dir", size=0, mtime=0.0, sha256="", version=7, mode=0,
                    served_by="c2", stale=True, mirrored_version=5)
    assert list(away.to_json())[-3:] == ["served_by", "stale", "mirrored_version"]
    assert away.is_dir and not plain.is_dir


def test_ls_entry_is_the_spec_shape() -> None:
    e = DirEntry(name="x", type="dir", size=0, mtime=0.0, mode=0)
    assert e.to_json() == {"name": "x", "type": "dir", "size": 0}


def test_resolution_adds_away_fields_only_when_stale() -> None:
    doc = RESOLUTION.to_json()
    assert list(doc) == ["path", "mount", "volume", "relative_path", "owner", "replicas"]
    assert doc["owner"] == {"cluster": "c1", "endpoint": "127.0.0.1:1", "epoch": 2}
    stale = Resolution.from_json({**doc, "stale": True, "mirrored_version": 4, "served_by": "c2"})
    assert stale.to_json()["mirrored_version"] == 4 and stale.stale


def test_dry_run_apply_result_carries_change_and_plan() -> None:
    stored = MirrorApplyResult(policy="p", action="created", volume="v", mode="manual", targets=["c2"])
    assert list(stored.to_json()) == ["policy", "action", "volume", "mode", "targets"]
    dry = MirrorApplyResult(policy="p", action="dry-run", volume="v", mode="manual", targets=["c2"],
                            change="created", plan=[MirrorPlanEntry(target="c2", files=None, bytes=None)])
    assert dry.to_json()["plan"] == [{"target": "c2", "files": None, "bytes": None}]


MODELS: list[Any] = [
    RESOLUTION,
    MIRROR,
    MirrorPolicySummary(name="p", volume="v", mode="interval", interval="5m", targets=["c2"],
                        failover=FailoverSettings(automatic=True, after="30s", priority=["c2"], promote_to=None),
                        max_lag="10m"),
    MirrorApplyResult(policy="p", action="dry-run", volume="v", mode="manual", targets=["c2"],
                      change="updated", plan=[MirrorPlanEntry(target="c2", files=1, bytes=9)]),
    MirrorVerifyReport(target="c2", version=3, missing=["a"], extra=[], mismatched=[], repaired=True,
                       ok=False, error=None),
    Status(leader="c1", clusters=[ClusterView(id="c1", state="Ready")],
           volumes=[VolumeStatus(name="v", owner="c1", epoch=1, version=3, state="Ready",
                                 diverged=[Divergence(cluster="c2", epoch=1, paths=["x"])])],
           mounts=[Mount(path="/a", volume="v")], mirrors=[MIRROR]),
    AccessReport(path="/a", subject="user:bob", groups=["g"], perms=["read"], admin_by_default=False,
                 grants=[Grant(path="/", subject="user:bob", perms=frozenset({"read"}))]),
    CallerIdentity(identity="user:bob", groups=["g"], access_control=True),
    EdgeToken(token="t", site="s", hub="c1", expires_at=1.0),
    EdgeSite(site="s", hub="c1", state="Ready", connected_since=1.0,
             backlog=EdgeBacklog(versions=1, bytes=2)),
    EdgeSite(site="s", hub="c1", state="Down", connected_since=None,
             backlog=EdgeBacklog(versions=1, bytes=2), backlog_as_of=5.0),
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_json_round_trip(model: Any) -> None:
    doc = json.loads(json.dumps(model.to_json()))  # through the wire, as the Control service sends it
    assert type(model).from_json(doc) == model
    assert to_plain(model) == doc == to_plain([model])[0]


def test_grant_round_trip_and_change_json() -> None:
    g = Grant(path="/a", subject="*", perms=frozenset({"write", "read"}))
    assert grant_from_json(g.as_dict()) == g and to_plain(g) == {"path": "/a", "subject": "*",
                                                               "perms": ["read", "write"]}
    c = Change(version=4, op="rename", path="/a/y", src="/a/x", volume="v", relative_path="y",
               size=0, mtime=0.0, mode=0)
    assert c.to_json()["src"] == "/a/x"


def test_mirror_status_finds_a_target() -> None:
    assert MIRROR.target("s3://dr/x") is TARGET and MIRROR.target("nope") is None
