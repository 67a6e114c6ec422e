"""The namespace cache loads in pages at one revision (issue 14): the same view as one big
read, and nothing written between pages leaks in (the watch delivers it after)."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from federation.local.etcd_server import EtcdCluster
from namespace import cache as nscache
from namespace import huge_pages, schema
from namespace.etcd import Etcd, EtcdConfig
from namespace.models import ClusterSpec, Mount


async def _scenario(urls: str, monkeypatch: pytest.MonkeyPatch) -> None:
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

        async def page_then_write(*args: Any) -> Any:
            nonlocal calls
            calls += 1
            rsp = await real(*args)
            if calls == 1:
                late = Mount(path="/p/99", volume="v0")
                await etcd.put(schema.mount(late.path), late.dump())
            return rsp

        with monkeypatch.context() as patch:
            patch.setattr(nscache, "_range_page", page_then_write)
            view2 = await nscache.load_view(etcd)
        assert calls > 1 and "/p/99" not in view2.mounts and view2.revision == revision
    finally:
        await etcd.close()


def test_paged_load_is_one_snapshot(etcd: EtcdCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nscache, "LOAD_PAGE", 5)
    asyncio.run(_scenario(etcd.urls, monkeypatch))


_ODD_VALUES = [
    b' {"path": "/odd/space", "volume": "v1"} ',  # whitespace around: still a mount
    b'{"path": "/odd//slashes/", "volume": "v1", "subpath": "/a//b/"}',  # normalised
    b'{"path": "/odd/\xc3\xa9t\xc3\xa9", "volume": "v2"}',  # UTF-8
    b'{"path": "/odd/bad-volume", "volume": "Not_A_Name"}',  # refused
    b'{"path": "relative", "volume": "v1"}',  # refused
    b'["/odd/list", "v1"]',  # refused: not an object
    b'{"path": "/odd/trailing", "volume": "v1"} x',  # refused: trailing garbage
    b'\xff\xfe',  # refused: not UTF-8
    b'{"path": "/odd/dup", "volume": "v1", "volume": "v2"}',  # last one wins, as json does
]


async def _odd_scenario(urls: str) -> None:
    etcd = await Etcd.connect(EtcdConfig.parse(urls))
    try:
        for i, value in enumerate(_ODD_VALUES):
            await etcd.put(schema.MOUNTS.encode() + b"%2Fodd%2F" + str(i).encode(), value)
        bulk = await nscache.load_view(etcd)
        one_by_one = nscache.NamespaceView()  # the watch's path: one key at a time
        for key, value in (await etcd.get_prefix(schema.ROOT.encode()))[0]:
            one_by_one.apply(key, value)
        assert list(bulk.mounts.items()) == list(one_by_one.mounts.items())
        assert {p: t for p, t in bulk.mounts.items() if p.startswith("/odd/")} == {
            "/odd/space": ("v1", ""), "/odd/slashes": ("v1", "a/b"), "/odd/été": ("v2", ""),
            "/odd/dup": ("v2", ""),
        }
    finally:
        await etcd.close()


def test_bulk_decoding_matches_the_watch_path(etcd: EtcdCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """The load's fast mount decoder accepts and refuses exactly what one-key apply does."""
    monkeypatch.setattr(nscache, "LOAD_PAGE", 4)
    asyncio.run(_odd_scenario(etcd.urls))


async def _path_view_scenario(urls: str) -> None:
    from namespace.control import ControlPlane

    etcd = await Etcd.connect(EtcdConfig.parse(urls))
    try:
        cp = ControlPlane(etcd)
        for cid in ("pc-1", "pc-2"):
            await etcd.put(schema.cluster(cid), ClusterSpec(id=cid, endpoint="127.0.0.1:1").dump())
        await cp.create_volume("pv-a", "pc-1")
        await cp.create_volume("pv-b", "pc-2")
        for path, target in (("/pv", "pv-a"), ("/pv/deep/er", "pv-b:in/side"), ("/pv/other", "pv-b")):
            await cp.add_mount(path, target)
        await etcd.put(schema.alive("pc-2"), b"1")
        whole = await nscache.load_view(etcd)
        for path in ("/pv", "/pv/x/y", "/pv/deep", "/pv/deep/er", "/pv/deep/er/f/g", "//pv/deep/er/"):
            part = await nscache.load_path_view(etcd, path)
            assert part.resolve(path) == whole.resolve(path), path
            res = part.resolve(path)
            assert res is not None and set(part.volumes) == {res.volume}
            owner = whole.volumes[res.volume].owner
            assert set(part.clusters) == {owner} and set(part.alive) <= {owner}
            assert "/pv/other" not in part.mounts  # only the mounts on the path's way
        unmounted = await nscache.load_path_view(etcd, "/nowhere/x")
        assert unmounted.resolve("/nowhere/x") is None and not unmounted.volumes
    finally:
        await etcd.close()


def test_path_view_reads_only_the_way_to_one_path(etcd: EtcdCluster) -> None:
    """A one-shot command's view: the same answer as the whole view, from a few gets."""
    asyncio.run(_path_view_scenario(etcd.urls))


async def _lasting_scenario(urls: str, monkeypatch: pytest.MonkeyPatch) -> None:
    etcd = await Etcd.connect(EtcdConfig.parse(urls))
    try:
        await asyncio.gather(*(
            etcd.put(schema.mount(f"/hp/{i:03d}"), Mount(path=f"/hp/{i:03d}", volume="v1").dump())
            for i in range(200)))  # enough for the load to size its table (a rebuild)
        asked: list[set[int]] = []

        def record(pages: set[int]) -> int:
            asked.append(set(pages))
            return 0

        monkeypatch.setattr(huge_pages, "advise", lambda items: True)  # as if the table were big
        monkeypatch.setattr(huge_pages, "advise_pages", record)
        await nscache.load_view(etcd)
        assert asked == []  # a one-shot snapshot asks nothing
        lasting = await nscache.load_view(etcd, lasting=True)
        keys = [key for key, _ in lasting.mounts._live_raw()]
        assert "/hp/199" in keys
        assert set().union(*asked) == {id(key) >> huge_pages.PAGE_SHIFT for key in keys}
    finally:
        await etcd.close()


def test_a_lasting_load_asks_for_huge_pages_under_its_keys(
    etcd: EtcdCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a controller's cache loads, it settles: the pages that hold its mount keys are
    advised once all are in (the table's own tests check what the kernel does with that)."""
    asyncio.run(_lasting_scenario(etcd.urls, monkeypatch))
