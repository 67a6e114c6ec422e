"""Leader election over a real etcd: a leader that steps down while its lease lives on (a
freeze shorter than the TTL fences it for a moment) hands the key back, so another
controller is elected at once instead of when that lease ends (never, while it is renewed)."""
from __future__ import annotations

import asyncio
from collections.abc import Callable

from federation.local.etcd_server import EtcdCluster
from mirroring.election import LeaderElection
from namespace import schema
from namespace.cache import NamespaceCache
from namespace.etcd import Etcd, EtcdConfig

LEASE_TTL = 60  # far beyond the test: only a released key lets the other side in


async def _until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _scenario(urls: str) -> None:
    etcd = await Etcd.connect(EtcdConfig.parse(urls))
    caches = [NamespaceCache(etcd), NamespaceCache(etcd)]
    tasks: list[asyncio.Task[None]] = []
    try:
        for c in caches:
            await c.start()
        leases = [await etcd.call(etcd.client.lease, LEASE_TTL) for _ in caches]
        fit = {"a": True, "b": True}
        events: list[str] = []

        def election(cid: str, i: int) -> LeaderElection:
            async def elected() -> None:
                events.append(f"{cid} elected")

            async def demoted() -> None:
                events.append(f"{cid} demoted")

            return LeaderElection(caches[i], cid, lambda: leases[i].id, elected, demoted,
                                  can_lead=lambda: fit[cid])

        a, b = election("a", 0), election("b", 1)
        tasks.append(asyncio.create_task(a.run()))
        await _until(lambda: a.is_leader, 10, "a elected")
        tasks.append(asyncio.create_task(b.run()))
        await asyncio.sleep(0.3)
        assert (a.is_leader, b.is_leader, caches[1].view.leader) == (True, False, "a")

        fit["a"] = False  # fenced for a moment; its lease is still held
        await _until(lambda: b.is_leader, 10, "b elected after a stepped down")
        fit["a"] = True
        await _until(lambda: caches[0].view.leader == "b", 10, "a sees b lead")
        await asyncio.sleep(1.5)  # a's loop ticks again: it must not take the key back
        assert (a.is_leader, b.is_leader) == (False, True)
        assert events == ["a elected", "a demoted", "b elected"]
        got = await etcd.call(etcd.client.get, schema.LEADER.encode())
        assert got is not None and got.value == b"b"
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in caches:
            await c.stop()
        await etcd.close()


def test_a_leader_that_steps_down_hands_the_key_back(etcd: EtcdCluster) -> None:
    asyncio.run(_scenario(etcd.urls))
