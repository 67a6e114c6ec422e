"""The mount table: longest-prefix resolution of global paths on whole components.

A plain dict from normal mount path to its target: resolving walks the path's prefixes
from longest to shortest (one hash lookup each), so cost depends on path depth and not on
the number of mounts. The table is an in-memory index only; etcd is the source of truth
and :mod:`namespace.cache` keeps this table current.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from namespace.paths import normalize


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where a global path lands: the mount that owns it and the path inside the volume."""

    path: str
    mount: str
    volume: str
    relative_path: str  # inside the volume, '' for the volume root


class MountTable:
    """Mount path → (volume, subpath). Not thread-safe for writers; readers may race freely
    with a single writer because each update is one dict assignment."""

    __slots__ = ("_mounts",)

    def __init__(self) -> None:
        self._mounts: dict[str, tuple[str, str]] = {}

    def __len__(self) -> int:
        return len(self._mounts)

    def __contains__(self, path: str) -> bool:
        return path in self._mounts

    def set(self, path: str, volume: str, subpath: str = "") -> None:
        # Interning the volume name keeps one string per volume for millions of mounts.
        self._mounts[path] = (_intern(volume), subpath)

    def remove(self, path: str) -> None:
        self._mounts.pop(path, None)

    def clear(self) -> None:
        self._mounts.clear()

    def get(self, path: str) -> tuple[str, str] | None:
        return self._mounts.get(path)

    def items(self) -> Iterator[tuple[str, tuple[str, str]]]:
        return iter(sorted(self._mounts.items()))

    def resolve(self, path: str) -> Resolution | None:
        """Resolve a global path (normalised here) to its longest matching mount."""
        return self.resolve_normal(normalize(path))

    def resolve_normal(self, path: str) -> Resolution | None:
        """Resolve an already-normal path; the hot path of every data request."""
        mounts = self._mounts
        prefix = path
        while True:
            hit = mounts.get(prefix)
            if hit is not None:
                volume, subpath = hit
                below = path[len(prefix) + 1 :] if prefix != "/" else path[1:]
                if subpath:
                    below = subpath + "/" + below if below else subpath
                return Resolution(path, prefix, volume, below)
            if prefix == "/":
                return None
            cut = prefix.rfind("/")
            prefix = prefix[:cut] if cut > 0 else "/"


_interned: dict[str, str] = {}


def _intern(s: str) -> str:
    return _interned.setdefault(s, s)
