"""How long each cluster has been gone: what automatic failover waits on.

Every controller counts Down time all the time (from the namespace watch), so a newly
elected leader already knows how long an owner has been gone; the leader also probes the
owners of automatic-failover volumes, because an owner killed or frozen stops answering
seconds before its lease runs out.
"""
from __future__ import annotations

import asyncio
import time

import grpc

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.channels import AioChannelPool
from mirroring.promotion import automatic_policies
from namespace.cache import NamespaceCache


class OwnerLiveness:
    def __init__(self, cluster: str, cache: NamespaceCache, peers: AioChannelPool) -> None:
        self.cluster = cluster
        self.cache = cache
        self.peers = peers
        # When each cluster was first seen Down.
        self.down_since: dict[str, float] = {}
        # When the health probes of an owner started failing in a row.
        self.unreachable_since: dict[str, float] = {}
        now = time.time()
        for cid in cache.view.clusters:
            if cid not in cache.view.alive:
                self.down_since[cid] = now  # Down before we looked: count from now
        cache.subscribe(self._track)

    def _track(self, kind: str, name: str, value: bytes | None) -> None:
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
        """On the leader: probe the owners of automatic-failover volumes, forever."""
        while True:
            view = self.cache.view
            owners = {view.volumes[p.spec.volume].owner for p in automatic_policies(view)
                      if p.spec.volume in view.volumes}
            for cid in owners - {self.cluster}:
                if await self._answers(cid, period):
                    self.unreachable_since.pop(cid, None)
                else:
                    self.unreachable_since.setdefault(cid, time.time() - period)
            for cid in list(self.unreachable_since):
                if cid not in owners:
                    self.unreachable_since.pop(cid)
            await asyncio.sleep(period)

    async def _answers(self, cid: str, timeout: float) -> bool:
        spec = self.cache.view.clusters.get(cid)
        if spec is None or not spec.endpoint:
            return False
        try:
            await pb_grpc.FederationStub(self.peers.get(spec.endpoint)).Health(
                pb.HealthRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
        return True
