"""The namespace cache loads in pages at one revision (issue 14): the same view as one big
read, and nothing written between pages leaks in (the watch delivers it after)."""
from __future__ import annotations

import asyncio

import pytest

from federation.local.etcd_server import EtcdCluster
from namespace import cache as nscache
from namespace import schema
from namespace.etcd import Etcd, EtcdConfig
from namespace.models import Mount


async def _scenario(urls: str) -> None:
    etcd = await Etcd.connect(EtcdConfig.parse(urls))
    try:
        for i in range(23):
            m = Mount(path=f"/p/{i:02d}", volume=f"v{i % 3}", subpath="" if i % 2 else "s")
            await etcd.put(schema.mount(m.path), m.dump())
        whole, revision = await etcd.get_prefix(schema.ROOT.encode())
        view = await nscache.load_view(etcd)
        assert view.revision == revision
        assert [(p, v) for p, v in view.mounts.items()] == [
            (f"/p/{i:02d}", (f"v{i % 3}", "" if i % 2 else "s")) for i in range(23)]
        assert len(whole) == 23

        # a write landing between two pages is not in the snapshot (it is after R)
        real = nscache._range_page
        calls = 0

        async def page_then_write(*args: object) -> object:
            nonlocal calls
            calls += 1
            rsp = await real(*args)  # type: ignore[arg-type]
            if calls == 1:
                late = Mount(path="/p/99", volume="v0")
                await etcd.put(schema.mount(late.path), late.dump())
            return rsp

        nscache._range_page = page_then_write  # type: ignore[assignment]
        try:
            view2 = await nscache.load_view(etcd)
        finally:
            nscache._range_page = real
        assert calls > 1 and "/p/99" not in view2.mounts and view2.revision == revision
    finally:
        await etcd.close()


def test_paged_load_is_one_snapshot(etcd: EtcdCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nscache, "LOAD_PAGE", 5)
    asyncio.run(_scenario(etcd.urls))
