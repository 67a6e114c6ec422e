"""The mount table: longest-prefix resolution of global paths on whole components.

A plain dict from normal mount path to its target: resolving walks the path's prefixes
from longest to shortest. Most prefixes of a path are not mounts, and in a table of a
million mounts every such miss is a cache miss in a dict of tens of megabytes; so a small
bitmap of the mounts' string hashes (a Bloom filter: two bits per mount, from the two halves
of Python's cached string hash, about 16 bits of bitmap per mount) answers "certainly not a
mount" first, and only the prefixes whose bits are both set reach the dict (about 1.5% of
misses do).
Per-resolve cost then depends on path depth and not on the number of mounts. The table is
an in-memory index only; etcd is the source of truth and :mod:`namespace.cache` keeps this
table current.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from namespace.paths import normalize

_MIN_BITS = 1 << 16
_BITS_PER_MOUNT = 16


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


class MountTable:
    """Mount path → (volume, subpath). Not thread-safe for writers; readers may race freely
    with a single writer: a mount's filter bit is set before its dict entry appears, and a
    rebuilt filter (whose size gives its mask) replaces the old one in one assignment."""

    __slots__ = ("_mounts", "_bits", "_stale")

    def __init__(self) -> None:
        # The value is the volume name alone when there is no subpath (most mounts): one
        # object fewer to reach on every hit, and a tuple fewer per mount.
        self._mounts: dict[str, str | tuple[str, str]] = {}
        self._bits = bytearray(_MIN_BITS >> 3)
        self._stale = 0  # removed mounts whose bits are still set

    def __len__(self) -> int:
        return len(self._mounts)

    def __contains__(self, path: str) -> bool:
        return path in self._mounts

    def set(self, path: str, volume: str, subpath: str = "") -> None:
        if path not in self._mounts and (len(self._mounts) + 1) * _BITS_PER_MOUNT > len(self._bits) << 3:
            self._rebuild(len(self._mounts) + 1)
        _mark(self._bits, path)
        # Interning the volume name keeps one string per volume for millions of mounts.
        self._mounts[path] = (_intern(volume), subpath) if subpath else _intern(volume)

    def remove(self, path: str) -> None:
        if self._mounts.pop(path, None) is not None:
            self._stale += 1
            if self._stale > len(self._mounts) + 1024:
                self._rebuild(len(self._mounts))

    def clear(self) -> None:
        self._mounts.clear()
        self._rebuild(0)

    def get(self, path: str) -> tuple[str, str] | None:
        hit = self._mounts.get(path)
        return None if hit is None else _pair(hit)

    def items(self) -> Iterator[tuple[str, tuple[str, str]]]:
        return ((p, _pair(v)) for p, v in sorted(self._mounts.items()))

    def resolve(self, path: str) -> Resolution | None:
        """Resolve a global path (normalised here) to its longest matching mount."""
        return self.resolve_normal(normalize(path))

    def resolve_normal(self, path: str) -> Resolution | None:
        """Resolve an already-normal path; the hot path of every data request."""
        mounts = self._mounts
        bits = self._bits
        mask = (len(bits) << 3) - 1
        prefix = path
        while True:
            h = hash(prefix)
            a = h & mask
            b = (a & ~511) | (h >> 32) & 511
            if bits[a >> 3] >> (a & 7) & 1 and bits[b >> 3] >> (b & 7) & 1:
                hit = mounts.get(prefix)
                if hit is not None:
                    below = path[len(prefix) + 1 :] if prefix != "/" else path[1:]
                    if type(hit) is str:
                        return _new_resolution(Resolution, (path, prefix, hit, below))
                    volume, subpath = hit  # type: ignore[str-unpack]
                    below = subpath + "/" + below if below else subpath
                    return _new_resolution(Resolution, (path, prefix, volume, below))
            if prefix == "/":
                return None
            cut = prefix.rfind("/")
            prefix = prefix[:cut] if cut > 0 else "/"

    def _rebuild(self, size: int) -> None:
        nbits = _MIN_BITS
        while nbits < size * _BITS_PER_MOUNT:
            nbits <<= 1
        bits = bytearray(nbits >> 3)
        for path in self._mounts:
            _mark(bits, path)
        self._bits = bits
        self._stale = 0


def _pair(value: str | tuple[str, str]) -> tuple[str, str]:
    return (value, "") if type(value) is str else value  # type: ignore[return-value]


def _mark(bits: bytearray, path: str) -> None:
    mask = (len(bits) << 3) - 1
    h = hash(path)
    a = h & mask
    b = (a & ~511) | (h >> 32) & 511
    bits[a >> 3] |= 1 << (a & 7)
    bits[b >> 3] |= 1 << (b & 7)


_interned: dict[str, str] = {}


def _intern(s: str) -> str:
    return _interned.setdefault(s, s)
