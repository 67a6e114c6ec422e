"""The owner's side of mirroring: one worker per (policy, target) of each volume it owns.

Workers run engine passes (``mirroring.engine.run_pass``) in the I/O thread pool, coalesce
triggers (many writes, one pass), publish the target's status to etcd after every pass and
while a target is behind, and back off after failures. Continuous policies are kicked by the
owner's own commits (no etcd hop); interval and manual passes, retries and catch-up come from
the federation leader or an operator through the ``Mirroring`` RPCs. ``mode: sync`` waits in
the write path until every sync target holds the write, or drops a target that cannot within
``sync_timeout`` out of the sync set, visibly (status, metric, log).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError

from cloud_adapters.errors import ObjectStoreError
from federation.controller.handler_io import IOPool
from federation.controller.metrics import ControllerMetrics
from federation.controller.replication import ClusterTarget
from federation.controller.rpc_errors import known
from federation.controller.volumes import VolumeManager
from mirroring.engine import PassResult, run_pass, verify
from mirroring.policy import MirrorPolicy, Target, stored_policies, stored_policy
from mirroring.protocols import VolumeSource
from mirroring.status import TargetStatus, replica_targets, status_key
from namespace import schema
from namespace.cache import NamespaceCache
from namespace.errors import GnsError, InvalidInput, NotFound, Unavailable

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class Worker:
    policy: str
    volume: str
    target: Target
    mode: str
    kick: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    status: TargetStatus | None = None
    running: bool = False
    dirty: bool = False
    failures: int = 0
    in_sync_set: bool = True
    done: asyncio.Condition = field(default_factory=asyncio.Condition)
    listeners: list[Progress] = field(default_factory=list)
    publishing: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One status publication at a time, so etcd ends up with the newest (see _publish)."""

    @property
    def name(self) -> str:
        return self.target.name


