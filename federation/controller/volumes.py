"""The volumes this controller holds on disk, and the gate every write passes.

A write is accepted only if, at that moment, this cluster owns the volume at the epoch the
writer resolved, and the liveness lease is certainly alive (self-fencing). Committed
versions are published to etcd in batches (at most every ``publish_interval``), never one
etcd write per file.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from federation.storage import Headroom, VolumeStorage
from namespace import schema
from namespace.cache import NamespaceCache
from namespace.errors import EpochNotSeen, GnsError, NotFound, NotOwner, StaleEpoch, Unavailable
from namespace.models import Volume, VolumeState
from namespace.registry import LeaseKeeper

if TYPE_CHECKING:
    from federation.controller.metrics import ControllerMetrics

log = logging.getLogger(__name__)


class VolumeManager:
    def __init__(
        self,
        cluster: str,
        data_dir: Path,
        cache: NamespaceCache,
        lease: LeaseKeeper,
        metrics: ControllerMetrics,
        publish_interval: float = 0.1,
    ) -> None:
        self.cluster = cluster
        self.root = data_dir / "volumes"
        self.root.mkdir(parents=True, exist_ok=True)
        # One for all the volumes here, taken when the first opens (volume names are
        # DNS labels: none is ".headroom").
        self.headroom = Headroom(self.root / ".headroom")
        self.cache = cache
        self.lease = lease
        self.metrics = metrics
        self.publish_interval = publish_interval
        self._open: dict[str, VolumeStorage] = {}
        self._open_lock = threading.Lock()
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        # Set while the lease was lost and the epochs of our volumes are not yet bumped.
        self.suspended = False
        self._commit_listeners: list[Callable[[str, int], None]] = []
        self._usage_cache: dict[str, tuple[float, int, int]] = {}
        # Paths kept aside under .gns/diverged/ after a failback, per volume (reported).
        self.diverged: dict[str, list[str]] = {}
        # Volumes being handed over (no new writes) and writes in flight per volume.
        self.draining: set[str] = set()
        self.inflight: dict[str, int] = {}
        self._roles_due: set[str] = set()
        self._roles_event = asyncio.Event()

    # -- storage --------------------------------------------------------------------------
    def storage(self, name: str, *, create: bool = False) -> VolumeStorage:
        """Open (once) the on-disk volume ``name``; blocking, call from a worker thread."""
        with self._open_lock:
            vs = self._open.get(name)
            if vs is None:
                vol = self.cache.view.volumes.get(name)
                role = "primary" if vol is not None and vol.owner == self.cluster else "replica"
                vs = VolumeStorage.open(
                    self.root / name, name, create=create, epoch=vol.epoch if vol else 1, role=role,
                    headroom=self.headroom,
                )
                self._open[name] = vs
            return vs

    def opened(self, name: str) -> VolumeStorage | None:
        """The volume's storage if it is open already (no disk access: safe on the loop)."""
        return self._open.get(name)

    def has_local(self, name: str) -> bool:
        return name in self._open or (self.root / name).exists()

    def volume(self, name: str) -> Volume:
        vol = self.cache.view.volumes.get(name)
        if vol is None:
            raise NotFound(f"volume {name!r} not found")
        return vol

    # -- the write gate -------------------------------------------------------------------
    def check_writable(self, name: str, epoch: int) -> Volume:
        """Raise unless this controller may accept a write for ``name`` at ``epoch`` now."""
        vol = self.volume(name)
        if vol.owner != self.cluster:
            raise NotOwner(
                f"cluster {self.cluster} does not own volume {name!r} "
                f"(owner {vol.owner}, epoch {vol.epoch})"
            )
        if epoch and epoch < vol.epoch:
            raise StaleEpoch(
                f"write to volume {name!r} carries epoch {epoch}, current epoch is {vol.epoch}"
            )
        if epoch and epoch > vol.epoch:
            # Our cache is behind the writer's view: the owner may have changed; refuse safely.
            raise EpochNotSeen(
                f"cluster {self.cluster} has not yet seen epoch {epoch} of volume {name!r}; retry"
            )
        if name in self.draining:
            raise Unavailable(f"volume {name!r} is being handed over to another cluster; retry")
        if self.suspended or self.lease.fenced():
            self.metrics.fenced.set(1)
            raise Unavailable(
                f"cluster {self.cluster} is fenced (its etcd lease may have lapsed); "
                "no writes until it re-registers"
            )
        return vol

    def begin_write(self, name: str) -> None:
        self.inflight[name] = self.inflight.get(name, 0) + 1

    def end_write(self, name: str) -> None:
        self.inflight[name] = self.inflight.get(name, 1) - 1

    async def wait_idle(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.inflight.get(name, 0) > 0:
            if time.monotonic() > deadline:
                raise Unavailable(f"volume {name!r}: writes still in flight after {timeout}s")
            await asyncio.sleep(0.02)

    # -- ownership changes: become primary, or fail back to a replica ---------------------
    async def run(self) -> None:
        """Until cancelled: publish committed versions, and follow ownership changes of the
        volumes held here (promotion, failover, failback). The process's supervisor owns it."""
        self.cache.subscribe(self._on_change)
        self._roles_due.update(self.cache.view.volumes)
        self._roles_event.set()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._publish_forever(), name="volstate-publisher")
            group.create_task(self._roles_forever(), name="volume-roles")

    def _on_change(self, kind: str, name: str, value: bytes | None) -> None:
        if kind == "volume":
            self._roles_due.add(name)
            self._roles_event.set()

    async def _roles_forever(self) -> None:
        while True:
            await self._roles_event.wait()
            self._roles_event.clear()
            due, self._roles_due = self._roles_due, set()
            for name in sorted(due):
                try:
                    await self.reconcile_role(name)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("volume %s: role change failed; will retry", name)
                    self._roles_due.add(name)
            if self._roles_due:
                await asyncio.sleep(1.0)
                self._roles_event.set()

    async def reconcile_role(self, name: str) -> None:
        vol = self.cache.view.volumes.get(name)
        if vol is None or not self.has_local(name) or self.suspended:
            return
        vs = await asyncio.to_thread(self.storage, name)
        if vol.owner == self.cluster:
            if vs.epoch < vol.epoch:
                await asyncio.to_thread(vs.set_epoch, vol.epoch)
            if vs.role != "primary":
                await asyncio.to_thread(vs.set_role, "primary")
                log.warning("volume %s: this cluster is the owner now (epoch %d, version %d)",
                            name, vol.epoch, vs.version)
                # The federation shows the version the new owner holds (a lagging replica
                # promoted by force is behind the old owner's), not the old owner's last one.
                self._dirty.add(name)
                self._dirty_event.set()
        elif vs.role == "primary":
            await self.fail_back(vol, vs)

    async def fail_back(self, vol: Volume, vs: VolumeStorage) -> None:
        """We owned ``vol`` but were replaced: keep our unmirrored writes aside, then become a
        replica of the new owner (which pushes its state to us)."""
        kept = await asyncio.to_thread(self._keep_diverged, vol, vs)
        await asyncio.to_thread(vs.set_role, "replica")
        self.metrics.fences.labels("failback").inc()
        if kept:
            self.diverged[vol.name] = kept
            await self._publish_diverged(vol.name, vs.epoch, kept)
        log.warning("volume %s: failed back to replica of %s (epoch %d); %d diverged path(s) kept under %s",
                    vol.name, vol.owner, vol.epoch, len(kept), self.root / vol.name / ".gns" / "diverged")

    def _keep_diverged(self, vol: Volume, vs: VolumeStorage) -> list[str]:
        if vs.version <= vol.base_version:
            return []
        try:
            changed, deleted = vs.changes_since(vol.base_version, vs.version)
        except Exception:  # whatever broke, keeping every file aside loses nothing
            log.error("volume %s: journal no longer reaches version %d; keeping every file aside",
                      vol.name, vol.base_version, exc_info=True)
            changed, deleted = list(vs.files()), []
        base = self.root / vol.name / ".gns" / "diverged" / str(vs.epoch)
        kept = []
        for meta in changed:
            dest = base / meta.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".tmp")
            with vs.open_blob(meta.sha256) as src, open(tmp, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
            kept.append(f".gns/diverged/{vs.epoch}/{meta.path}")
        if deleted:
            (base / ".deleted").parent.mkdir(parents=True, exist_ok=True)
            (base / ".deleted").write_text("\n".join(deleted) + "\n")
            kept += [f".gns/diverged/{vs.epoch}/.deleted ({p})" for p in deleted]
        return kept

    async def _publish_diverged(self, name: str, epoch: int, kept: list[str]) -> None:
        import json

        record = {"volume": name, "cluster": self.cluster, "epoch": epoch, "paths": kept, "at": time.time()}
        try:
            await self.cache.etcd.put(schema.diverged(name, self.cluster), json.dumps(record).encode())
        except GnsError as exc:
            log.error("volume %s: could not report diverged writes: %s", name, exc)

    def committed(self, name: str, version: int) -> None:
        self.metrics.volume_version.labels(name).set(version)
        self._dirty.add(name)
        self._dirty_event.set()
        for listener in self._commit_listeners:
            listener(name, version)

    def subscribe_commits(self, listener: Callable[[str, int], None]) -> None:
        """Call ``listener(volume, version)`` after every local commit (mirroring)."""
        self._commit_listeners.append(listener)

    # -- lease loss and regain ------------------------------------------------------------
    async def on_lease_lost(self) -> None:
        self.suspended = True
        self.metrics.fenced.set(1)
        self.metrics.fences.labels("lease_lost").inc()
        log.warning("cluster %s fenced: lease lost, writes refused", self.cluster)

    async def on_lease_regained(self) -> None:
        """A new lease: our old session's writers are fenced by bumping every owned epoch."""
        etcd = self.cache.etcd
        tx = etcd.tx
        while True:
            kvs, _ = await etcd.get_prefix(schema.VOLUMES.encode())
            bumped = []
            all_ok = True
            for key, value in kvs:
                vol = Volume.model_validate_json(value)
                if vol.owner != self.cluster:
                    continue
                new = vol.model_copy(update={"epoch": vol.epoch + 1})
                ok, _ = await etcd.txn([tx.value(key) == value], [tx.put(key, new.dump())])
                if ok:
                    bumped.append(new)
                    self.cache.own_write(volume=new)
                else:
                    all_ok = False
            if all_ok:
                break
        for vol in bumped:
            vs = self._open.get(vol.name)
            if vs is not None:
                await asyncio.to_thread(vs.set_epoch, vol.epoch)
            log.warning("volume %s: new epoch %d after lease regain", vol.name, vol.epoch)
        self.suspended = False
        self.metrics.fenced.set(0)
        # Ownership may have moved while we were cut off: fail back what we lost.
        self._roles_due.update(self.cache.view.volumes)
        self._roles_event.set()

    # -- publishing versions --------------------------------------------------------------
    async def stop(self) -> None:
        """After :meth:`run` was cancelled: publish the last versions and close the volumes."""
        await self.publish_now()
        with self._open_lock:
            for vs in self._open.values():
                vs.close()
            self._open.clear()

    async def _publish_forever(self) -> None:
        while True:
            await self._dirty_event.wait()
            self._dirty_event.clear()
            try:
                await self.publish_now()
            except GnsError as exc:  # etcd away: keep the volumes dirty and try again
                log.warning("publishing volume versions failed: %s", exc)
            await asyncio.sleep(self.publish_interval)

    async def _usage(self, name: str, vs: VolumeStorage) -> tuple[int, int] | None:
        """Files and bytes, recounted at most every few seconds; None if the count failed
        (the volume closed meanwhile). The count scans the catalog (~100 ns per file): off
        the loop, which a 1M-file volume would stall ~0.1 s each time."""
        now = time.monotonic()
        cached = self._usage_cache.get(name)
        if cached is None or now - cached[0] > 5.0:
            try:
                cached = (now, *await asyncio.to_thread(vs.usage))
            except (sqlite3.Error, ValueError, OSError) as exc:
                log.debug("volume %s: usage not counted: %s", name, exc)
                return None
            self._usage_cache[name] = cached
        return cached[1], cached[2]

    async def publish_now(self) -> None:
        names, self._dirty = self._dirty, set()
        if not names:
            return
        etcd = self.cache.etcd
        ops = []
        for name in sorted(names):
            vs = self._open.get(name)
            if vs is None:
                continue
            if vs.role != "primary":
                continue  # only the owner speaks for a volume's version
            usage = await self._usage(name, vs)
            if usage is None:
                continue
            files, nbytes = usage
            state = VolumeState(version=vs.version, epoch=vs.epoch, updated=time.time(),
                                files=files, bytes=nbytes)
            ops.append(etcd.tx.put(schema.volstate(name), state.dump()))
        if ops:
            try:
                await etcd.txn([], ops)
            except Exception:
                self._dirty |= names
                self._dirty_event.set()
                raise
