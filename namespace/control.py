"""Control-plane operations: every change to clusters, volumes and mounts, each one txn.

Reads come from a fresh consistent snapshot (or the caller's cache); writes are etcd
transactions whose comparisons make the checks and the change atomic, so two operators
racing never both win and a refused change leaves etcd as it was.
"""
from __future__ import annotations

import time

from namespace import schema
from namespace.cache import NamespaceView, load_view
from namespace.errors import Conflict, NotFound
from namespace.etcd import Etcd, prefix_end
from namespace.models import (
    ClusterView,
    Mount,
    Volume,
    VolumeState,
    VolumeView,
    check_labels,
    parse_mount_target,
)
from namespace.mounts import Resolution
from namespace.paths import check_name, normalize


class ControlPlane:
    """Typed operations on the global namespace (what the CLI and apps call)."""

    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd

    async def view(self) -> NamespaceView:
        return await load_view(self.etcd)

    # -- clusters -------------------------------------------------------------------------
    async def clusters(self) -> list[ClusterView]:
        view = await self.view()
        return [v for cid in sorted(view.clusters) if (v := view.cluster_view(cid))]

    async def cluster(self, cluster_id: str) -> ClusterView:
        check_name("cluster", cluster_id)
        found = (await self.view()).cluster_view(cluster_id)
        if found is None:
            raise NotFound(f"cluster {cluster_id!r} not found")
        return found

    async def remove_cluster(self, cluster_id: str) -> None:
        check_name("cluster", cluster_id)
        view = await self.view()
        if cluster_id not in view.clusters:
            raise NotFound(f"cluster {cluster_id!r} not found")
        owned = sorted(v.name for v in view.volumes.values() if v.owner == cluster_id)
        if owned:
            raise Conflict(
                f"cluster {cluster_id!r} still owns volume(s) {', '.join(owned)}; "
                "promote them elsewhere first"
            )
        tx = self.etcd.tx
        volumes = schema.VOLUMES.encode()
        ok, _ = await self.etcd.txn(
            # No volume changed since we checked, so none can have become owned by it.
            [tx.mod(volumes, range_end=prefix_end(volumes)) < view.revision + 1],
            [tx.delete(schema.cluster(cluster_id)), tx.delete(schema.alive(cluster_id))],
        )
        if not ok:
            raise Conflict("volumes changed while removing the cluster; try again")

    # -- volumes --------------------------------------------------------------------------
    async def create_volume(self, name: str, cluster_id: str,
                            labels: dict[str, str] | None = None) -> VolumeView:
        check_name("volume", name)
        check_name("cluster", cluster_id)
        labels = check_labels(dict(labels or {}))
        tx = self.etcd.tx
        vol = Volume(name=name, owner=cluster_id, epoch=1, created=time.time(), labels=labels)
        state = VolumeState(version=0, epoch=1, updated=time.time())
        ok, _ = await self.etcd.txn(
            [tx.create(schema.volume(name)) == 0, tx.create(schema.cluster(cluster_id)) != 0],
            [tx.put(schema.volume(name), vol.dump()), tx.put(schema.volstate(name), state.dump())],
        )
        if not ok:
            view = await self.view()
            if name in view.volumes:
                raise Conflict(f"volume {name!r} already exists")
            raise NotFound(f"cluster {cluster_id!r} not found")
        return await self.volume(name)

    async def volumes(self) -> list[VolumeView]:
        view = await self.view()
        return [v for n in sorted(view.volumes) if (v := view.volume_view(n))]

    async def volume(self, name: str) -> VolumeView:
        check_name("volume", name)
        found = (await self.view()).volume_view(name)
        if found is None:
            raise NotFound(f"volume {name!r} not found")
        return found

    async def remove_volume(self, name: str) -> None:
        """Forget volume ``name`` (what the CSI driver's DeleteVolume needs). Refused while a
        mount or a mirror policy still names it, so nothing is left pointing at nothing."""
        check_name("volume", name)
        view = await self.view()
        if name not in view.volumes:
            raise NotFound(f"volume {name!r} not found")
        users = [p for p, _ in view.mounts.mounts_of(name)]
        users += sorted(f"mirror policy {p}" for p, d in view.policies.items()
                        if isinstance(d, dict) and d.get("spec", {}).get("volume") == name)
        if users:
            raise Conflict(f"volume {name!r} is still in use by {', '.join(users)}")
        tx = self.etcd.tx
        rev = view.revision + 1
        mounts, policies = schema.MOUNTS.encode(), schema.POLICIES.encode()
        ok, _ = await self.etcd.txn(
            [tx.mod(mounts, range_end=prefix_end(mounts)) < rev,
             tx.mod(policies, range_end=prefix_end(policies)) < rev,
             tx.create(schema.volume(name)) != 0],
            [tx.delete(schema.volume(name)), tx.delete(schema.volstate(name))],
        )
        if not ok:
            raise Conflict(f"mounts or policies changed while removing volume {name!r}; try again")

    # -- mounts ---------------------------------------------------------------------------
    async def add_mount(self, path: str, target: str) -> Mount:
        path = normalize(path)
        volume, subpath = parse_mount_target(target)
        mount = Mount(path=path, volume=volume, subpath=subpath)
        tx = self.etcd.tx
        ok, _ = await self.etcd.txn(
            [tx.create(schema.mount(path)) == 0, tx.create(schema.volume(volume)) != 0],
            [tx.put(schema.mount(path), mount.dump())],
        )
        if not ok:
            view = await self.view()
            held = view.mounts.get(path)
            if held is not None:
                v, s = held
                raise Conflict(f"{path} is already mounted ({v}{':' + s if s else ''})")
            raise NotFound(f"volume {volume!r} not found")
        return mount

    async def mounts(self) -> list[Mount]:
        return (await self.view()).mount_list()

    async def remove_mount(self, path: str) -> None:
        path = normalize(path)
        tx = self.etcd.tx
        ok, _ = await self.etcd.txn(
            [tx.create(schema.mount(path)) != 0], [tx.delete(schema.mount(path))]
        )
        if not ok:
            raise NotFound(f"no mount at {path}")

    # -- resolution -----------------------------------------------------------------------
    async def resolve(self, path: str) -> tuple[Resolution, NamespaceView]:
        view = await self.view()
        return resolve_in(view, path), view


def resolve_in(view: NamespaceView, path: str) -> Resolution:
    """Resolve ``path`` in ``view`` or raise :class:`NotFound` (unmounted)."""
    res = view.resolve(path)
    if res is None:
        raise NotFound(f"{normalize(path)} is not under any mount")
    if res.volume not in view.volumes:
        raise NotFound(f"{res.path} is mounted on missing volume {res.volume!r}")
    return res
