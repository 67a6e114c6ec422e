"""What a MirrorPolicy or GlobalMount resource may change or remove (SPEC §9): only what it
made, and only while it is still that. The handlers run against a real etcd (no API server:
``apply`` and ``remove`` are what the reconciler calls for a resource and for its deletion);
the CLI's side is the same namespace calls ``gns mount`` and ``gns mirror`` make.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

import pytest

from federation.kube import ownership
from federation.kube.mounts import GlobalMountHandler
from federation.kube.policies import MirrorPolicyHandler
from federation.local.etcd_server import EtcdCluster
from mirroring.policy_store import apply_policy, remove_policy
from namespace import schema
from namespace.control import ControlPlane
from namespace.etcd import Etcd, EtcdConfig
from namespace.models import ClusterSpec

T = TypeVar("T")
CLUSTER = "onprem-a"


def run(urls: str, scenario: Callable[[Etcd], Awaitable[T]]) -> T:
    async def main() -> T:
        etcd = await Etcd.connect(EtcdConfig.parse(urls))
        try:
            return await scenario(etcd)
        finally:
            await etcd.close()
    return asyncio.run(main())


@pytest.fixture(scope="module")
def urls(etcd_module: EtcdCluster) -> str:
    async def seed(etcd: Etcd) -> None:
        for cid in ("onprem-a", "onprem-b"):
            await etcd.put(schema.cluster(cid), ClusterSpec(id=cid).dump())
        for vol in ("kvol", "kvol2", "pvol"):
            await ControlPlane(etcd).create_volume(vol, "onprem-a")
    run(etcd_module.urls, seed)
    return etcd_module.urls


def gm(name: str, generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "gns.io/v1alpha1", "kind": "GlobalMount",
            "metadata": {"name": name, "namespace": "default", "generation": generation},
            "spec": spec}


def mp(name: str, generation: int = 1, volume: str = "pvol", mode: str = "continuous",
       uid: str = "uid-1") -> dict[str, Any]:
    return {"apiVersion": "gns.io/v1alpha1", "kind": "MirrorPolicy",
            "metadata": {"name": name, "namespace": "default", "generation": generation,
                         "uid": uid},
            "spec": {"volume": volume, "mode": mode, "targets": [{"cluster": "onprem-b"}]}}


def ready(status: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in status["conditions"] if c["type"] == "Ready")
    return found


async def mount_of(etcd: Etcd, path: str) -> tuple[str, str] | None:
    return (await ControlPlane(etcd).view()).mounts.get(path)


def marker_key(kind: str, name: str) -> bytes:
    """Where a marker lives: fixed, since markers written by earlier versions must be found."""
    return f"/gns/v1/kube-owners/{kind}/{quote(name, safe='')}".encode()


async def marker_of(etcd: Etcd, kind: str, name: str) -> Any:
    raw = await etcd.get(marker_key(kind, name))
    return None if raw is None else json.loads(raw)


def policy_doc(name: str, mode: str) -> str:
    return json.dumps({"metadata": {"name": name},
                       "spec": {"volume": "pvol", "mode": mode, "targets": [{"cluster": "onprem-b"}]}})


# -- GlobalMount --------------------------------------------------------------------------------


def test_deleting_a_globalmount_leaves_the_mount_the_cli_made_at_its_path(urls: str) -> None:
    """The reported case: the resource went Invalid (its mount stays), the CLI then removed
    that mount and mounted another volume at the path; deleting the resource must not remove
    the CLI's mount, and drops the marker that outlived the resource's mount."""
    async def scenario(etcd: Etcd) -> None:
        h, cli = GlobalMountHandler(CLUSTER, etcd), ControlPlane(etcd)
        assert ready(await h.apply(gm("gmx", path="/gm/x", volume="kvol")))["status"] == "True"
        invalid = gm("gmx", 2, path="/gm/x", volume="Bad_Name")
        assert ready(await h.apply(invalid))["reason"] == "Invalid"
        assert await mount_of(etcd, "/gm/x") == ("kvol", "")  # an invalid spec changes nothing
        await cli.remove_mount("/gm/x")
        await cli.add_mount("/gm/x", "kvol2")
        await h.remove(invalid)
        assert await mount_of(etcd, "/gm/x") == ("kvol2", "")
        assert await marker_of(etcd, ownership.MOUNT, "/gm/x") is None
    run(urls, scenario)


def test_a_globalmount_whose_mount_was_made_again_elsewhere_reports_conflict(urls: str) -> None:
    """Even the same volume, mounted again by the CLI, is not the resource's any more: it is
    reported, not taken over, and deleting the resource leaves it."""
    async def scenario(etcd: Etcd) -> None:
        h, cli = GlobalMountHandler(CLUSTER, etcd), ControlPlane(etcd)
        obj = gm("gmy", path="/gm/y", volume="kvol", subpath="a")
        assert ready(await h.apply(obj))["reason"] == "Mounted"
        await cli.remove_mount("/gm/y")
        await cli.add_mount("/gm/y", "kvol:a")
        before = await etcd.call(etcd.client.get, schema.mount("/gm/y"))
        status = ready(await h.apply(obj))
        assert status["reason"] == "Conflict", status
        assert "made outside Kubernetes" in status["message"] and "kvol:a" in status["message"]
        after = await etcd.call(etcd.client.get, schema.mount("/gm/y"))
        assert after.mod_revision == before.mod_revision  # not rewritten
        assert await marker_of(etcd, ownership.MOUNT, "/gm/y") is None
        await h.remove(obj)
        assert await mount_of(etcd, "/gm/y") == ("kvol", "a")
        await cli.remove_mount("/gm/y")
    run(urls, scenario)


def test_a_globalmount_remakes_its_mount_removed_elsewhere_and_follows_spec_changes(urls: str) -> None:
    async def scenario(etcd: Etcd) -> None:
        h, cli = GlobalMountHandler(CLUSTER, etcd), ControlPlane(etcd)
        assert ready(await h.apply(gm("gmz", path="/gm/z", volume="kvol")))["reason"] == "Mounted"
        await cli.remove_mount("/gm/z")  # nothing made again: the resource still wants it
        assert ready(await h.apply(gm("gmz", path="/gm/z", volume="kvol")))["reason"] == "Mounted"
        assert await mount_of(etcd, "/gm/z") == ("kvol", "")
        # a change of volume is the resource's own: mount and marker change together
        obj = gm("gmz", 2, path="/gm/z", volume="kvol2", subpath="s")
        assert ready(await h.apply(obj))["reason"] == "Mounted"
        assert await mount_of(etcd, "/gm/z") == ("kvol2", "s")
        await h.remove(obj)
        assert await mount_of(etcd, "/gm/z") is None
        assert await marker_of(etcd, ownership.MOUNT, "/gm/z") is None
    run(urls, scenario)


def test_markers_from_before_revisions_are_kept_only_while_the_mount_is_as_asked(urls: str) -> None:
    """A controller upgraded over markers that name only their owner: a mount that is what
    the resource asks stays the resource's (and is removed with it); one that is not is
    someone else's."""
    async def scenario(etcd: Etcd) -> None:
        h, cli = GlobalMountHandler(CLUSTER, etcd), ControlPlane(etcd)
        for path, volume in (("/gm/old-ok", "kvol"), ("/gm/old-other", "kvol2")):
            await cli.add_mount(path, volume)
            owner = f"{CLUSTER}/default/{path.rsplit('/', 1)[1]}"
            await etcd.put(marker_key(ownership.MOUNT, path), json.dumps({"owner": owner}).encode())
        kept = gm("old-ok", path="/gm/old-ok", volume="kvol")
        assert ready(await h.apply(kept))["reason"] == "Mounted"
        other = gm("old-other", path="/gm/old-other", volume="kvol")
        assert ready(await h.apply(other))["reason"] == "Conflict"
        await h.remove(kept)
        await h.remove(other)
        assert await mount_of(etcd, "/gm/old-ok") is None
        assert await mount_of(etcd, "/gm/old-other") == ("kvol2", "")
        await cli.remove_mount("/gm/old-other")
    run(urls, scenario)


