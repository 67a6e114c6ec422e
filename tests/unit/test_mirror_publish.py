"""The owner's mirror statuses reach etcd newest last, whoever publishes them.

A pass's result and the ticker's "still running" snapshot may be published at once; the
etcd puts of two such publications can land in either order. Here an in-memory stand-in for
the etcd client (no server: the order of two puts is what is under test, and a real etcd
gives no handle on it) holds the first put back, as a busy etcd may.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from federation.controller.metrics import ControllerMetrics
from federation.controller.mirrors import MirrorRunner, Worker
from mirroring.policy import Target
from mirroring.status import TargetStatus


class SlowFirstPutEtcd:
    """Stores puts in a dict; the first put waits ``delay`` before it lands."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.data: dict[bytes, bytes] = {}
        self.puts = 0

    async def put(self, key: bytes, value: bytes) -> None:
        self.puts += 1
        if self.puts == 1:
            await asyncio.sleep(self.delay)
        self.data[key] = value


class Collaborators:
    """What MirrorRunner touches while publishing: the cache's etcd and subscriptions, and a
    volume manager that holds no local copy (so no lag figures are computed)."""

    def __init__(self, etcd: SlowFirstPutEtcd) -> None:
        self.etcd = etcd

    def subscribe(self, listener: Any) -> None:
        pass

    def subscribe_commits(self, listener: Any) -> None:
        pass

    def has_local(self, volume: str) -> bool:
        return False


def runner(etcd: SlowFirstPutEtcd) -> MirrorRunner:
    parts = cast(Any, Collaborators(etcd))
    return MirrorRunner("onprem-b", parts, parts, ControllerMetrics("onprem-b"),
                        ThreadPoolExecutor(1), None)


def worker(**status: Any) -> Worker:
    w = Worker(policy="ml-dr", volume="ml", target=Target(cluster="onprem-a"), mode="continuous")
    w.status = TargetStatus(policy="ml-dr", volume="ml", target="onprem-a", **status)
    return w


def stored(etcd: SlowFirstPutEtcd) -> TargetStatus:
    (value,) = etcd.data.values()
    return TargetStatus.model_validate_json(value)


def test_the_pass_result_outlives_an_earlier_snapshot_still_in_flight() -> None:
    async def scenario() -> TargetStatus:
        etcd = SlowFirstPutEtcd(delay=0.05)
        r = runner(etcd)
        w = worker(last_error="cluster onprem-a is failing back volume 'ml'", error_at=1.0, syncing=True)
        snapshot = asyncio.create_task(r._publish(w))  # the ticker, while the pass runs
        await asyncio.sleep(0)  # its put is in flight
        assert w.status is not None
        w.status = w.status.model_copy(update={"version": 4, "synced_at": 2.0, "syncing": False})
        await r._finish(w)  # the pass's result
        await snapshot
        return stored(etcd)

    st = asyncio.run(scenario())
    assert (st.version, st.synced_at, st.syncing) == (4, 2.0, False), st


def test_a_status_changed_during_a_put_stays_dirty_for_the_ticker() -> None:
    async def scenario() -> bool:
        etcd = SlowFirstPutEtcd(delay=0.05)
        r = runner(etcd)
        w = worker()
        w.dirty = True
        publishing = asyncio.create_task(r._publish(w))
        await asyncio.sleep(0)
        # e.g. a sync target leaving the sync set marks the status dirty, without publishing
        assert w.status is not None
        w.status = w.status.model_copy(update={"last_error": "left the sync set", "error_at": 3.0})
        w.dirty = True
        await publishing
        return w.dirty

    assert asyncio.run(scenario()) is True
