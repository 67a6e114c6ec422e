"""Electing the federation leader through etcd.

The leader key is bound to the winner's cluster lease: when its controller dies or is cut
off, etcd deletes the key with the lease and every other controller's watch sees it gone
and campaigns again. Losing the key (for example after our own lease lapsed) demotes us at
once; stepping down while our lease lives (fenced for a moment) deletes the key, which would
otherwise outlive our term. Elections are one transaction (create-if-absent), so there is
never more than one.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from namespace import schema
from namespace.cache import NamespaceCache
from namespace.errors import GnsError

log = logging.getLogger(__name__)


class LeaderElection:
    def __init__(self, cache: NamespaceCache, cluster: str, lease_id: Callable[[], int | None],
                 on_elected: Callable[[], Awaitable[None]], on_demoted: Callable[[], Awaitable[None]],
                 *, can_lead: Callable[[], bool] = lambda: True) -> None:
        self.cache = cache
        self.cluster = cluster
        self._lease_id = lease_id
        self._on_elected = on_elected
        self._on_demoted = on_demoted
        self._can_lead = can_lead
        self.is_leader = False
        self._wake = asyncio.Event()

    def _changed(self, kind: str, name: str, value: bytes | None) -> None:
        if kind in ("leader", "alive"):
            self._wake.set()

    async def run(self) -> None:
        self.cache.subscribe(self._changed)
        etcd = self.cache.etcd
        tx = etcd.tx
        key = schema.LEADER.encode()
        while True:
            try:
                holder = self.cache.view.leader
                lease = self._lease_id()
                if self.is_leader and (holder != self.cluster or lease is None or not self._can_lead()):
                    self.is_leader = False
                    log.warning("cluster %s is no longer the federation leader", self.cluster)
                    await self._on_demoted()
                if not self.is_leader and holder == self.cluster:
                    # Our key outlives our term when we stepped down while our lease lived
                    # on (fenced by a freeze shorter than the TTL), or a killed predecessor
                    # left it: nobody else campaigns while it stands, so end it.
                    await self._release()
                if not self.is_leader and holder is None and lease is not None and self._can_lead():
                    ok, _ = await etcd.txn(
                        [tx.create(key) == 0], [tx.put(key, self.cluster.encode(), lease=lease)]
                    )
                    if ok:
                        self.is_leader = True
                        self.cache.own_write(leader=self.cluster)
                        log.warning("cluster %s is the federation leader", self.cluster)
                        await self._on_elected()
            except asyncio.CancelledError:
                raise
            except GnsError as exc:  # etcd away: try again at the next change or tick
                log.warning("leader election step failed: %s", exc)
            except Exception:
                log.exception("leader election step failed unexpectedly")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            except TimeoutError:
                pass

    async def resign(self) -> None:
        if self.is_leader:
            try:
                await self._release()
            except GnsError:  # best effort: the key goes with our lease anyway
                pass
            self.is_leader = False

    async def _release(self) -> None:
        """Delete the leader key if it names us."""
        tx = self.cache.etcd.tx
        key = schema.LEADER.encode()
        await self.cache.etcd.txn([tx.value(key) == self.cluster.encode()], [tx.delete(key)])