class MirrorRunner:
    def __init__(self, cluster: str, cache: NamespaceCache, volumes: VolumeManager,
                 metrics: ControllerMetrics, pool: ThreadPoolExecutor, tls_dir: Path | None,
                 sync_timeout: float = 5.0) -> None:
        self.cluster = cluster
        self.cache = cache
        self.volumes = volumes
        self.metrics = metrics
        self.pool = pool
        self.run_io = IOPool(pool).run
        self.tls_dir = tls_dir
        self.sync_timeout = sync_timeout
        self.workers: dict[tuple[str, str], Worker] = {}
        # Commit times of recent versions per volume: how long a target has been behind.
        self._commits: dict[str, collections.deque[tuple[int, float]]] = {}
        self._reconcile_soon = asyncio.Event()
        # Status publications started from the write path (owned here, cancelled by stop).
        self._publishing: set[asyncio.Task[None]] = set()
        cache.subscribe(self._on_change)
        volumes.subscribe_commits(self.committed)

    # -- lifecycle ------------------------------------------------------------------------
    async def run(self) -> None:
        """Reconcile workers with the policies and publish their statuses, until cancelled.
        The workers' tasks are this runner's: :meth:`stop` ends them."""
        self._reconcile_soon.set()
        await self._tick_forever()

    async def stop(self) -> None:
        tasks = [w.task for w in self.workers.values() if w.task] + list(self._publishing)
        for t in tasks:
            t.cancel()
        for t, result in zip(tasks, await asyncio.gather(*tasks, return_exceptions=True), strict=True):
            if isinstance(result, Exception):
                log.warning("%s had failed: %s", t.get_name(), result)

    def _on_change(self, kind: str, name: str, value: bytes | None) -> None:
        if kind in ("policy", "volume", "alive", "cluster"):
            self._reconcile_soon.set()
        if kind == "alive" and value is not None:
            for w in self.workers.values():  # a target came back: retry it now
                if w.target.cluster == name and w.failures:
                    w.failures = 0
                    w.kick.set()

    def policies_of(self, volume: str) -> list[MirrorPolicy]:
        return [p for p in stored_policies(self.cache.view) if p.spec.volume == volume]

    def _reconcile(self) -> None:
        view = self.cache.view
        wanted: dict[tuple[str, str], tuple[MirrorPolicy, Target]] = {}
        for p in stored_policies(view):
            vol = view.volumes.get(p.spec.volume)
            if vol is None or vol.owner != self.cluster:
                continue
            for t in replica_targets(view, p, self.cluster):
                wanted[(p.name, t.name)] = (p, t)
        for key in list(self.workers):
            if key not in wanted:
                gone = self.workers.pop(key)
                if gone.task:
                    gone.task.cancel()
        for key, (p, t) in wanted.items():
            w: Worker | None = self.workers.get(key)
            if w is None or w.target != t or (w.mode != p.spec.mode and t.name in p.target_names):
                if w is not None and w.task:
                    w.task.cancel()
                mode = p.spec.mode if t.name in p.target_names else "continuous"
                w = Worker(policy=p.name, volume=p.spec.volume, target=t, mode=mode)
                w.status = self._load_status(p.name, t.name, p.spec.volume)
                # Out of sync as an earlier owner process left it: until a pass brings it
                # to the head (then it rejoins, and writes wait for it again).
                w.in_sync_set = not w.status.out_of_sync
                w.dirty = True
                w.task = asyncio.create_task(self._run_worker(w), name=f"mirror-{p.name}-{t.name}")
                self.workers[key] = w
                if w.mode in ("continuous", "sync"):
                    # Catch up with whatever happened while nobody mirrored: by the worker's
                    # mode, not the policy's (a former owner is a continuous replica under a
                    # manual policy too; it waited for the next write, shown Syncing at v0).
                    w.kick.set()

    def _load_status(self, policy: str, target: str, volume: str) -> TargetStatus:
        raw = self.cache.view.mirror_status.get(status_key(policy, target))
        if raw:
            try:
                # A pass an earlier owner process was running died with it.
                return TargetStatus.model_validate(raw).model_copy(update={"syncing": False})
            except ValidationError:  # written by another release: start afresh
                pass
        return TargetStatus(policy=policy, volume=volume, target=target)

    # -- triggers ---------------------------------------------------------------------------
    def committed(self, volume: str, version: int) -> None:
        now = time.time()
        q = self._commits.setdefault(volume, collections.deque(maxlen=100_000))
        q.append((version, now))
        for w in self.workers.values():
            if w.volume != volume:
                continue
            if w.status is not None and w.status.pending_since is None:
                w.status = w.status.model_copy(update={"pending_since": now})
                # Publish now, not at the next tick: readers measure lag from it.
                task = asyncio.get_running_loop().create_task(self._publish(w), name=f"publish-{w.name}")
                self._publishing.add(task)
                task.add_done_callback(self._publishing.discard)
            if w.mode in ("continuous", "sync"):
                w.kick.set()

    def workers_for(self, policy: str, target: str = "") -> list[Worker]:
        found = [w for w in self.workers.values() if w.policy == policy and (not target or w.name == target)]
        if not found:
            p = stored_policy(self.cache.view, policy)
            if p is None:
                raise NotFound(f"mirror policy {policy!r} not found")
            vol = self.cache.view.volumes.get(p.spec.volume)
            if vol is None or vol.owner != self.cluster:
                raise Unavailable(f"cluster {self.cluster} does not own volume {p.spec.volume!r}")
            if target:
                raise NotFound(f"policy {policy!r} has no target {target!r}")
        return found

    async def run_now(self, w: Worker) -> TargetStatus | None:
        """Kick ``w`` and wait for the pass that covers the current version to end."""
        vs = await self.run_io(self.volumes.storage, w.volume, create=True)
        want = vs.version
        async with w.done:
            w.kick.set()
            await w.done.wait_for(lambda: (not w.running and not w.kick.is_set()
                                           and w.status is not None
                                           and (w.status.version >= want or self.failed_since_last_sync(w))))
        return w.status

    def failed_since_last_sync(self, w: Worker) -> bool:
        return bool(w.status and w.status.last_error and (w.status.error_at or 0) >= (w.status.synced_at or 0))

    async def wait_sync_targets(self, volume: str, version: int) -> None:
        """``mode: sync``: return once every sync target holds ``version`` (or left the set)."""
        sync_workers = [w for w in self.workers.values() if w.volume == volume and w.mode == "sync" and w.in_sync_set]
        if not sync_workers:
            return

        async def one(w: Worker) -> None:
            async with w.done:
                w.kick.set()
                await w.done.wait_for(lambda: w.status is not None and w.status.version >= version)

        for w in sync_workers:
            try:
                await asyncio.wait_for(one(w), self.sync_timeout)
            except TimeoutError:
                await self._leave_sync_set(w, version)

    async def _leave_sync_set(self, w: Worker, version: int) -> None:
        """Go on without ``w``, visibly, and first say in etcd that it is out of sync: the
        leader then never fails over to it while it misses acknowledged writes (SPEC §6: "so
        failing over to one loses nothing"). If that cannot be written, the write is not
        acknowledged either (Unavailable; it is committed here, as a timed-out write is)."""
        w.in_sync_set = False
        msg = f"left the sync set: no ack of v{version} within {self.sync_timeout}s"
        log.error("volume %s: sync target %s %s", w.volume, w.name, msg)
        self.metrics.fences.labels("sync_target_dropped").inc()
        async with w.publishing:
            w.status = sent = (w.status or TargetStatus(policy=w.policy, volume=w.volume, target=w.name)).model_copy(
                update={"last_error": msg, "error_at": time.time(), "out_of_sync": True, "updated": time.time()})
            w.dirty = True
            try:
                await self.cache.etcd.put(schema.mirror_status(w.policy, w.name), sent.model_dump_json().encode())
            except GnsError as exc:
                raise Unavailable(f"sync target {w.name} holds no v{version} and that could not be "
                                  f"recorded ({exc}): the write is committed but not acknowledged") from None

    # -- the worker -------------------------------------------------------------------------
    def _make_target(self, w: Worker, epoch: int) -> Any:
        if w.target.is_cluster:
            view = self.cache.view
            cid = w.target.cluster or ""
            spec = view.clusters.get(cid)
            if spec is None:
                raise NotFound(f"target cluster {cid} is not registered")
            if spec.linked_site:  # a policy stored before validation refused such targets
                raise InvalidInput(f"target {cid} is an edge site, which only dials out: it "
                                   "cannot hold a copy of this volume (its endpoint is its hub's)")
            if cid not in view.alive:
                raise Unavailable(f"target cluster {cid} is Down")
            return ClusterTarget(cid, w.volume, self.cluster, spec.endpoint, self.tls_dir, self.cluster, epoch,
                                 dirs=lambda: self.volumes.storage(w.volume, create=True).dirs())
        from cloud_adapters.registry import open_store
        from mirroring.targets import ObjectStoreTarget

        store = open_store(w.target.uri or "")
        if store.scheme == "file":
            store.make_container()  # like rclone: a local destination directory is created
        return ObjectStoreTarget(store, w.name, volume=w.volume)

    async def _run_worker(self, w: Worker) -> None:
        while True:
            await w.kick.wait()
            w.kick.clear()
            if self.volumes.suspended or self.volumes.volume(w.volume).owner != self.cluster:
                continue
            w.running = True
            w.status = (w.status or TargetStatus(policy=w.policy, volume=w.volume, target=w.name)).model_copy(
                update={"syncing": True})
            if w.mode in ("manual", "interval"):
                # Rare, often long passes: show Syncing at once. (Continuous passes are
                # frequent and short; the ticker shows the long ones.)
                await self._publish(w)
            started = time.time()
            try:
                result = await self.run_io(self._pass, w)
            except asyncio.CancelledError:
                raise
            except Exception as raised:  # any failure of a pass is the target's status, not ours
                w.failures += 1
                exc = known(raised, f"cluster {self.cluster}")  # our own disk may be the one full
                expected = isinstance(exc, (GnsError, ObjectStoreError))
                text = str(exc) if expected else f"{type(exc).__name__}: {exc}"
                log.warning("mirror %s -> %s failed: %s", w.policy, w.name, text, exc_info=not expected)
                w.status = w.status.model_copy(update={
                    "last_error": text[:500], "error_at": time.time(), "syncing": False})
                await self._finish(w)
                # Back off, but a kick (a new trigger, or the target turning Ready) ends it.
                try:
                    await asyncio.wait_for(w.kick.wait(), timeout=min(30.0, 0.5 * 2 ** min(w.failures, 6)))
                except TimeoutError:
                    if w.mode in ("continuous", "sync"):
                        w.kick.set()
                continue
            w.failures = 0
            vs = self.volumes.storage(w.volume)
            head = vs.version
            behind = result.version < head
            # Back into the sync set once it holds the head: every write acknowledged
            # without it is at most the head (acks follow commits), so it misses none.
            caught_up = result.committed and not behind
            if w.mode == "sync" and caught_up and (not w.in_sync_set or w.status.out_of_sync):
                w.in_sync_set = True
                w.status = w.status.model_copy(update={"out_of_sync": False})
                log.warning("volume %s: sync target %s rejoined the sync set", w.volume, w.name)
            w.status = w.status.model_copy(update={
                "version": result.version if result.committed else w.status.version,
                "epoch": vs.epoch,
                "synced_at": time.time() if result.committed else w.status.synced_at,
                "bytes": w.status.bytes + result.bytes_copied,
                "files": w.status.files + result.files_copied + result.files_deleted,
                "syncing": False,
                "pending_since": self._first_commit_after(w.volume, result.version, started) if behind else None,
            })
            await self._finish(w)
            if behind and w.mode in ("continuous", "sync"):
                w.kick.set()

    def _pass(self, w: Worker) -> PassResult:
        source = self._source(w.volume)
        target = self._make_target(w, source.epoch)
        try:
            def progress(nbytes: int, nfiles: int) -> None:
                for cb in list(w.listeners):
                    cb(nbytes, nfiles)

            return run_pass(source, target, progress=progress)
        finally:
            close = getattr(target, "close", None)
            if close:
                close()

    def _source(self, volume: str) -> VolumeSource:
        # A VolumeStorage is a VolumeSource; mypy only balks at list[FileMeta] from
        # changes_since, as lists are invariant.
        return cast(VolumeSource, self.volumes.storage(volume, create=True))

    def verify(self, w: Worker, repair: bool, deep: bool) -> Any:
        source = self._source(w.volume)
        target = self._make_target(w, source.epoch)
        try:
            return verify(source, target, repair=repair, deep=deep)
        finally:
            close = getattr(target, "close", None)
            if close:
                close()

    def _first_commit_after(self, volume: str, version: int, fallback: float) -> float:
        for v, t in self._commits.get(volume, ()):
            if v > version:
                return t
        return fallback

    async def _finish(self, w: Worker) -> None:
        w.running = False
        w.dirty = True
        await self._publish(w)
        async with w.done:
            w.done.notify_all()

    async def _publish(self, w: Worker) -> None:
        # The ticker, the write path and the worker all publish. Two puts in flight at once
        # may land in either order, and a "running" snapshot landing after the pass's result
        # left a target shown in Error after it had synced, until its next pass. So: one
        # put at a time per worker, each of the status as it is when its turn comes.
        async with w.publishing:
            if w.status is None:
                return
            sent = w.status = w.status.model_copy(update={"updated": time.time()})
            try:
                await self.cache.etcd.put(schema.mirror_status(w.policy, w.name), sent.model_dump_json().encode())
                if w.status is sent:  # not changed while the put was in flight
                    w.dirty = False
            except GnsError as exc:  # etcd away: the ticker publishes it again (w.dirty)
                log.warning("publishing mirror status %s/%s failed: %s", w.policy, w.name, exc)
        lag_v = max(0, self.volumes.storage(w.volume).version - w.status.version) if self.volumes.has_local(w.volume) else 0
        self.metrics.mirror_lag_versions.labels(w.policy, w.name).set(lag_v)
        lag_s = (time.time() - w.status.pending_since) if (lag_v and w.status.pending_since) else 0.0
        self.metrics.mirror_lag_seconds.labels(w.policy, w.name).set(lag_s)

    async def _tick_forever(self) -> None:
        while True:
            try:
                try:
                    await asyncio.wait_for(self._reconcile_soon.wait(), timeout=1.0)
                except TimeoutError:
                    pass
                if self._reconcile_soon.is_set():
                    self._reconcile_soon.clear()
                    self._reconcile()
                for w in list(self.workers.values()):
                    if w.dirty or w.running:
                        await self._publish(w)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("mirror ticker failed")
                await asyncio.sleep(1.0)

