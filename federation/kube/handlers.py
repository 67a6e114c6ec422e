"""One custom resource -> the global namespace, through the operations the CLI performs.

``apply`` returns the resource's ``status`` (without ``lastTransitionTime``s); ``remove``
undoes what ``apply`` made, and only that: every policy and mount made here carries an
ownership marker (:mod:`federation.kube.ownership`). An invalid resource, or one naming what
was made elsewhere, changes nothing and says why in its ``Ready`` condition.
"""
from __future__ import annotations

import json
from typing import Any, Protocol

from federation.kube import ownership
from federation.kube.api import GLOBAL_MOUNTS, MIRROR_POLICIES, Resource
from federation.kube.conditions import condition
from mirroring.policy import MirrorPolicy, validate_document
from mirroring.policy_store import apply_policy, remove_policy
from mirroring.status import statuses
from namespace.cache import load_view
from namespace.control import ControlPlane
from namespace.errors import Conflict, InvalidInput, NotFound
from namespace.etcd import Etcd
from namespace.models import Mount
from namespace.paths import check_name, normalize, normalize_relative


def owner_id(cluster: str, obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{cluster}/{meta.get('namespace', '')}/{meta['name']}"


class Handler(Protocol):
    resource: Resource

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]: ...

    async def remove(self, obj: dict[str, Any]) -> None: ...


def _base(obj: dict[str, Any]) -> dict[str, Any]:
    return {"observedGeneration": obj["metadata"].get("generation", 0)}


class MirrorPolicyHandler:
    resource = MIRROR_POLICIES

    def __init__(self, cluster: str, etcd: Etcd) -> None:
        self.cluster = cluster
        self.etcd = etcd

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        status = _base(obj)
        owner = owner_id(self.cluster, obj)
        name = obj["metadata"]["name"]
        doc = MirrorPolicy.from_kubernetes(obj)
        view = await load_view(self.etcd)
        try:
            validate_document(doc, view)
        except InvalidInput as exc:
            msg = str(exc)
            return {**status, "conditions": [condition("Ready", False, "Invalid", msg),
                                             condition("Synced", False, "Invalid", msg)]}
        holder = await ownership.owner_of(self.etcd, ownership.POLICY, name)
        if (holder is None and name in view.policies) or (holder not in (None, owner)):
            where = holder or "outside Kubernetes (gns mirror apply)"
            msg = f"mirror policy {name!r} already exists, made by {where}; nothing was changed"
            return {**status, "conditions": [condition("Ready", False, "Conflict", msg),
                                             condition("Synced", False, "Conflict", msg)]}
        if await ownership.claim(self.etcd, ownership.POLICY, name, owner) != owner:
            msg = f"mirror policy {name!r} was just claimed by another resource"
            return {**status, "conditions": [condition("Ready", False, "Conflict", msg),
                                             condition("Synced", False, "Conflict", msg)]}
        try:
            result = await apply_policy(self.etcd, json.dumps(doc))
        except InvalidInput as exc:
            msg = str(exc)
            return {**status, "conditions": [condition("Ready", False, "Invalid", msg),
                                             condition("Synced", False, "Invalid", msg)]}
        view = await load_view(self.etcd)
        found = statuses(view, name)
        targets = found[0]["targets"] if found else []
        behind = [t for t in targets if t.get("state") != "Synced"]
        if behind:
            order = ("Error", "Lagging", "Syncing")
            reason = next((s for s in order if any(t.get("state") == s for t in behind)), "Syncing")
            synced = condition("Synced", False, reason, "; ".join(
                f"{t['target']}: {t.get('state')}"
                + (f" ({t['last_error']})" if t.get("last_error") else "") for t in behind))
        else:
            synced = condition("Synced", True, "Synced", "every target holds the volume's version")
        return {
            **status,
            "volume": result["volume"],
            "mode": result["mode"],
            "targets": [{k: v for k, v in t.items()} for t in targets],
            "conditions": [
                condition("Ready", True, "Applied", f"mirror policy {name} {result['action']}"),
                synced,
            ],
        }

    async def remove(self, obj: dict[str, Any]) -> None:
        owner = owner_id(self.cluster, obj)
        name = obj["metadata"]["name"]
        if await ownership.owner_of(self.etcd, ownership.POLICY, name) != owner:
            return  # made elsewhere (a Conflict): not ours to remove
        try:
            await remove_policy(self.etcd, name)
        except NotFound:
            pass
        await ownership.release(self.etcd, ownership.POLICY, name, owner)


