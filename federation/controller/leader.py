"""This controller's part in federation leadership: campaign, and while leader run the
mirror scheduler (reaching owners through the ``Mirroring`` RPCs) and the other duties
the process hands it (automatic failover, owner probes). It knows nothing of failover."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import grpc

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.api.errors import from_rpc_error
from federation.channels import AioChannelPool
from federation.controller.mirrors import MirrorRunner
from federation.controller.volumes import VolumeManager
from mirroring.election import LeaderElection
from mirroring.policy import stored_policy
from mirroring.scheduler import Scheduler
from namespace.cache import NamespaceCache
from namespace.errors import NotFound, Unavailable
from namespace.registry import LeaseKeeper

log = logging.getLogger(__name__)


class FederationLeader:
    """Campaigns for leadership; while leader, runs the mirror scheduler and the ``duties``
    it was given (failover, owner probes), and stops them all when demoted."""

    def __init__(self, cluster: str, cache: NamespaceCache, lease: LeaseKeeper, volumes: VolumeManager,
                 mirrors: MirrorRunner, peers: AioChannelPool,
                 duties: Sequence[Callable[[], Coroutine[Any, Any, None]]] = ()) -> None:
        self.cluster = cluster
        self.cache = cache
        self.mirrors = mirrors
        self.peers = peers
        self.duties = list(duties)
        self._running: list[asyncio.Task[None]] = []
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
        self._running = [asyncio.create_task(scheduler.run(), name="mirror-scheduler")]
        self._running += [asyncio.create_task(duty(), name=getattr(duty, "__qualname__", "duty"))
                          for duty in self.duties]

    async def _demoted(self) -> None:
        tasks, self._running = self._running, []
        for t in tasks:
            t.cancel()
        for t, result in zip(tasks, await asyncio.gather(*tasks, return_exceptions=True), strict=True):
            if isinstance(result, Exception):
                log.warning("leader duty %s had failed: %s", t.get_name(), result)

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
        try:
            async for _ in stub.Sync(pb.MirrorSyncRequest(policy=policy, target=target, wait=False), timeout=10):
                pass
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, f"owner {owner}") from None
