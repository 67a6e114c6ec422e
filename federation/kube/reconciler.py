"""The level-triggered loop: finalizer first, then apply, then status; retried until it holds.

Each informer notifies keys; one worker per resource kind takes them in turn (a key queued
twice is reconciled once) and reads the object from the informer's cache, so it always acts
on the newest state. A periodic resync re-applies everything (the namespace can change
under a resource: a volume appears, a mirror target falls behind) and refreshes status.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from federation.kube.api import KubeApi, KubeConfig
from federation.kube.conditions import merge
from federation.kube.handlers import Handler
from federation.kube.informer import Informer, Key
from federation.kube.mounts import GlobalMountHandler
from federation.kube.policies import MirrorPolicyHandler
from namespace.errors import Conflict, GnsError, NotFound
from namespace.etcd import Etcd

log = logging.getLogger(__name__)

FINALIZER = "gns.io/finalizer"


class KindLoop:
    """Informer + work queue + worker for one resource kind."""

    def __init__(self, api: KubeApi, handler: Handler, resync: float,
                 observe: Callable[[str, float], None] | None = None) -> None:
        self.api = api
        self.handler = handler
        self.resync = resync
        self.observe = observe
        self.queue: asyncio.Queue[Key] = asyncio.Queue()
        self.pending: set[Key] = set()
        self.informer = Informer(api, handler.resource, self._enqueue)
        self.seen_at: dict[Key, float] = {}
        self.errors = 0

    def _enqueue(self, key: Key) -> None:
        self.seen_at.setdefault(key, time.monotonic())
        if key not in self.pending:
            self.pending.add(key)
            self.queue.put_nowait(key)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.informer.run(), name=f"kube-informer-{self.handler.resource.plural}")
            tg.create_task(self._work(), name=f"kube-worker-{self.handler.resource.plural}")
            tg.create_task(self._resync(), name=f"kube-resync-{self.handler.resource.plural}")

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync)
            for key in list(self.informer.cache):
                self._enqueue(key)

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            self.pending.discard(key)
            obj = self.informer.cache.get(key)
            if obj is None:
                self.seen_at.pop(key, None)
                continue
            try:
                await self.reconcile(obj)
                started = self.seen_at.pop(key, None)
                if started is not None and self.observe is not None:
                    self.observe(self.handler.resource.kind, time.monotonic() - started)
            except NotFound:
                self.seen_at.pop(key, None)  # deleted meanwhile: its DELETED event follows
            except GnsError as exc:
                # 409 (someone changed the object first) or etcd/API briefly away: retry
                self.errors += 1
                log.info("reconciling %s %s/%s: %s; retrying", self.handler.resource.kind,
                         key[0], key[1], exc)
                asyncio.get_running_loop().call_later(
                    0.2 if isinstance(exc, Conflict) else 1.0, self._enqueue, key)
            except Exception:
                self.errors += 1
                log.exception("reconciling %s %s/%s failed", self.handler.resource.kind, *key)
                asyncio.get_running_loop().call_later(5.0, self._enqueue, key)

    async def reconcile(self, obj: dict[str, Any]) -> None:
        res = self.handler.resource
        meta = obj["metadata"]
        ns, name = meta.get("namespace", ""), meta["name"]
        finalizers = list(meta.get("finalizers") or [])
        if meta.get("deletionTimestamp"):
            if FINALIZER in finalizers:
                await self.handler.remove(obj)
                await self.api.patch(res, ns, name, {"metadata": {
                    "finalizers": [f for f in finalizers if f != FINALIZER],
                    "resourceVersion": meta["resourceVersion"]}})
            return
        if FINALIZER not in finalizers:
            obj = await self.api.patch(res, ns, name, {"metadata": {
                "finalizers": [*finalizers, FINALIZER],
                "resourceVersion": meta["resourceVersion"]}})
        status = await self.handler.apply(obj)
        old = obj.get("status") or {}
        status["conditions"] = merge(old.get("conditions"), status.get("conditions", []))
        if status != old:
            # a merge patch merges maps: null out what the new status no longer has
            patch = {**{k: None for k in old if k not in status}, **status}
            await self.api.patch(res, ns, name, {"status": patch}, sub="status")


class KubeReconciler:
    """What ``gns controller --kubernetes`` runs beside the data plane."""

    def __init__(self, cluster: str, etcd: Etcd, config: KubeConfig | None = None,
                 resync: float = 10.0,
                 observe: Callable[[str, float], None] | None = None) -> None:
        self.cluster = cluster
        self.etcd = etcd
        self.config = config
        self.resync = resync
        self.observe = observe
        self.loops: list[KindLoop] = []

    async def run(self) -> None:
        config = self.config or KubeConfig.load()
        async with KubeApi(config) as api:
            self.loops = [
                KindLoop(api, MirrorPolicyHandler(self.cluster, self.etcd), self.resync, self.observe),
                KindLoop(api, GlobalMountHandler(self.cluster, self.etcd), self.resync, self.observe),
            ]
            log.info("reconciling MirrorPolicy and GlobalMount from %s", config.server)
            async with asyncio.TaskGroup() as tg:
                for loop in self.loops:
                    tg.create_task(loop.run(), name=f"kube-{loop.handler.resource.plural}")