def mount_problems(spec: Any, volumes: set[str]) -> tuple[list[str], Mount | None]:
    """Every problem of a GlobalMount spec (not only the first)."""
    problems: list[str] = []
    if not isinstance(spec, dict):
        return ["spec is required"], None
    unknown = sorted(set(spec) - {"path", "volume", "subpath"})
    problems += [f"spec.{k}: unknown field" for k in unknown]
    path, volume, subpath = spec.get("path"), spec.get("volume"), spec.get("subpath", "")
    for field, value, check in (("path", path, normalize),
                                ("volume", volume, lambda v: check_name("volume", v)),
                                ("subpath", subpath, normalize_relative)):
        if value is None:
            problems.append(f"spec.{field} is required")
            continue
        if not isinstance(value, str):
            problems.append(f"spec.{field} must be a string")
            continue
        try:
            check(value)
        except InvalidInput as exc:
            problems.append(f"spec.{field}: {exc}")
    if not problems and volume not in volumes:
        problems.append(f"spec.volume: volume {volume!r} not found")
    if problems:
        return problems, None
    return [], Mount(path=path, volume=volume, subpath=subpath or "")


class GlobalMountHandler:
    resource = GLOBAL_MOUNTS

    def __init__(self, cluster: str, etcd: Etcd) -> None:
        self.cluster = cluster
        self.etcd = etcd
        self.control = ControlPlane(etcd)

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        status = _base(obj)
        owner = owner_id(self.cluster, obj)
        view = await load_view(self.etcd)
        problems, mount = mount_problems(obj.get("spec"), set(view.volumes))
        if mount is None:
            return {**status, "conditions": [condition("Ready", False, "Invalid",
                                                       "; ".join(problems))]}
        holder = await ownership.owner_of(self.etcd, ownership.MOUNT, mount.path)
        existing = view.mounts.get(mount.path)
        if (holder is None and existing is not None) or holder not in (None, owner):
            where = holder or "outside Kubernetes (gns mount add)"
            return {**status, "conditions": [condition(
                "Ready", False, "Conflict",
                f"{mount.path} is already mounted, made by {where}; nothing was changed")]}
        if await ownership.claim(self.etcd, ownership.MOUNT, mount.path, owner) != owner:
            return {**status, "conditions": [condition(
                "Ready", False, "Conflict", f"{mount.path} was just claimed by another resource")]}
        # A changed spec.path: the mounts this resource made at other paths go.
        for old in await ownership.owned_by(self.etcd, ownership.MOUNT, owner):
            if old != mount.path:
                await self._unmount(old, owner)
        if existing != (mount.volume, mount.subpath):
            if existing is not None:
                await self.control.remove_mount(mount.path)
            try:
                await self.control.add_mount(mount.path, f"{mount.volume}:{mount.subpath}"
                                             if mount.subpath else mount.volume)
            except NotFound as exc:
                return {**status, "conditions": [condition("Ready", False, "Invalid", str(exc))]}
            except Conflict as exc:
                return {**status, "conditions": [condition("Ready", False, "Conflict", str(exc))]}
        vol = view.volumes.get(mount.volume)
        return {
            **status, "path": mount.path, "volume": mount.volume, "subpath": mount.subpath,
            "owner": vol.owner if vol is not None else None,
            "conditions": [condition("Ready", True, "Mounted",
                                     f"{mount.path} -> {mount.volume}"
                                     + (f":{mount.subpath}" if mount.subpath else ""))],
        }

    async def _unmount(self, path: str, owner: str) -> None:
        try:
            await self.control.remove_mount(path)
        except NotFound:
            pass
        await ownership.release(self.etcd, ownership.MOUNT, path, owner)

    async def remove(self, obj: dict[str, Any]) -> None:
        owner = owner_id(self.cluster, obj)
        for path in await ownership.owned_by(self.etcd, ownership.MOUNT, owner):
            await self._unmount(path, owner)
