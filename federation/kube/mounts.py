"""``GlobalMount`` -> a mount in the global namespace (what ``gns mount add`` makes).

A mount made here and its ownership marker are written in one etcd transaction, every time
(create, and a change of volume or subpath), so their mod revisions are equal for as long as
nobody else touches the mount. A mount whose mod revision differs from its marker's was
removed and made again elsewhere (``gns mount remove``, ``gns mount add``): it is reported
as a ``Conflict`` and never changed or removed by the resource, whose stale marker is
dropped. Markers from before this rule (no ``target`` in them) count as made here only while
the mount is exactly what the resource asks.
"""
from __future__ import annotations

from typing import Any

from federation.kube import ownership
from federation.kube.api import GLOBAL_MOUNTS
from federation.kube.conditions import condition
from federation.kube.handlers import base_status, not_ready, owner_id
from namespace import schema
from namespace.cache import load_view
from namespace.errors import InvalidInput
from namespace.etcd import Etcd
from namespace.models import Mount
from namespace.paths import check_name, normalize, normalize_relative


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
        problems += _field_problems(field, value, check)
    # Whatever else is wrong: a user fixes the document in one round trip.
    if _well_formed_name(volume) and volume not in volumes:
        problems.append(f"spec.volume: volume {volume!r} not found")
    if problems:
        return problems, None
    return [], Mount(path=path, volume=volume, subpath=subpath or "")


def _field_problems(field: str, value: Any, check: Any) -> list[str]:
    if value is None:
        return [f"spec.{field} is required"]
    if not isinstance(value, str):
        return [f"spec.{field} must be a string"]
    try:
        check(value)
    except InvalidInput as exc:
        return [f"spec.{field}: {exc}"]
    return []


def _well_formed_name(value: Any) -> bool:
    return isinstance(value, str) and not _field_problems(
        "volume", value, lambda v: check_name("volume", v))


def target(volume: str, subpath: str) -> str:
    return f"{volume}:{subpath}" if subpath else volume


def _held(held: ownership.Held) -> Mount | None:
    try:
        return Mount.model_validate_json(held.value)
    except ValueError:  # pydantic's ValidationError, or not JSON at all
        return None


def _same(held: ownership.Held, mount: Mount) -> bool:
    found = _held(held)
    return found is not None and (found.volume, found.subpath) == (mount.volume, mount.subpath)


def made_here(marker: ownership.Marker, held: ownership.Held | None,
              wanted: Mount | None) -> bool:
    """Whether the mount etcd holds is the one this marker's resource made (``wanted``:
    what the resource asks now, which only a marker from before mod revisions needs)."""
    if held is None:
        return False
    if "target" in marker.record:
        return marker.mod == held.mod
    return wanted is not None and _same(held, wanted)


def _wanted(obj: dict[str, Any]) -> Mount | None:
    """The mount the resource's spec asks for, if it is well formed."""
    spec = obj.get("spec")
    try:
        return Mount.model_validate(spec)
    except ValueError:
        return None


class GlobalMountHandler:
    resource = GLOBAL_MOUNTS

    def __init__(self, cluster: str, etcd: Etcd) -> None:
        self.cluster = cluster
        self.etcd = etcd

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        owner = owner_id(self.cluster, obj)
        view = await load_view(self.etcd)
        problems, mount = mount_problems(obj.get("spec"), set(view.volumes))
        if mount is None:
            return not_ready(obj, "Invalid", "; ".join(problems))
        conflict = await self._take(mount, owner)
        if conflict is not None:
            return not_ready(obj, "Conflict", conflict)
        # A changed spec.path: the mounts this resource made at other paths go.
        for old in await ownership.owned_by(self.etcd, ownership.MOUNT, owner):
            if old != mount.path:
                await self._release(old, owner, None)
        vol = view.volumes.get(mount.volume)
        return {
            **base_status(obj), "path": mount.path, "volume": mount.volume,
            "subpath": mount.subpath, "owner": vol.owner if vol is not None else None,
            "conditions": [condition("Ready", True, "Mounted",
                                     f"{mount.path} -> {target(mount.volume, mount.subpath)}")],
        }

    async def _take(self, mount: Mount, owner: str) -> str | None:
        """Make ``mount`` this resource's and as asked; or say why not (a Conflict)."""
        snap = await ownership.read(self.etcd, ownership.MOUNT, mount.path,
                                    schema.mount(mount.path))
        marker, held = snap.marker, snap.held
        if marker is not None and marker.owner != owner:
            return f"{mount.path} is claimed by {marker.owner}; nothing was changed"
        if held is not None and (marker is None or not made_here(marker, held, mount)):
            if marker is not None:  # ours once, made again elsewhere since: not ours now
                await ownership.commit(self.etcd, snap, [], None)
            found = _held(held)
            what = f" ({target(found.volume, found.subpath)})" if found is not None else ""
            return (f"{mount.path} is already mounted{what}, made outside Kubernetes "
                    "(gns mount add); nothing was changed")
        if held is not None and marker is not None and "target" in marker.record \
                and _same(held, mount):
            return None  # already as asked
        # Absent (new, or removed elsewhere since), or ours to change: mount and marker
        # together, so that their mod revisions stay equal.
        tx = self.etcd.tx
        await ownership.commit(
            self.etcd, snap, [tx.put(snap.thing, mount.dump())],
            {"owner": owner, "target": target(mount.volume, mount.subpath)},
            require=[tx.create(schema.volume(mount.volume)) != 0])
        return None

    async def _release(self, path: str, owner: str, wanted: Mount | None) -> None:
        """Remove the mount at ``path`` with its marker if this resource made it; if it
        was made elsewhere since, leave it and drop only the stale marker."""
        snap = await ownership.read(self.etcd, ownership.MOUNT, path, schema.mount(path))
        marker = snap.marker
        if marker is None or marker.owner != owner:
            return
        ours = made_here(marker, snap.held, wanted)
        await ownership.commit(self.etcd, snap, [self.etcd.tx.delete(snap.thing)] if ours else [],
                               None)

    async def remove(self, obj: dict[str, Any]) -> None:
        owner = owner_id(self.cluster, obj)
        wanted = _wanted(obj)
        for path in await ownership.owned_by(self.etcd, ownership.MOUNT, owner):
            await self._release(path, owner,
                                wanted if wanted is not None and wanted.path == path else None)
