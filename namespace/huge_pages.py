"""Back a big mount table's memory with transparent huge pages (Linux), as advice only.

Why: a resolve on a table of a million mounts is bound by memory latency. Each probe is a
random load in the table's slot list (128 MiB at 1M mounts), and with 4 KiB pages nearly
every such load also misses the TLB: the list spans 32k pages. With 2 MiB pages it spans 64,
and a probe pays for the cache line alone (``bench.namespace`` measures what that saves).

Linux gives huge pages only to memory that asks for them (``transparent_hugepage`` in its
usual ``madvise`` mode), and CPython never asks. This module asks for one list: it finds the
list's item array (CPython keeps a list's items in one array, ``ob_item``), advises it
``MADV_HUGEPAGE`` and collapses it into huge pages at once (``MADV_COLLAPSE``, Linux 6.1;
older kernels collapse it in the background instead).

A hit reads one more cold line: the mount's own path string, which the probe compares.
Those strings live among other small objects in the arenas of CPython's allocator, so
:func:`advise_pages` asks for huge pages under the 2 MiB pages that hold them as well: they
stay where they are, and the other objects there get huge pages too. A page that spans a
hole between arenas cannot be one huge page; at 1M mounts about 91% of the keys get them.

It is best effort and never changes what memory holds. Another interpreter, a list whose
header does not read back as this list's (its type, length and capacity), huge pages turned
off by the administrator (``never``), or a kernel that refuses: the list keeps its small
pages, and nothing else changes.
"""
from __future__ import annotations

import bisect
import functools
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MIN_BYTES = 4 << 20
"""Smaller arrays are left alone: under two huge pages the advice buys nothing."""
PAGE_SHIFT = 21
"""A huge page is 2 MiB: an address's page is ``address >> PAGE_SHIFT``."""
_HUGE_PAGE = 1 << PAGE_SHIFT
_MADV_HUGEPAGE = 14  # <sys/mman.h>
_MADV_COLLAPSE = 25
_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def advise(items: list[Any]) -> bool:
    """Ask for huge pages under ``items``' array; whether the kernel took the advice.

    The list must not be resized afterwards (a resize may move its array): the mount table
    calls this on a slot list it has just made at its final size, before readers see it.
    """
    start, end = _huge_span(items)
    if end <= start or not _allowed():
        return False
    return _advise_range(start, end)


def advise_pages(pages: Iterable[int]) -> int:
    """Ask for huge pages under these 2 MiB pages of memory (numbered ``address >>
    PAGE_SHIFT``); how many the kernel took.

    For many small objects that are read at random and live long, as a big mount table's
    keys (the pages that hold them: ``id(key) >> PAGE_SHIFT``): each is a cold line anyway,
    and on small pages a TLB miss too. Only whole pages of anonymous memory are advised: a
    page across the edge of a memory map, or in a file's map, is left alone. Nothing moves;
    the other objects on those pages (CPython's allocator packs unrelated objects together)
    get huge pages as well, a little more memory where a page was only partly touched.
    """
    if sys.platform != "linux" or sys.implementation.name != "cpython" or not _allowed():
        return 0
    maps = _anonymous_maps()
    starts = [low for low, _ in maps]
    runs: list[list[int]] = []  # first page, end page, and the stretch of maps they lie in
    for page in sorted(pages):
        at = bisect.bisect_right(starts, page << PAGE_SHIFT) - 1
        if at < 0 or (page + 1) << PAGE_SHIFT > maps[at][1]:
            continue  # across a hole or into a file's map: cannot be one huge page
        if runs and runs[-1][1] == page and runs[-1][2] == at:
            runs[-1][1] = page + 1
        else:
            runs.append([page, page + 1, at])
    return sum(end - first for first, end, _ in runs if _advise_range(first << PAGE_SHIFT, end << PAGE_SHIFT))


@functools.cache
def _madvise() -> Any:
    """libc's ``madvise``, looked up once (a rebuild advises its slot list and then each run
    of its keys' pages)."""
    import ctypes  # here, not at the top: only a big table pays for its import

    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return madvise