# -- MirrorPolicy -------------------------------------------------------------------------------


def test_deleting_a_mirrorpolicy_leaves_the_policy_the_cli_made_again(urls: str) -> None:
    async def scenario(etcd: Etcd) -> None:
        h = MirrorPolicyHandler(CLUSTER, etcd)
        assert ready(await h.apply(mp("pa")))["reason"] == "Applied"
        await remove_policy(etcd, "pa")
        await apply_policy(etcd, policy_doc("pa", "manual"))  # same name, made by the CLI
        status = ready(await h.apply(mp("pa")))
        assert status["reason"] == "Conflict" and "gns mirror apply" in status["message"]
        assert json.loads(await etcd.get(schema.policy("pa")) or b"")["spec"]["mode"] == "manual"
        await h.remove(mp("pa"))
        assert await etcd.get(schema.policy("pa")) is not None
        assert await marker_of(etcd, ownership.POLICY, "pa") is None
        await remove_policy(etcd, "pa")
    run(urls, scenario)


def test_deleting_a_mirrorpolicy_whose_policy_the_cli_remade_before_a_resync(urls: str) -> None:
    """Removed and made again elsewhere while the resource was not looking: its deletion
    still leaves the CLI's policy."""
    async def scenario(etcd: Etcd) -> None:
        h = MirrorPolicyHandler(CLUSTER, etcd)
        assert ready(await h.apply(mp("pb")))["reason"] == "Applied"
        await remove_policy(etcd, "pb")
        await apply_policy(etcd, policy_doc("pb", "continuous"))  # identical, but not ours
        await h.remove(mp("pb"))
        assert await etcd.get(schema.policy("pb")) is not None
        await remove_policy(etcd, "pb")
    run(urls, scenario)


