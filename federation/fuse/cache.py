"""Attributes and directory listings of one mount, kept until the change stream says
otherwise.

While a volume's change stream (``Client.watch``) is connected, entries of that volume live
``ttl`` seconds (long: the stream invalidates them within ~50 ms of a commit anywhere);
while it is down they live ``fallback_ttl`` (1 s), so close-to-open consistency across
clusters holds within a second either way. Negative entries (no such file) are cached too:
tools probe for missing files constantly. Thread-safe: watch threads invalidate.

Bounded: a mount lives as long as the pod or the session that made it, and a ``find`` or an
``ls -lR`` of a large tree would otherwise keep every entry it saw (about 600 bytes a listed
file). Entries past their lifetime are dropped as new ones come in, and past ``max_entries``
(a listing counts one per name) the oldest fetched go first, as in Alluxio's client metadata
cache. Evicting early costs one fetch more: every entry is fetched again at ``ttl`` anyway.
"""
from __future__ import annotations

import bisect
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_ENTRIES = 200_000
"""About 60 MB of a mount's memory when every entry is a listed file."""


@dataclass(frozen=True)
class Attrs:
    """What ``stat`` shows for one path."""

    kind: str  # "file" | "dir"
    size: int
    mtime: float
    mode: int
    sha256: str = ""
    stand_in: bool = False
    """A listing's placeholder for a mount point whose own attributes (its volume root's)
    were not fetched: the kernel must not keep it, and a lookup fetches the real ones."""


def find_listed(entries: list[tuple[str, Attrs]], name: str) -> Attrs | None:
    """``name``'s attributes in a sorted listing, None if it is not there."""
    i = bisect.bisect_left(entries, (name,))
    if i < len(entries) and entries[i][0] == name:
        return entries[i][1]
    return None


def _holds_other(listing: tuple[list[tuple[str, Attrs]], float, str] | None, name: str) -> bool:
    """A cached listing holds a name other than ``name``."""
    return listing is not None and any(n != name for n, _ in listing[0][:2])


