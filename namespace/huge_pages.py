"""Back a big list's item array with transparent huge pages (Linux), as advice only.

Why: a resolve on a table of a million mounts is bound by memory latency. Each probe is a
random load in the table's slot list (128 MiB at 1M mounts), and with 4 KiB pages nearly
every such load also misses the TLB: the list spans 32k pages. With 2 MiB pages it spans 64,
and a probe pays for the cache line alone (``bench.namespace`` measures what that saves).

Linux gives huge pages only to memory that asks for them (``transparent_hugepage`` in its
usual ``madvise`` mode), and CPython never asks. This module asks for one list: it finds the
list's item array (CPython keeps a list's items in one array, ``ob_item``), advises it
``MADV_HUGEPAGE`` and collapses it into huge pages at once (``MADV_COLLAPSE``, Linux 6.1;
older kernels collapse it in the background instead).

It is best effort and never changes what memory holds. Another interpreter, a list whose
header does not read back as this list's (its type, length and capacity), huge pages turned
off by the administrator (``never``), or a kernel that refuses: the list keeps its small
pages, and nothing else changes.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

MIN_BYTES = 4 << 20
"""Smaller arrays are left alone: under two huge pages the advice buys nothing."""
_HUGE_PAGE = 2 << 20
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
    import ctypes  # here, not at the top: only a big table pays for its import

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if libc.madvise(start, end - start, _MADV_HUGEPAGE) != 0:
        return False
    # The caller's thread waits for the copy (about 2 ms per MiB here; ctypes lets go of the
    # GIL meanwhile). A kernel before 6.1 refuses, and khugepaged collapses it later instead.
    libc.madvise(start, end - start, _MADV_COLLAPSE)
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
    """Bytes of huge pages in the memory maps under ``items``' array, from
    ``/proc/self/smaps`` (advice splits the array's map where its huge pages begin and end);
    0 where that cannot be read."""
    address, size = item_array(items)
    try:
        smaps = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return 0
    total = 0
    inside = False
    for line in smaps:
        head = line.split(None, 1)[0] if line else ""
        if "-" in head and not head.endswith(":"):  # a map's first line: its address range
            low, high = (int(x, 16) for x in head.split("-"))
            inside = low < address + size and address < high
        elif inside and head == "AnonHugePages:":
            total += int(line.split()[1]) * 1024
    return total


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