def test_a_policy_remade_elsewhere_while_the_resource_applies_is_not_overwritten(
        urls: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI removes and re-applies the policy in the moment between the resource's
    ownership check and its store (the store was a transaction of its own, and took the
    CLI's policy over): the store now rests on the check's picture, fails with Conflict
    (which the reconciler retries), and the next pass reports the Conflict."""
    from namespace.errors import Conflict

    async def scenario(etcd: Etcd) -> None:
        h = MirrorPolicyHandler(CLUSTER, etcd)
        assert ready(await h.apply(mp("pr")))["reason"] == "Applied"
        take = h._take

        async def take_then_cli_remakes(name: str, owner: str, wanted: dict[str, Any]) -> str | None:
            said = await take(name, owner, wanted)
            await remove_policy(etcd, "pr")
            await apply_policy(etcd, policy_doc("pr", "manual"))
            return said

        monkeypatch.setattr(h, "_take", take_then_cli_remakes)
        with pytest.raises(Conflict):
            await h.apply(mp("pr", 2))
        monkeypatch.undo()
        assert json.loads(await etcd.get(schema.policy("pr")) or b"")["spec"]["mode"] == "manual"
        status = ready(await h.apply(mp("pr", 2)))
        assert status["reason"] == "Conflict"
        await h.remove(mp("pr", 2))
        assert await etcd.get(schema.policy("pr")) is not None  # the CLI's, left
        await remove_policy(etcd, "pr")
    run(urls, scenario)


def test_a_mirrorpolicy_reverts_an_edit_in_place_and_removes_its_own(urls: str) -> None:
    """An update in place (``gns mirror apply`` of the same name) keeps the policy the
    resource's: the resource puts back what it asks, and its deletion removes it."""
    async def scenario(etcd: Etcd) -> None:
        h = MirrorPolicyHandler(CLUSTER, etcd)
        assert ready(await h.apply(mp("pc")))["reason"] == "Applied"
        await apply_policy(etcd, policy_doc("pc", "manual"))
        status = ready(await h.apply(mp("pc")))
        assert status["reason"] == "Applied" and status["message"] == "mirror policy pc updated"
        assert json.loads(await etcd.get(schema.policy("pc")) or b"")["spec"]["mode"] == "continuous"
        await h.remove(mp("pc"))
        assert await etcd.get(schema.policy("pc")) is None
        assert await marker_of(etcd, ownership.POLICY, "pc") is None
    run(urls, scenario)


def test_ready_message_says_created_until_the_spec_changes(urls: str) -> None:
    """The status patch of the first pass triggers a second pass that finds nothing to do
    (and may read the object from before that patch): the message keeps saying what
    applying this generation did."""
    async def scenario(etcd: Etcd) -> None:
        h = MirrorPolicyHandler(CLUSTER, etcd)
        assert ready(await h.apply(mp("pd")))["message"] == "mirror policy pd created"
        assert ready(await h.apply(mp("pd")))["message"] == "mirror policy pd created"
        # a new generation asking for what is already stored: that one is unchanged
        assert ready(await h.apply(mp("pd", 2)))["message"] == "mirror policy pd unchanged"
        assert ready(await h.apply(mp("pd", 2)))["message"] == "mirror policy pd unchanged"
        changed = await h.apply(mp("pd", 3, mode="manual"))
        assert ready(changed)["message"] == "mirror policy pd updated"
        await h.remove(mp("pd", 3, mode="manual"))
        # deleted and made again: created again
        assert ready(await h.apply(mp("pd", uid="uid-2")))["message"] == "mirror policy pd created"
        assert ready(await h.apply(mp("pd", uid="uid-2")))["message"] == "mirror policy pd created"
        await h.remove(mp("pd", uid="uid-2"))
        assert await etcd.get(schema.policy("pd")) is None
    run(urls, scenario)
