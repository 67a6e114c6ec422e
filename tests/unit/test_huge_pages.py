"""Huge pages under a big mount table's slot list: advice the kernel takes, and that changes
nothing the table holds."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import cast

import pytest

from namespace import huge_pages
from namespace.cache import NamespaceCache
from namespace.etcd import Etcd
from namespace.mounts import MountTable


def _needs_thp() -> None:
    if sys.platform != "linux" or sys.implementation.name != "cpython":
        pytest.skip("huge pages are advised on Linux CPython only")
    setting = huge_pages._SETTING
    if not setting.exists() or "[never]" in setting.read_text():
        pytest.skip(f"transparent huge pages are off here ({setting})")
    if tuple(int(x) for x in re.findall(r"\d+", os.uname().release)[:2]) < (6, 1):
        pytest.skip("collapsing into huge pages at once (MADV_COLLAPSE) needs Linux 6.1")


def test_the_address_read_from_the_list_header_is_its_item_array() -> None:
    if sys.implementation.name != "cpython":
        pytest.skip("reads CPython's list layout")
    import ctypes

    items: list[object] = [object() for _ in range(1000)]
    address, size = huge_pages.item_array(items)
    assert size == 8000
    # The array holds the items' addresses, in order: the header was read right.
    stored = (ctypes.c_void_p * len(items)).from_address(address)
    assert [stored[i] for i in (0, 1, 999)] == [id(items[0]), id(items[1]), id(items[999])]


def test_a_big_list_gets_huge_pages_and_keeps_its_items() -> None:
    _needs_thp()
    items: list[object] = list(range(2 << 20))  # 16 MiB of item pointers
    if "[madvise]" in huge_pages._SETTING.read_text():  # ("always" may give them unasked)
        assert huge_pages.backed_bytes(items) == 0  # nobody asked: small pages
    assert huge_pages.advise(items)
    assert huge_pages.backed_bytes(items) >= (16 - 4) << 20  # all but the partial huge page at each end
    assert items == list(range(2 << 20))


def test_small_lists_and_other_objects_are_left_alone() -> None:
    assert not huge_pages.advise([None] * 1000)  # under MIN_BYTES

    class Sub(list[object]):
        pass

    assert huge_pages.item_array(Sub([None] * 1000)) == (0, 0)  # only list itself is known
    assert not huge_pages.advise(Sub([None] * (huge_pages.MIN_BYTES // 8)))


def test_an_administrator_who_turned_huge_pages_off_is_obeyed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setting = tmp_path / "enabled"
    setting.write_text("always madvise [never]\n")
    monkeypatch.setattr(huge_pages, "_SETTING", setting)
    items: list[object] = [None] * (huge_pages.MIN_BYTES // 4)
    assert not huge_pages.advise(items)


def _rebuilt(table: MountTable) -> list[str]:
    """20k mounts, then a rebuild into a slot list of 32 MiB; the mount paths."""
    paths = [f"/t-{i % 97}/p-{i}" for i in range(20_000)]
    for i, p in enumerate(paths):
        table.set(p, f"v-{i % 50}", "" if i % 3 else "sub")
    table.reserve(150_000)
    assert len(table._slots) * 8 >= 16 << 20
    return paths


def test_a_lasting_table_sits_on_huge_pages_and_still_resolves_every_mount() -> None:
    _needs_thp()
    table = MountTable(huge_pages=True)
    paths = _rebuilt(table)
    assert huge_pages.backed_bytes(table._slots) >= len(table._slots) * 8 - (4 << 20)
    for i, p in enumerate(paths):
        hit = table.resolve(p + "/f.csv")
        assert hit is not None and hit.mount == p and hit.volume == f"v-{i % 50}"
    assert table.resolve("/t-1/nope/f") is None


def test_a_one_shot_table_does_not_ask_but_a_watch_fed_cache_does() -> None:
    _needs_thp()
    if "[madvise]" not in huge_pages._SETTING.read_text():
        pytest.skip("only with THP in 'madvise' mode are pages huge just when asked for")
    snapshot = MountTable()  # what load_view gives a single command
    _rebuilt(snapshot)
    assert huge_pages.backed_bytes(snapshot._slots) == 0
    cache = NamespaceCache(cast(Etcd, None))  # the controller's and long-lived clients' view
    _rebuilt(cache.view.mounts)
    assert huge_pages.backed_bytes(cache.view.mounts._slots) > 0


def _loaded(table: MountTable, count: int) -> list[str]:
    """``count`` mounts loaded as the cache loads them: sized first, then set, then settled."""
    paths = [f"/tenant-{i % 211}/group-{i % 97}/proj-{i}" for i in range(count)]
    table.reserve(count)
    for i, p in enumerate(paths):
        table.set(p, f"v-{i % 50}")
    table.settle()
    return paths


def test_a_settled_lasting_table_has_its_keys_on_huge_pages_too() -> None:
    """A hit compares the mount's own path string: one more random load, which on small
    pages misses the TLB as well. Once loaded, a lasting table's keys sit on huge pages."""
    _needs_thp()
    table = MountTable(huge_pages=True)
    paths = _loaded(table, 300_000)  # about 20 MiB of path strings
    keys = [key for key, _ in table._live_raw()]
    # Not all: a 2 MiB page across a hole in the allocator's arenas cannot be one huge page
    # (about 0.65 of the keys here, 0.91 of a 1M table's in bench.namespace).
    assert huge_pages.share_on_huge_pages(keys) >= 0.5
    for p in paths[::97]:
        hit = table.resolve(p + "/day.csv")
        assert hit is not None and hit.mount == p
    assert table.resolve("/tenant-1/nope/x") is None


def test_only_a_lasting_table_asks_for_its_keys_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[set[int]] = []

    def record(pages: set[int]) -> int:
        asked.append(set(pages))
        return 0

    monkeypatch.setattr(huge_pages, "advise_pages", record)
    monkeypatch.setattr(huge_pages, "advise", lambda items: len(items) * 8 >= huge_pages.MIN_BYTES)
    _loaded(MountTable(), 40_000)  # a one-shot snapshot's: never asks
    assert asked == []
    table = MountTable(huge_pages=True)
    _loaded(table, 40_000)
    want = {id(key) >> huge_pages.PAGE_SHIFT for key, _ in table._live_raw()}
    assert asked and set().union(*asked) == want  # every key's page, and only those
    asked.clear()
    table.settle()  # nothing new since: nothing asked
    assert asked == []
    table.set("/late/mount", "v-1")  # after the load: waits for the next settle or rebuild
    table.settle()
    assert asked == [{id(table._slots[table._find("/late/mount")]) >> huge_pages.PAGE_SHIFT}]


def test_pages_that_are_not_whole_anonymous_memory_are_left_alone(tmp_path: Path) -> None:
    _needs_thp()
    import mmap

    data = tmp_path / "file"
    data.write_bytes(b"\0" * (8 << 20))
    with data.open("r+b") as f, mmap.mmap(f.fileno(), 8 << 20) as mapped:
        import ctypes

        address = ctypes.addressof(ctypes.c_char.from_buffer(mapped))
        first = (address >> huge_pages.PAGE_SHIFT) + 1  # a whole 2 MiB page inside the file's map
        assert huge_pages.advise_pages({first, first + 1}) == 0
    assert huge_pages.advise_pages({0, 1}) == 0  # in no map at all
