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