class MetaCache:
    """Two tables keyed by volume-relative path (``""`` is the mount's root): attributes
    (``None``: known not to exist) and directory listings, each with its time and volume.

    Beside them, an index of what either table holds below each path (``_below``), so that
    a subtree is forgotten at the cost of its own entries: a scan of both tables for every
    delete the change stream reported cost a mount with 20k entries cached 1.6 ms of CPU an
    event, under the lock every lookup takes, and grew with the cache."""

    def __init__(self, ttl: float = 30.0, fallback_ttl: float = 1.0,
                 max_entries: int = DEFAULT_MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.ttl = ttl
        self.fallback_ttl = fallback_ttl
        self.max_entries = max_entries
        self._clock = clock
        # Both tables in the order their entries were fetched (a write moves one to the
        # end, and so does listing a directory below a listing), so the oldest of either
        # is at its front: what eviction takes.
        self._attrs: OrderedDict[str, tuple[Attrs | None, float, str]] = OrderedDict()
        self._lists: OrderedDict[str, tuple[list[tuple[str, Attrs]], float, str]] = OrderedDict()
        self._size = 0
        """Attribute entries plus the names of every listing held."""
        self._last_listed = 0
        """What the directory listed last holds: its names, and their attributes."""
        # path -> the paths directly below it that a table holds, or that lead to one
        self._below: dict[str, set[str]] = {}
        self._healthy: set[str] = set()
        # Listings whose list no caller holds (one this cache copied and has not handed out
        # since): our own creates edit these in place. Any other is copied first, as a
        # reader may be paging through it; copying it for every file created in a listed
        # directory made filling one (rsync lists before it copies) quadratic: 0.8 ms of
        # the mount's CPU per create at 100k names.
        self._private: set[str] = set()
        self._lock = threading.Lock()

    def _fresh(self, stamp: float, volume: str) -> bool:
        ttl = self.ttl if volume in self._healthy else self.fallback_ttl
        return self._clock() - stamp < ttl

    # -- the index and the size: every mutation of the tables goes through these ----------
    def _set_attrs(self, path: str, value: tuple[Attrs | None, float, str]) -> None:
        self._link(path)
        if self._attrs.pop(path, None) is None:
            self._size += 1
        self._attrs[path] = value  # at the end: the newest fetched

    def _set_list(self, path: str, value: tuple[list[tuple[str, Attrs]], float, str]) -> None:
        self._link(path)
        self._size += len(value[0]) - self._unlist(path)
        self._lists[path] = value  # its caller holds the list: shared

    def _unattr(self, path: str) -> None:
        if self._attrs.pop(path, None) is not None:
            self._size -= 1

    def _unlist(self, path: str) -> int:
        """Forget ``path``'s listing; how many names it held (0 if none)."""
        got = self._lists.pop(path, None)
        self._private.discard(path)
        n = len(got[0]) if got is not None else 0
        self._size -= n
        return n

    def _drop(self, path: str, *, attrs: bool = True, listing: bool = True) -> None:
        if attrs:
            self._unattr(path)
        if listing:
            self._unlist(path)
        self._prune(path)

    def _drop_tree(self, path: str) -> None:
        """``path`` and everything held below it."""
        for p in self._subtree(path):
            self._unattr(p)
            self._unlist(p)
            self._below.pop(p, None)
        self._prune(path)

    def _evict(self) -> None:
        """Drop what has outlived every lifetime, then the oldest fetched past the bound.

        The directory listed last is kept whole even if it alone is past the bound: `ls -l`
        looks up every name after listing, and a listing evicted meanwhile would be fetched
        again for each name."""
        dead = self._clock() - max(self.ttl, self.fallback_ttl)
        bound = max(self.max_entries, self._last_listed)
        while True:
            oldest = self._oldest()
            if oldest is None:
                return
            table, path, stamp = oldest
            if stamp > dead and self._size <= bound:
                return
            self._drop(path, attrs=table is self._attrs, listing=table is self._lists)

    def _touch_ancestors(self, path: str) -> None:
        """A walk going down keeps the listings above it: the next subdirectory's lookup
        asks its parent's, and an `ls -lR` whose top listing went first could fetch that
        again for each subdirectory below it."""
        while path:
            path = path.rpartition("/")[0]
            if path in self._lists:
                self._lists.move_to_end(path)

    def _oldest(self) -> tuple[OrderedDict[str, Any], str, float] | None:
        """The table, path and fetch time of the oldest entry held."""
        found: tuple[OrderedDict[str, Any], str, float] | None = None
        for table in (self._attrs, self._lists):
            for path, value in table.items():  # its front only
                if found is None or value[1] < found[2]:
                    found = (table, path, value[1])
                break
        return found

    def __len__(self) -> int:
        """Attribute entries plus the names of every listing held (what ``max_entries`` bounds)."""
        return self._size

    def _link(self, path: str) -> None:
        """Make ``path`` reachable from the root (at once if it already is)."""
        while path:
            parent = path.rpartition("/")[0]
            kids = self._below.get(parent)
            if kids is None:
                self._below[parent] = {path}
                path = parent  # a new node: link it to its own parent too
                continue
            kids.add(path)
            return

    def _prune(self, path: str) -> None:
        """Unlink ``path`` from the index if nothing is held at or below it, and so on up."""
        while path not in self._attrs and path not in self._lists and not self._below.get(path):
            self._below.pop(path, None)
            if not path:
                return
            parent = path.rpartition("/")[0]
            kids = self._below.get(parent)
            if kids is None:
                return
            kids.discard(path)
            if not kids:
                del self._below[parent]
            path = parent

    def _subtree(self, path: str) -> list[str]:
        out, todo = [], [path]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(self._below.get(p, ()))
        return out

    # -- reads and writes ---------------------------------------------------------------------
    def get_attrs(self, path: str) -> tuple[bool, Attrs | None]:
        """(hit, attrs); attrs None on a hit means 'known not to exist'."""
        with self._lock:
            got = self._attrs.get(path)
            if got is None or not self._fresh(got[1], got[2]):
                return False, None
            return True, got[0]

    def put_attrs(self, path: str, attrs: Attrs | None, volume: str) -> None:
        with self._lock:
            self._set_attrs(path, (attrs, self._clock(), volume))
            self._evict()

    def get_list(self, path: str) -> list[tuple[str, Attrs]] | None:
        with self._lock:
            got = self._lists.get(path)
            if got is None or not self._fresh(got[1], got[2]):
                return None
            self._private.discard(path)  # the caller may page through it from now on
            return got[0]

    def put_list(self, path: str, entries: list[tuple[str, Attrs]], volume: str) -> None:
        now = self._clock()
        prefix = path + "/" if path else ""
        with self._lock:
            self._set_list(path, (entries, now, volume))
            self._last_listed = 2 * len(entries)
            self._touch_ancestors(path)
            for name, attrs in entries:
                if not attrs.stand_in:  # a lookup must fetch what a stand-in stands for
                    self._set_attrs(prefix + name, (attrs, now, volume))
            self._evict()

    def upsert(self, path: str, attrs: Attrs, volume: str) -> None:
        """Our own change (we know the result): update the entry and the parent's listing
        in place, so a directory being filled is not listed again after every file."""
        parent, _, name = path.rpartition("/")
        now = self._clock()
        with self._lock:
            self._set_attrs(path, (attrs, now, volume))
            self._relist(parent, name, attrs)
            self._evict()

    def remove(self, path: str, volume: str) -> None:
        """Our own deletion: known absent now, and gone from the parent's listing."""
        parent, _, name = path.rpartition("/")
        with self._lock:
            self._drop_tree(path)
            self._set_attrs(path, (None, self._clock(), volume))
            self._relist(parent, name, None)
            self._evict()

    def _relist(self, parent: str, name: str, attrs: Attrs | None) -> None:
        """Put ``name`` into the parent's cached listing with ``attrs``, or take it out
        (None), where bisection finds it: in a copy if a reader may hold the list."""
        got = self._lists.get(parent)
        if got is None:
            return
        shared = got[0]
        i = bisect.bisect_left(shared, (name,))
        there = i < len(shared) and shared[i][0] == name
        if attrs is None and not there:
            return
        entries = shared if parent in self._private else list(shared)
        before = len(entries)
        if attrs is None:
            del entries[i]
        elif there:
            entries[i] = (name, attrs)
        else:
            entries.insert(i, (name, attrs))
        self._size += len(entries) - before
        self._private.add(parent)
        self._lists[parent] = (entries, got[1], got[2])  # keeps its place: same fetch time

    def invalidate(self, path: str) -> None:
        """``path`` changed: forget it, its listing, and its parent's listing."""
        parent = path.rpartition("/")[0]
        with self._lock:
            self._drop(path)
            self._drop(parent, attrs=False)

    def recheck_ancestors(self, path: str, *, removed: bool) -> None:
        """A change made elsewhere at ``path`` may have made directories above it or
        unmade them, which no change names: a put into a new directory makes its parents,
        and the last delete in a directory not made by ``mkdir`` takes it away. Forget each
        ancestor's attributes and the listing that shows it, going up while the cache could
        be wrong about it (they lived out their 30 s lifetime otherwise): after an
        addition, until an ancestor its parent's listing or its own attributes already show
        as a directory; after a removal, until an ancestor whose listing holds another
        name. Call it before :meth:`invalidate` of ``path`` (which drops the parent's
        listing this reads)."""
        with self._lock:
            child = path
            while child:
                anc, _, name = child.rpartition("/")
                if not anc:
                    return  # the mount's root is always there
                parent, _, anc_name = anc.rpartition("/")
                if removed:
                    if _holds_other(self._lists.get(anc), name):
                        return  # it holds something else: still there, and so is all above
                    if _holds_other(self._lists.get(parent), anc_name):
                        self._drop(anc, listing=False)
                        self._drop(parent, attrs=False)
                        return  # the parent stays whatever became of this one
                else:
                    held = self._attrs.get(anc)
                    if held is None:
                        listed = self._lists.get(parent)
                        attrs = find_listed(listed[0], anc_name) if listed is not None else None
                        if attrs is not None and attrs.kind == "dir":
                            return  # listed as a directory already: so is all above
                    elif held[0] is not None and held[0].kind == "dir":
                        return  # known as a directory already: so is all above
                self._drop(anc, listing=False)
                self._drop(parent, attrs=False)
                child = anc

    def forget_attrs(self, path: str) -> None:
        """Forget ``path``'s attributes only (its listing is still good)."""
        with self._lock:
            self._drop(path, listing=False)

    def invalidate_tree(self, path: str) -> None:
        with self._lock:
            self._drop_tree(path)
            self._drop(path.rpartition("/")[0], attrs=False)

    def set_healthy(self, volume: str, healthy: bool) -> None:
        with self._lock:
            if healthy:
                self._healthy.add(volume)
                return
            self._healthy.discard(volume)
            # Events may have been missed: drop what the stream was vouching for.
            for d in (self._attrs, self._lists):
                for p in [p for p, v in d.items() if v[2] == volume]:
                    self._drop(p, attrs=d is self._attrs, listing=d is self._lists)
