"""Cluster registration and the liveness lease that makes a cluster ``Ready``.

A controller registers its cluster spec and an ``alive/<id>`` key bound to an etcd lease in
one transaction that fails if the key already exists, so a second live controller with the
same id is refused. :class:`LeaseKeeper` renews the lease and keeps a conservative clock of
how long the lease is certainly still alive: writers consult :meth:`LeaseKeeper.fenced`
and stop accepting writes *before* etcd could expire the lease (self-fencing, SPEC §5).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from typing import Protocol

from namespace import schema
from namespace.errors import Conflict, Unavailable
from namespace.etcd import FAILURES, Etcd
from namespace.models import ClusterSpec

log = logging.getLogger(__name__)


def instance_id() -> str:
    """Who holds a lease: enough to tell a restarted controller from the old one."""
    return f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"


def _holder(value: bytes) -> dict[str, str]:
    try:
        found = json.loads(value)
        return found if isinstance(found, dict) else {}
    except ValueError:
        return {}


class LeaseListener(Protocol):
    """What a holder of the lease's fence (the volume manager) hears about."""

    async def on_lease_lost(self) -> None: ...

    async def on_lease_regained(self) -> None: ...


class LeaseKeeper:
    """Holds one cluster's liveness lease and renews it every ``ttl / 3`` seconds."""

    def __init__(
        self,
        etcd: Etcd,
        spec: ClusterSpec,
        ttl: int,
        *,
        node_id: str = "",
    ) -> None:
        if ttl < 2:
            raise ValueError("lease TTL must be at least 2 seconds")
        self.etcd = etcd
        self.spec = spec
        self.ttl = ttl
        self.lease_id: int | None = None
        self.instance = instance_id()
        # Stable across restarts of the same controller (kept in its data dir, which it
        # holds locked): lets a restart take over the lease its killed predecessor left.
        self.node_id = node_id
        self._valid_until = 0.0  # monotonic; the lease is certainly alive before this
        # Stop writing this long before the lease could expire: covers a renewal in flight
        # and the scheduling delay between the check and the commit.
        self.margin = max(0.5, min(2.0, ttl * 0.25))
        self._listeners: list[LeaseListener] = []
        self.renewals = 0
        self.renewal_failures = 0
        self.losses = 0

    # -- fencing ----------------------------------------------------------------------------
    def fenced(self) -> bool:
        """True when writes must stop: the lease might expire (or has) before they commit."""
        return time.monotonic() >= self._valid_until - self.margin

    # -- lifecycle --------------------------------------------------------------------------
    async def register(self) -> None:
        """Grant a lease and claim ``alive/<id>``; :class:`Conflict` if someone holds it.

        A key left by a dead controller with our node id (our own previous incarnation:
        the caller holds the data-dir lock, so it cannot still be running) is taken over
        at once instead of waiting out its TTL.
        """
        tx = self.etcd.tx
        alive_key = schema.alive(self.spec.id)
        value = json.dumps({"node": self.node_id, "instance": self.instance}).encode()
        for _ in range(3):
            sent = time.monotonic()
            lease = await self.etcd.call(self.etcd.client.lease, self.ttl)
            ok, _ = await self.etcd.txn(
                [tx.create(alive_key) == 0],
                [
                    tx.put(schema.cluster(self.spec.id), self.spec.dump()),
                    tx.put(alive_key, value, lease=lease.id),
                ],
            )
            if ok:
                self.lease_id = lease.id
                self._valid_until = sent + lease.ttl
                log.info("cluster %s registered (lease %x, ttl %ss)", self.spec.id, lease.id, lease.ttl)
                return
            await self.etcd.call(self.etcd.client.revoke_lease, lease.id)
            held = await self.etcd.call(self.etcd.client.get, alive_key)
            if held is None:
                continue  # expired meanwhile: try again
            if not self.node_id or _holder(held.value).get("node") != self.node_id:
                break
            log.warning("cluster %s: taking over the lease of our previous incarnation", self.spec.id)
            try:
                await self.etcd.call(self.etcd.client.revoke_lease, held.lease)
            except Unavailable:  # already gone
                pass
        raise Conflict(f"cluster {self.spec.id!r} is already live (another controller holds it)")

    def subscribe(self, listener: LeaseListener) -> None:
        """Tell ``listener`` when the lease is lost and when a new one is held."""
        self._listeners.append(listener)

    async def stop(self, *, revoke: bool = True) -> None:
        """After :meth:`renew_forever` was cancelled: fence now and end the lease."""
        self._valid_until = 0.0
        if revoke and self.lease_id is not None:
            try:
                await asyncio.wait_for(
                    self.etcd.client.revoke_lease(self.lease_id), timeout=2.0
                )
            except Exception:  # best effort: the lease expires by itself anyway
                log.debug("revoking lease failed", exc_info=True)
        self.lease_id = None

    async def renew_forever(self) -> None:
        """Renew every ``ttl / 3`` until cancelled; on loss fence, re-register, tell listeners."""
        period = self.ttl / 3
        while True:
            await asyncio.sleep(period)
            if time.monotonic() >= self._valid_until:
                # We were frozen or cut off past the TTL: the lease is gone whatever etcd says.
                await self._lost()
                continue
            sent = time.monotonic()
            try:
                reply = await asyncio.wait_for(
                    self.etcd.client.refresh_lease(self.lease_id), timeout=max(0.5, period)
                )
            except asyncio.CancelledError:
                raise
            except FAILURES as exc:
                self.renewal_failures += 1
                log.warning("cluster %s: lease renewal failed: %s", self.spec.id, exc)
                continue
            if reply is None or reply.TTL <= 0:
                await self._lost()
                continue
            self._valid_until = sent + reply.TTL
            self.renewals += 1

    async def _lost(self) -> None:
        self.losses += 1
        self._valid_until = 0.0
        log.warning("cluster %s: lease lost; fenced, re-registering", self.spec.id)
        for listener in self._listeners:
            await listener.on_lease_lost()
        if self.lease_id is not None:
            try:  # if etcd still thinks the old lease lives, end it so we can claim anew
                await asyncio.wait_for(self.etcd.client.revoke_lease(self.lease_id), 1.0)
            except FAILURES:
                pass
        while True:
            try:
                await self.register()
                break
            except Conflict:
                # Our old alive key may still be held by the expiring lease: wait it out.
                await asyncio.sleep(0.5)
            except Unavailable as exc:
                log.warning("cluster %s: re-register failed: %s", self.spec.id, exc)
                await asyncio.sleep(0.5)
        for listener in self._listeners:
            await listener.on_lease_regained()
