"""`gns mirror apply/list/status/remove` through the real CLI on a real etcd (no controllers).

A cluster registry and a volume are written straight into etcd; each command runs as a
subprocess, the way a user runs it. Invalid policies must exit 2 with one error line that
lists every problem, and leave etcd byte-for-byte as it was.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from federation.local.etcd_server import EtcdCluster
from mirroring.status import TargetStatus
from namespace import schema
from namespace.control import ControlPlane
from namespace.etcd import Etcd, EtcdConfig
from namespace.models import ClusterSpec
from tests.fixtures.federation import assert_error

T = TypeVar("T")

POLICY = """\
apiVersion: gns.io/v1alpha1
kind: MirrorPolicy
metadata:
  name: sensors-dr
spec:
  volume: sensors
  mode: continuous
  targets:
    - cluster: onprem-b
    - uri: s3://dr-bucket/sensors
    - uri: file:///mnt/nfs/sensors
  failover:
    automatic: true
    after: 30s
    priority: [onprem-b, s3://dr-bucket/sensors]
    promoteTo: aws-1
  maxLag: 60s
"""

INVALID = """\
apiVersion: gns.io/v1alpha1
kind: MirrorPolicy
metadata:
  name: broken
spec:
  volume: nope
  mode: sync
  colour: blue
  targets:
    - cluster: onprem-b
    - cluster: onprem-b
    - uri: ftp://dr-bucket/x
    - uri: s3://dr-bucket/x
"""


async def _with_etcd(urls: str, fn: Callable[[Etcd], Awaitable[T]]) -> T:
    etcd = await Etcd.connect(EtcdConfig.parse(urls))
    try:
        return await fn(etcd)
    finally:
        await etcd.close()


def _seed(urls: str) -> None:
    async def seed(etcd: Etcd) -> None:
        for cid in ("onprem-a", "onprem-b", "aws-1"):
            await etcd.put(schema.cluster(cid), ClusterSpec(id=cid).dump())
        await ControlPlane(etcd).create_volume("sensors", "onprem-a")
        await ControlPlane(etcd).create_volume("logs", "aws-1")

    asyncio.run(_with_etcd(urls, seed))


def _snapshot(urls: str) -> list[tuple[bytes, bytes]]:
    async def snap(etcd: Etcd) -> list[tuple[bytes, bytes]]:
        kvs, _ = await etcd.get_prefix(b"/gns/")
        return sorted(kvs)

    return asyncio.run(_with_etcd(urls, snap))


def _put(urls: str, key: bytes, value: bytes) -> None:
    asyncio.run(_with_etcd(urls, lambda etcd: etcd.put(key, value)))


@pytest.fixture
def seeded(etcd: EtcdCluster) -> str:
    _seed(etcd.urls)
    return etcd.urls


def gns(urls: str, *args: str, input: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GNS_")}
    env["GNS_HOME"] = str(cwd / ".gns") if cwd else "/nonexistent-gns-home"
    env["COLUMNS"] = "200"  # rich wraps tables at 80 columns when piped
    return subprocess.run(
        [sys.executable, "-m", "federation.cli.main", *args, "--etcd", urls],
        input=input, capture_output=True, text=True, env=env, timeout=60, cwd=cwd,
    )


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_invalid_policy_lists_every_problem_and_stores_nothing(seeded: str, tmp_path: Path) -> None:
    before = _snapshot(seeded)
    proc = gns(seeded, "mirror", "apply", "-f", write(tmp_path, INVALID))
    assert_error(proc, 2, "invalid mirror policy 'broken'")
    line = proc.stderr.strip()
    for fragment in (
        "spec.colour: unknown field",
        "spec.targets[2].uri:",               # bad scheme
        "unknown scheme 'ftp'",
        "spec.volume: unknown volume 'nope'",
        "spec.targets[1]: duplicate target onprem-b",
        "spec.targets[3].uri: mode 'sync' needs cluster targets",
    ):
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert proc.stdout == ""
    assert _snapshot(seeded) == before


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("spec: [unclosed", "not valid YAML or JSON"),
        ("- just\n- a list\n", "must be a YAML or JSON mapping"),
        (POLICY.replace("cluster: onprem-b", "cluster: onprem-a"), "is the owner of volume 'sensors'"),
        (POLICY.replace("maxLag: 60s", "maxLag: 60s\n  extra: 1"), "spec.extra: unknown field"),
        (POLICY.replace("promoteTo: aws-1", "promoteTo: aws-1\n    colour: red"),
         "spec.failover.colour: unknown field"),
        (POLICY.replace("uri: s3://", "uri: http://"), "unknown scheme 'http'"),
        (POLICY.replace("mode: continuous", "mode: interval"), "spec.interval: required"),
        (POLICY.replace("after: 30s", "after: 0s"), "spec.failover.after: must be longer than 0"),
        (POLICY.replace("[onprem-b,", "[gcp-1,"), "'gcp-1' is not one of the policy's targets"),
    ],
)
def test_each_invalid_form_exits_2_and_stores_nothing(seeded: str, tmp_path: Path, text: str, fragment: str) -> None:
    before = _snapshot(seeded)
    proc = gns(seeded, "mirror", "apply", "-f", "-", input=text)
    assert_error(proc, 2, fragment)
    assert _snapshot(seeded) == before


def test_dry_run_stores_nothing(seeded: str, tmp_path: Path) -> None:
    before = _snapshot(seeded)
    proc = gns(seeded, "mirror", "apply", "-f", write(tmp_path, POLICY), "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["action"] == "dry-run" and out["change"] == "created"
    assert [p["target"] for p in out["plan"]] == [
        "onprem-b", "s3://dr-bucket/sensors", "file:///mnt/nfs/sensors"
    ]
    assert _snapshot(seeded) == before
    human = gns(seeded, "mirror", "apply", "-f", write(tmp_path, POLICY), "--dry-run")
    assert human.returncode == 0, human.stderr
    assert "would be created" in human.stdout and "nothing stored" in human.stdout


def test_apply_list_status_reapply_remove(seeded: str, tmp_path: Path) -> None:
    path = write(tmp_path, POLICY)
    proc = gns(seeded, "mirror", "apply", "-f", path, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["policy"] == "sensors-dr" and out["action"] == "created"
    assert out["volume"] == "sensors"
    assert out["targets"] == ["onprem-b", "s3://dr-bucket/sensors", "file:///mnt/nfs/sensors"]

    stored = dict(_snapshot(seeded))[schema.policy("sensors-dr")]
    assert json.loads(stored)["spec"]["failover"]["promoteTo"] == "aws-1"

    # list
    proc = gns(seeded, "mirror", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    [row] = json.loads(proc.stdout)
    assert row["name"] == "sensors-dr" and row["volume"] == "sensors" and row["mode"] == "continuous"
    assert row["targets"] == out["targets"]
    assert row["failover"] == {"automatic": True, "after": "30s",
                               "priority": ["onprem-b", "s3://dr-bucket/sensors"], "promoteTo": "aws-1"}
    human = gns(seeded, "mirror", "list")
    assert human.returncode == 0 and "sensors-dr" in human.stdout

    # status: no records yet, then one written as the owner would
    proc = gns(seeded, "mirror", "status", "--json")
    assert proc.returncode == 0, proc.stderr
    [entry] = json.loads(proc.stdout)
    assert entry["policy"] == "sensors-dr" and entry["volume"] == "sensors"
    assert [t["target"] for t in entry["targets"]] == out["targets"]
    for t in entry["targets"]:
        assert {"target", "state", "version", "lag_versions", "lag_seconds", "bytes", "files",
                "last_error"} <= set(t)
        assert t["version"] == 0 and t["state"] == "Syncing"
    _put(seeded, schema.mirror_status("sensors-dr", "s3://dr-bucket/sensors"), TargetStatus(
        policy="sensors-dr", volume="sensors", target="s3://dr-bucket/sensors",
        version=0, synced_at=1.0, bytes=10, files=1, updated=1.0,
    ).dump())
    proc = gns(seeded, "mirror", "status", "sensors-dr", "--json")
    assert proc.returncode == 0, proc.stderr
    s3 = json.loads(proc.stdout)[0]["targets"][1]
    assert (s3["state"], s3["bytes"], s3["files"]) == ("Synced", 10, 1)
    human = gns(seeded, "mirror", "status")
    assert human.returncode == 0 and "s3://dr-bucket/sensors" in human.stdout
    assert_error(gns(seeded, "mirror", "status", "nope"), 3, "nope")
    gstatus = gns(seeded, "status", "--json")
    assert gstatus.returncode == 0, gstatus.stderr
    assert json.loads(gstatus.stdout)["mirrors"][0]["policy"] == "sensors-dr"

    # re-apply the same document: unchanged, nothing written
    before = _snapshot(seeded)
    proc = gns(seeded, "mirror", "apply", "-f", path, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["action"] == "unchanged"
    assert _snapshot(seeded) == before

    # change it: updated; the dropped target's status goes with it
    changed = POLICY.replace("    - uri: s3://dr-bucket/sensors\n", "").replace(
        "[onprem-b, s3://dr-bucket/sensors]", "[onprem-b]")
    proc = gns(seeded, "mirror", "apply", "-f", "-", input=changed)
    assert proc.returncode == 0, proc.stderr
    assert "sensors-dr updated" in proc.stdout
    keys = dict(_snapshot(seeded))
    assert schema.mirror_status("sensors-dr", "s3://dr-bucket/sensors") not in keys
    assert json.loads(keys[schema.policy("sensors-dr")])["spec"]["targets"] == [
        {"cluster": "onprem-b"}, {"uri": "file:///mnt/nfs/sensors"}]

    # remove: policy and its status keys gone; removing again is "not found"
    _put(seeded, schema.mirror_status("sensors-dr", "onprem-b"), TargetStatus(
        policy="sensors-dr", volume="sensors", target="onprem-b").dump())
    proc = gns(seeded, "mirror", "remove", "sensors-dr")
    assert proc.returncode == 0, proc.stderr
    keys = dict(_snapshot(seeded))
    assert not [k for k in keys if k.startswith(schema.POLICIES.encode()) or k.startswith(schema.MIRRORS.encode())]
    assert_error(gns(seeded, "mirror", "remove", "sensors-dr"), 3, "sensors-dr")
    proc = gns(seeded, "mirror", "list", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout) == []


def test_moving_a_policy_to_another_volume_says_so(seeded: str) -> None:
    """Re-applying a policy name with another volume moves the policy: the first volume is
    no longer mirrored by it, which ``apply`` says (it printed only "updated")."""
    first = "apiVersion: gns.io/v1alpha1\nkind: MirrorPolicy\nmetadata: {name: moving}\n" \
            "spec: {volume: sensors, mode: manual, targets: [{cluster: onprem-b}]}\n"
    assert gns(seeded, "mirror", "apply", "-f", "-", input=first).returncode == 0
    moved = first.replace("volume: sensors", "volume: logs")
    dry = gns(seeded, "mirror", "apply", "-f", "-", "--dry-run", input=moved)
    assert dry.returncode == 0 and "moved from volume sensors, which it would no longer mirror" \
        in dry.stdout, dry.stdout
    proc = gns(seeded, "mirror", "apply", "-f", "-", "--json", input=moved)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["action"], out["volume"], out["previous_volume"]) == ("updated", "logs", "sensors")
    back = gns(seeded, "mirror", "apply", "-f", "-", input=first)
    assert "updated (volume sensors -> onprem-b; moved from volume logs, which it no longer " \
           "mirrors)" in back.stdout, back.stdout
    same = gns(seeded, "mirror", "apply", "-f", "-", "--json", input=first)
    assert "previous_volume" not in json.loads(same.stdout)


def test_validation_uses_the_current_owner(seeded: str) -> None:
    logs = POLICY.replace("volume: sensors", "volume: logs")  # owned by aws-1 = promoteTo
    assert_error(gns(seeded, "mirror", "apply", "-f", "-", input=logs), 2,
                 "promoteTo: 'aws-1' already owns volume 'logs'")


def test_owner_change_between_validation_and_commit_is_caught(seeded: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store txn re-checks the volume key: a stale view cannot slip a policy through."""
    import mirroring.policy_store as control
    from namespace.cache import load_view
    from namespace.errors import InvalidInput
    from namespace.models import Volume

    async def scenario(etcd: Etcd) -> None:
        stale = await load_view(etcd)  # onprem-a owns sensors: targeting onprem-b is fine
        vol = stale.volumes["sensors"]
        moved = Volume(name="sensors", owner="onprem-b", epoch=vol.epoch + 1, created=vol.created)
        await etcd.put(schema.volume("sensors"), moved.dump())  # failover to onprem-b
        calls = []

        async def first_stale(e: Etcd) -> Any:
            calls.append(1)
            return stale if len(calls) == 1 else await load_view(e)

        monkeypatch.setattr(control, "load_view", first_stale)
        with pytest.raises(InvalidInput, match="'onprem-b' is the owner of volume 'sensors'"):
            await control.apply_policy(etcd, POLICY)
        assert len(calls) == 2  # the txn failed on the stale view, the retry re-validated
        assert await etcd.get(schema.policy("sensors-dr")) is None

    asyncio.run(_with_etcd(seeded, scenario))


FAILOVER_POLICY = """\
apiVersion: gns.io/v1alpha1
kind: MirrorPolicy
metadata:
  name: sensors-dr
spec:
  volume: sensors
  targets:
{targets}
  failover:
    automatic: true
    promoteTo: aws-1
"""


def _failover_doc(*targets: str) -> str:
    lines = [f"    - {'uri' if '://' in t else 'cluster'}: {t}" for t in targets]
    return FAILOVER_POLICY.format(targets="\n".join(lines))


def _fail_over_to_onprem_b(urls: str) -> None:
    """What the leader does when onprem-a has been Down for `after` (SPEC §7), with the
    status record onprem-a's controller left for onprem-b when it was a target."""
    from mirroring.promotion import promote

    _put(urls, schema.mirror_status("sensors-dr", "onprem-b"), TargetStatus(
        policy="sensors-dr", volume="sensors", target="onprem-b", version=27, updated=1.0).dump())
    asyncio.run(_with_etcd(urls, lambda etcd: promote(etcd, "sensors", "onprem-b", 27)))


def _listed_and_status(urls: str) -> tuple[list[str], list[str]]:
    listed, status = gns(urls, "mirror", "list", "--json"), gns(urls, "mirror", "status", "--json")
    assert listed.returncode == 0 and status.returncode == 0, listed.stderr + status.stderr
    [row], [entry] = json.loads(listed.stdout), json.loads(status.stdout)
    return row["targets"], [t["target"] for t in entry["targets"]]


def test_after_a_failover_a_target_naming_the_owner_is_refused_and_apply_says_what_is_mirrored(
    seeded: str,
) -> None:
    s3 = "s3://dr-bucket/sensors"
    original = _failover_doc("onprem-b", s3)
    proc = gns(seeded, "mirror", "apply", "-f", "-", input=original)
    assert proc.returncode == 0, proc.stderr
    _fail_over_to_onprem_b(seeded)
    assert _listed_and_status(seeded) == ([s3, "onprem-a"], [s3, "onprem-a"])

    # The owner named as a target: refused whatever the history, every problem listed,
    # nothing stored; the same with --dry-run.
    before = _snapshot(seeded)
    for text in (original, _failover_doc("onprem-b", "onprem-a", s3),
                 original.replace("  targets:", "  colour: red\n  targets:")):
        for extra in ((), ("--dry-run",)):
            proc = gns(seeded, "mirror", "apply", "-f", "-", *extra, input=text)
            assert_error(proc, 2, "spec.targets[0].cluster: 'onprem-b' is the owner of volume 'sensors'")
            assert proc.stdout == ""
    assert "spec.colour: unknown field" in proc.stderr
    assert _snapshot(seeded) == before

    # The valid forms: apply prints (and --dry-run plans) exactly the targets `mirror list`
    # and `mirror status` show afterwards. The former owner stays a target of the new owner
    # (SPEC §7) when the document does not name it, and is printed as one.
    for targets, mirrored in (
        ((s3,), [s3, "onprem-a"]),
        (("onprem-a", s3), ["onprem-a", s3]),
        ((s3, "aws-1"), [s3, "aws-1", "onprem-a"]),
    ):
        text = _failover_doc(*targets)
        dry = gns(seeded, "mirror", "apply", "-f", "-", "--dry-run", "--json", input=text)
        assert dry.returncode == 0, dry.stderr
        planned = json.loads(dry.stdout)
        assert planned["targets"] == mirrored and [p["target"] for p in planned["plan"]] == mirrored
        human = gns(seeded, "mirror", "apply", "-f", "-", "--dry-run", input=text)
        assert f"(volume sensors -> {', '.join(mirrored)}); nothing stored" in human.stdout, human.stdout
        assert "onprem-b" not in human.stdout
        proc = gns(seeded, "mirror", "apply", "-f", "-", input=text)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"mirror policy sensors-dr updated (volume sensors -> {', '.join(mirrored)})"
        assert _listed_and_status(seeded) == (mirrored, mirrored)
        stored = json.loads(dict(_snapshot(seeded))[schema.policy("sensors-dr")])
        assert [t.get("cluster") or t.get("uri") for t in stored["spec"]["targets"]] == list(targets)
    # The record onprem-a's controller left for onprem-b (a target then) went with the update.
    assert schema.mirror_status("sensors-dr", "onprem-b") not in dict(_snapshot(seeded))
