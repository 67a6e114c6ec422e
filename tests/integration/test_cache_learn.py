"""A controller's cache asked about a volume or mount it has not seen yet (the caller made it
a moment ago; this watch is behind) looks in etcd, and waits for its watch only when etcd
has it: no "not found" for what exists, no wait for what does not (real etcd)."""
from __future__ import annotations

import asyncio
import time

from federation.local.etcd_server import EtcdCluster
from namespace import schema
from namespace.cache import NamespaceCache
from namespace.etcd import Etcd, EtcdConfig
from namespace.models import Mount, Volume


async def _scenario(urls: str) -> None:
    etcd = await Etcd.connect(EtcdConfig.parse(urls))
    cache = NamespaceCache(etcd)
    follow: asyncio.Task[None] | None = None
    try:
        await cache.load()  # a snapshot, and no watch yet: the cache is behind from here on
        vol = Volume(name="learn-v", owner="learn-c")
        await etcd.put(schema.volume(vol.name), vol.dump())
        await etcd.put(schema.mount("/learn/m"), Mount(path="/learn/m", volume=vol.name).dump())
        orphan = Mount(path="/learn/orphan", volume="learn-missing")  # names no volume
        await etcd.put(schema.mount(orphan.path), orphan.dump())
        assert "learn-v" not in cache.view.volumes

        by_volume = asyncio.create_task(cache.learn(volume="learn-v", timeout=10))
        by_path = asyncio.create_task(cache.learn(path="/learn/m/a/b", timeout=10))
        await asyncio.sleep(0.2)
        assert not by_volume.done() and not by_path.done()  # etcd has them: they wait
        follow = asyncio.create_task(cache.follow())  # the watch catches up
        assert await by_volume and await by_path
        assert cache.view.resolve("/learn/m/a/b") is not None

        started = time.monotonic()  # what etcd does not have is not waited for
        assert not await cache.learn(volume="learn-nope", timeout=10)
        assert not await cache.learn(path="/learn/unmounted/x", timeout=10)
        assert not await cache.learn(path="/learn/orphan/x", timeout=10)
        assert time.monotonic() - started < 2
    finally:
        if follow is not None:
            follow.cancel()
            await asyncio.gather(follow, return_exceptions=True)
        await etcd.close()


def test_learn_waits_for_what_etcd_has_and_only_for_that(etcd: EtcdCluster) -> None:
    asyncio.run(_scenario(etcd.urls))