def _advise_range(start: int, end: int) -> bool:
    madvise = _madvise()
    if madvise(start, end - start, _MADV_HUGEPAGE) != 0:
        return False
    # The caller's thread waits for the copy (about 2 ms per MiB here; ctypes lets go of the
    # GIL meanwhile). A kernel before 6.1 refuses, and khugepaged collapses it later instead.
    madvise(start, end - start, _MADV_COLLAPSE)
    return True


def item_array(items: list[Any]) -> tuple[int, int]:
    """Address and size in bytes of ``items``' item array; (0, 0) where this is not a
    64-bit CPython list whose header reads back as we expect."""
    if sys.implementation.name != "cpython" or type(items) is not list or sys.maxsize != 2**63 - 1:
        return 0, 0
    import ctypes

    class _ListHead(ctypes.Structure):  # PyListObject
        _fields_ = [
            ("refcnt", ctypes.c_ssize_t),
            ("type", ctypes.c_void_p),
            ("size", ctypes.c_ssize_t),
            ("item", ctypes.c_void_p),
            ("allocated", ctypes.c_ssize_t),
        ]

    head = _ListHead.from_address(id(items))
    if head.type != id(list) or head.size != len(items) or head.allocated < len(items) or not head.item:
        return 0, 0  # another layout (a debug or free-threaded build): leave it alone
    return head.item, len(items) * 8


def backed_bytes(items: list[Any]) -> int:
    """Bytes of huge pages under ``items``' array, from ``/proc/self/smaps``: those of each
    memory map it overlaps, up to the overlap (advice splits a map where its huge pages
    begin and end, and joins neighbours advised alike); 0 where that cannot be read."""
    address, size = item_array(items)
    end = address + size
    return sum(min(huge, min(high, end) - max(low, address)) for low, high, huge in _smaps()
               if low < end and address < high)


def share_on_huge_pages(objects: Iterable[object]) -> float:
    """About what share of ``objects`` lies on huge pages: each counts for the share of its
    memory map that is (``/proc/self/smaps`` says how much of a map is, not which part;
    advice splits a map where its huge pages begin and end). 0 where that cannot be read."""
    maps = _smaps()
    starts = [low for low, _, _ in maps]
    total = 0
    inside = 0.0
    for o in objects:
        total += 1
        at = bisect.bisect_right(starts, id(o)) - 1
        if at >= 0 and id(o) < maps[at][1]:
            low, high, huge = maps[at]
            inside += huge / (high - low)
    return inside / total if total else 0.0


def _smaps() -> list[tuple[int, int, int]]:
    """Each memory map's start, end and bytes of huge pages in it."""
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return []
    out: list[tuple[int, int, int]] = []
    for line in lines:
        head = line.split(None, 1)[0] if line else ""
        if "-" in head and not head.endswith(":"):  # a map's first line: its address range
            low, high = (int(x, 16) for x in head.split("-"))
            out.append((low, high, 0))
        elif out and head == "AnonHugePages:":
            out[-1] = (out[-1][0], out[-1][1], int(line.split()[1]) * 1024)
    return out


def _anonymous_maps() -> list[tuple[int, int]]:
    """Stretches of private, writable maps of no file (the allocators' arenas and heap), in
    order; maps that touch are one stretch."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    out: list[tuple[int, int]] = []
    for line in lines:
        fields = line.split()
        # start-end perms offset dev inode [path]: no path but the heap's
        if len(fields) >= 5 and fields[1] == "rw-p" and fields[4] == "0" and fields[5:] in ([], ["[heap]"]):
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if out and out[-1][1] == low:  # advised alike, the kernel joins them into one map
                out[-1] = (out[-1][0], high)
            else:
                out.append((low, high))
    return out


def _huge_span(items: list[Any]) -> tuple[int, int]:
    """The whole huge pages inside the array of a list big enough to be worth advising."""
    if sys.platform != "linux" or len(items) * 8 < MIN_BYTES:
        return 0, 0
    address, size = item_array(items)
    start = (address + _HUGE_PAGE - 1) & ~(_HUGE_PAGE - 1)
    return start, (address + size) & ~(_HUGE_PAGE - 1)


def _allowed() -> bool:
    """Not where the administrator turned huge pages off: ``MADV_COLLAPSE`` itself does not
    consult that setting."""
    try:
        return "[never]" not in _SETTING.read_text()
    except OSError:
        return False  # no THP in this kernel
