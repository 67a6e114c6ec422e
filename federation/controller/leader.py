"""This controller's part in federation leadership: campaign, and while leader run the
mirror scheduler (and failover), reaching owners through the ``Mirroring`` RPCs."""
from __future__ import annotations

import asyncio
import logging
import time

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.channels import AioChannelPool
from federation.controller.metrics import ControllerMetrics
from federation.controller.mirrors import MirrorRunner
from federation.controller.volumes import VolumeManager
from mirroring.leader import LeaderElection
from mirroring.policy import stored_policy
from mirroring.scheduler import Scheduler
from namespace.cache import NamespaceCache
from namespace.errors import NotFound, Unavailable
from namespace.registry import LeaseKeeper

log = logging.getLogger(__name__)


class FederationLeader:
    def __init__(self, cluster: str, cache: NamespaceCache, lease: LeaseKeeper, volumes: VolumeManager,
                 mirrors: MirrorRunner, peers: AioChannelPool, metrics: ControllerMetrics) -> None:
        self.cluster = cluster
        self.cache = cache
        self.lease = lease
        self.volumes = volumes
        self.mirrors = mirrors
        self.peers = peers
        self.metrics = metrics
        self._duties: list[asyncio.Task[None]] = []
        # When each cluster was first seen Down, tracked by every controller all the time,
        # so a newly elected leader already knows how long an owner has been gone.
        self.down_since: dict[str, float] = {}
        # When the leader's health probes of an owner started failing in a row: an owner
        # killed or frozen stops answering seconds before its lease runs out.
        self.unreachable_since: dict[str, float] = {}
        now = time.time()
        for cid in cache.view.clusters:
            if cid not in cache.view.alive:
                self.down_since[cid] = now  # Down before we looked: count from now
        cache.subscribe(self._track_liveness)
        from federation.controller.failover import FailoverOps

        self.failover = FailoverOps(self)
        self.election = LeaderElection(
            cache, cluster, lambda: lease.lease_id, self._elected, self._demoted,
            can_lead=lambda: not volumes.suspended and not lease.fenced(),
        )

    def _track_liveness(self, kind: str, name: str, value: bytes | None) -> None:
        if kind != "alive":
            return
        if value is not None:
            self.down_since.pop(name, None)
            return
        # The lease expired now, so it was last renewed one TTL ago and its holder stopped
        # renewing (it renews every TTL/3) at least 2/3 of a TTL ago.
        spec = self.cache.view.clusters.get(name)
        ttl = spec.lease_ttl if spec is not None else 0
        self.down_since[name] = time.time() - 2 * ttl / 3

    def gone_since(self) -> dict[str, float]:
        """Per cluster, since when it has been gone: the earlier of lease expiry (Down) and
        the first of an unbroken run of failed probes. Promotion still waits for Down."""
        out = dict(self.down_since)
        for cid, t in self.unreachable_since.items():
            out[cid] = min(t, out.get(cid, t))
        return out

    async def probe_owners(self, period: float = 0.5) -> None:
        from mirroring.failover import automatic_policies

        while True:
            view = self.cache.view
            owners = {view.volumes[p.spec.volume].owner for p in automatic_policies(view)
                      if p.spec.volume in view.volumes}
            for cid in owners - {self.cluster}:
                spec = view.clusters.get(cid)
                ok = False
                if spec is not None and spec.endpoint:
                    try:
                        stub = pb_grpc.FederationStub(self.peers.get(spec.endpoint))
                        await stub.Health(pb.HealthRequest(), timeout=period)
                        ok = True
                    except Exception:
                        ok = False
                if ok:
                    self.unreachable_since.pop(cid, None)
                else:
                    self.unreachable_since.setdefault(cid, time.time() - period)
            for cid in list(self.unreachable_since):
                if cid not in owners:
                    self.unreachable_since.pop(cid)
            await asyncio.sleep(period)

    async def run(self) -> None:
        await self.election.run()

    async def stop(self) -> None:
        await self._demoted()
        await self.election.resign()

    async def _elected(self) -> None:
        scheduler = Scheduler(lambda: self.cache.view, self.trigger)
        self._duties = [asyncio.create_task(scheduler.run(), name="mirror-scheduler")]
        self._duties += self._failover_duties()

    def _failover_duties(self) -> list[asyncio.Task[None]]:
        from federation.controller.failover import failover_task

        return [failover_task(self), asyncio.create_task(self.probe_owners(), name="owner-probes")]

    async def _demoted(self) -> None:
        for t in self._duties:
            t.cancel()
        for t in self._duties:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._duties = []

    async def trigger(self, policy: str, target: str) -> None:
        """Ask the owner of ``policy``'s volume to run a pass to ``target`` now."""
        view = self.cache.view
        p = stored_policy(view, policy)
        if p is None:
            raise NotFound(f"mirror policy {policy!r} not found")
        owner = view.volumes[p.spec.volume].owner
        if owner == self.cluster:
            for w in self.mirrors.workers_for(policy, target):
                w.kick.set()
            return
        spec = view.clusters.get(owner)
        if spec is None or owner not in view.alive:
            raise Unavailable(f"owner {owner} is Down")
        stub = pb_grpc.MirroringStub(self.peers.get(spec.endpoint))
        async for _ in stub.Sync(pb.MirrorSyncRequest(policy=policy, target=target, wait=False), timeout=10):
            pass
