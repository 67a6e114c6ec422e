"""The mount table: longest-prefix resolution of global paths on whole components.

A plain dict from normal mount path to its target: resolving walks the path's prefixes
from longest to shortest. Two things keep that walk short and cheap:

* no prefix deeper than the deepest mount is ever looked at: the table knows how many
  mounts it has at each depth, and a path below that depth is first cut back with ``rfind``
  alone (no slice, no hash). File paths are usually much deeper than mounts;
* the remaining prefixes are screened by a small filter of the mounts' string hashes (a
  Bloom filter with one hash: a bytearray of 8 slots per mount, one byte per slot so the
  test is a single subscript; about 12% false positives). In a table of a million mounts a
  dict miss is a cache and TLB miss in tens of megabytes; the filter is 1/4 of the dict's
  index alone, and costs fewer bytecodes than the two-bit version it replaced.

Per-resolve cost then depends on path depth and not on the number of mounts. Targets are
interned (a volume name, or one shared ``(volume, subpath)`` pair), so a hit reaches no
per-mount object other than the dict's own key. The table is an in-memory index only; etcd
is the source of truth and :mod:`namespace.cache` keeps this table current.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from namespace.paths import normalize

_MIN_SLOTS = 1 << 16
_SLOTS_PER_MOUNT = 8


class Resolution(NamedTuple):
    """Where a global path lands: the mount that owns it and the path inside the volume.

    A NamedTuple rather than a frozen dataclass: it is built on every data request, and a
    frozen dataclass's ``__init__`` alone costs more than the whole lookup.
    """

    path: str
    mount: str
    volume: str
    relative_path: str  # inside the volume, '' for the volume root


_new_resolution = tuple.__new__
_Target = str | tuple[str, str]


class MountTable:
    """Mount path → (volume, subpath). Not thread-safe for writers; readers may race freely
    with a single writer: a mount's filter slot and depth are recorded before its dict entry
    appears (and forgotten after it is gone), and a rebuilt filter (whose size gives its
    mask) replaces the old one in one assignment."""

    __slots__ = ("_mounts", "_filter", "_stale", "_depths", "_maxdepth", "_targets")

    def __init__(self) -> None:
        # The value is the interned volume name alone when there is no subpath (most
        # mounts), else an interned (volume, subpath) pair shared by every such mount.
        self._mounts: dict[str, _Target] = {}
        self._filter = bytearray(_MIN_SLOTS)
        self._stale = 0  # removed mounts whose filter slots are still set
        self._depths: list[int] = [0]  # mounts per depth (number of components)
        self._maxdepth = 0  # deepest depth with a mount (0: none, or only '/')
        # Writer only: one shared target object per distinct (volume, subpath).
        self._targets: dict[tuple[str, str], _Target] = {}

    def __len__(self) -> int:
        return len(self._mounts)

    def __contains__(self, path: str) -> bool:
        return path in self._mounts

    def set(self, path: str, volume: str, subpath: str = "") -> None:
        mounts = self._mounts
        if path not in mounts:
            if (len(mounts) + 1) * _SLOTS_PER_MOUNT > len(self._filter):
                self._rebuild(len(mounts) + 1)
            depth = 0 if path == "/" else path.count("/")
            depths = self._depths
            if depth >= len(depths):
                depths.extend([0] * (depth + 1 - len(depths)))
            depths[depth] += 1
            if depth > self._maxdepth:
                self._maxdepth = depth
        filt = self._filter
        filt[hash(path) & (len(filt) - 1)] = 1
        target = self._targets.get((volume, subpath))
        if target is None:
            target = self._targets[(volume, subpath)] = (volume, subpath) if subpath else volume
        mounts[path] = target

    def reserve(self, count: int) -> None:
        """Size the filter for ``count`` mounts at once (a bulk load knows its key count),
        instead of rebuilding it each time the table doubles."""
        if count * _SLOTS_PER_MOUNT > len(self._filter):
            self._rebuild(count)

    def remove(self, path: str) -> None:
        if self._mounts.pop(path, None) is None:
            return
        depth = _depth(path)
        self._depths[depth] -= 1
        while self._maxdepth and not self._depths[self._maxdepth]:
            self._maxdepth -= 1
        self._stale += 1
        if self._stale > len(self._mounts) + 1024:
            self._rebuild(len(self._mounts))
        if len(self._targets) > 2 * len(self._mounts) + 1024:  # unique subpaths churned
            self._targets = {_pair(v): v for v in self._mounts.values()}

    def clear(self) -> None:
        self._mounts.clear()
        self._targets.clear()
        self._depths = [0]
        self._maxdepth = 0
        self._rebuild(0)

    def get(self, path: str) -> tuple[str, str] | None:
        hit = self._mounts.get(path)
        return None if hit is None else _pair(hit)

    def items(self) -> Iterator[tuple[str, tuple[str, str]]]:
        return ((p, _pair(v)) for p, v in sorted(self._mounts.items()))

    def resolve(self, path: str) -> Resolution | None:
        """Resolve a global path (normalised here) to its longest matching mount."""
        if (
            type(path) is str and len(path) <= 255 and path.isascii() and path[:1] == "/"
            and path[-1:] != "/" and "//" not in path and "/." not in path and path.isprintable()
        ):
            # Already normal, in C string scans (the fast path of ``normalize`` plus its length
            # checks, which a short ASCII path passes): skips a call on every data request.
            return self.resolve_normal(path)
        return self.resolve_normal(normalize(path))

    def resolve_normal(self, path: str) -> Resolution | None:
        """Resolve an already-normal path; the hot path of every data request."""
        mounts = self._mounts
        filt = self._filter
        mask = len(filt) - 1
        # Prefixes deeper than the deepest mount cannot be mounts: skip them unhashed.
        excess = path.count("/") - (self._maxdepth or 1)
        if excess > 0:
            end = len(path)
            while excess:
                end = path.rfind("/", 0, end)
                excess -= 1
            prefix = path[:end]
        else:
            prefix = path
        while True:
            if filt[hash(prefix) & mask]:
                hit = mounts.get(prefix)
                if hit is not None:
                    below = path[len(prefix) + 1 :] if prefix != "/" else path[1:]
                    if isinstance(hit, str):
                        return _new_resolution(Resolution, (path, prefix, hit, below))
                    volume, subpath = hit
                    return _new_resolution(
                        Resolution, (path, prefix, volume, subpath + "/" + below if below else subpath)
                    )
            cut = prefix.rfind("/")
            if cut > 0:
                prefix = prefix[:cut]
            elif prefix == "/":
                return None
            else:
                prefix = "/"

    def _rebuild(self, size: int) -> None:
        nslots = _MIN_SLOTS
        while nslots < size * _SLOTS_PER_MOUNT:
            nslots <<= 1
        bits = bytearray(nslots)
        for path in self._mounts:
            _mark(bits, path)
        self._filter = bits
        self._stale = 0


def _depth(path: str) -> int:
    """Number of components: 0 for '/', 1 for '/a'."""
    return 0 if path == "/" else path.count("/")


def _pair(value: _Target) -> tuple[str, str]:
    return (value, "") if isinstance(value, str) else value


def _mark(bits: bytearray, path: str) -> None:
    bits[hash(path) & (len(bits) - 1)] = 1
