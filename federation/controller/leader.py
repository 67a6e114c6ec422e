"""This controller's part in federation leadership: campaign, and while leader run the
mirror scheduler (and failover), reaching owners through the ``Mirroring`` RPCs."""
from __future__ import annotations

import asyncio
import logging

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.channels import AioChannelPool
from federation.controller.metrics import ControllerMetrics
from federation.controller.mirrors import MirrorRunner
from federation.controller.volumes import VolumeManager
from mirroring.leader import LeaderElection
from mirroring.policy import MirrorPolicy
from mirroring.scheduler import Scheduler
from namespace.cache import NamespaceCache
from namespace.errors import Unavailable
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
        self.election = LeaderElection(
            cache, cluster, lambda: lease.lease_id, self._elected, self._demoted,
            can_lead=lambda: not volumes.suspended and not lease.fenced(),
        )

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
        try:
            from federation.controller.failover import failover_task
        except ImportError:
            return []
        return [failover_task(self)]

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
        p = MirrorPolicy.from_stored(view.policies[policy])
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
