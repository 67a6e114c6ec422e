"""The mount table: longest-prefix resolution of global paths on whole components.

Resolving walks the path's prefixes from longest to shortest and looks each one up. On a
big table every lookup is a cache (and TLB) miss, so the cost of a resolve is the number
of distinct cold cache lines it touches, not the Python it runs. The structure is built to
touch few of them:

* no prefix deeper than the deepest mount is ever looked at: the table counts its mounts
  per depth, and a path below that depth is first cut back with ``rfind`` alone (no slice,
  no hash). File paths are usually much deeper than mounts;
* the table is one flat open-addressing hash table in a single list: slot ``i`` holds a
  mount path at ``2i`` and its target beside it at ``2i + 1``, in the same cache line. At
  most an eighth of the slots are used, so a prefix that is not a mount almost always lands
  on an empty slot: one line, no key compared (what the Bloom filter in front of a dict used
  to cost, without its false positives). A hit costs that line plus the mount's own path
  string (the exact comparison); a dict costs its index, its entry and the key, and the
  filter's line on top. Every other mount's key met on the way is one more cold string to
  compare: 0.30 of them per resolve in ``bench.namespace`` at this load, 0.75 at a quarter,
  for 64 more bytes per mount;
* a table that lives long (``huge_pages=True``: the watch-fed cache of a controller or a
  long-lived client) asks the kernel for huge pages once its slot list spans several MiB
  (:mod:`namespace.huge_pages`): at 1M mounts a probe then misses the cache but no longer
  the TLB too. Once it is loaded (:meth:`MountTable.settle`), it asks for them under the
  pages that hold its keys as well, so a hit's compare does not miss the TLB either. A
  one-shot snapshot does not ask: the collapse costs about 2 ms per MiB up front, which a
  single command would never earn back.

Listings (the mount points below a directory) and requests that name a volume (the paths
showing it) ask other questions than resolves: a second index, built at the first such
question and kept by every change, answers them in a few binary searches instead of a scan
of every mount (about 100 ms per ``ls`` at 100k mounts; 0.05 ms now).

Targets are interned (a volume name, or one shared ``(volume, subpath)`` pair), so a hit
reaches no per-mount object other than the key. The table is an in-memory index only; etcd
is the source of truth and :mod:`namespace.cache` keeps this table current.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple, Protocol, TypeVar

from namespace import huge_pages
from namespace.errors import InvalidInput
from namespace.paths import normalize

MOUNT_DIR_MODE = 0o755
"""The permission bits of a directory that only the mount table makes (a mount prefix)."""
_MIN_SLOTS = 1 << 10
_SLOTS_PER_MOUNT = 8  # load factor at most 1/8: a miss rarely meets an occupied slot
# A removed mount's key slot: keeps probe chains intact until the next rebuild. Never equal
# to a prefix (a prefix starts with '/'), and never reused (see MountTable).
_GONE = "\0removed"
_PAGE_SHIFT = huge_pages.PAGE_SHIFT
_AFTER_SLASH = chr(ord("/") + 1)  # "p0" sorts after every "p/..." and before no "p/..."
# Changes the index follows with no question between them, before it is dropped (and
# rebuilt, one sort, at the next question).
_INDEX_UNASKED_CHANGES = 4096


class Resolution(NamedTuple):
    """Where a global path lands: the mount that owns it and the path inside the volume.

    A NamedTuple rather than a frozen dataclass: it is built on every data request, and a
    frozen dataclass's ``__init__`` alone costs more than the whole lookup.
    """

    path: str
    mount: str
    volume: str
    relative_path: str  # inside the volume, '' for the volume root


class MountsAt(NamedTuple):
    """What the mount table says of one path: all a listing or a stat of it needs of it."""

    below: list[str]
    """The mount points directly below it: their names in its listing, sorted."""
    mount_point: bool
    """A mount is at this very path."""
    mounted: bool
    """It resolves into a volume (it is at or below a mount point)."""

    def refuse(self, path: str, verb: str) -> None:
        """InvalidInput if ``path`` is a directory only the mount table makes (under no
        mount, with mount points below): nothing there to remove or move, as at a mount
        point itself (the CLI said "not under any mount", exit 3, though stat showed a
        directory)."""
        if self.below and not self.mounted:
            raise InvalidInput(f"refusing to {verb} {path}: it holds only mount points "
                               f"({', '.join(self.below[:5])}{', ...' if len(self.below) > 5 else ''}); "
                               "`gns mount remove` unmounts them")

    @property
    def is_dir(self) -> bool:
        """A directory of the namespace whatever a volume holds there (SPEC §12: mount
        prefixes appear as directories): a mount point, even one whose subpath the volume
        does not have yet, or a prefix of mount points."""
        return self.mount_point or bool(self.below)


_new_resolution = tuple.__new__
_Target = str | tuple[str, str]
# Slot 2i: a mount path, _GONE, or None (never used); slot 2i + 1: that mount's target.
_Slots = list[str | tuple[str, str] | None]


class MountTable:
    """Mount path → (volume, subpath). Not thread-safe for writers; readers may race freely
    with a single writer:

    * a new mount's target is stored before its key, so a reader that finds the key finds
      the target; a removed key is replaced by ``_GONE`` before its target is cleared, and a
      reader that still saw the key but reads no target treats the slot as a miss (as if it
      had looked after the removal);
    * a slot once used is never reused for another key until a rebuild, so a reader cannot
      pair one mount's key with another's target;
    * a rebuilt table (whose length gives its mask) replaces the old one in one assignment;
    * a mount's depth is counted before its key appears and forgotten after it is gone.
    """

    __slots__ = ("_slots", "_count", "_used", "_depths", "_maxdepth", "_targets", "_huge_pages", "_key_pages",
                 "_index")

    def __init__(self, *, huge_pages: bool = False) -> None:
        self._huge_pages = huge_pages  # ask for huge pages under a big slot list (see above)
        self._slots: _Slots = [None] * (2 * _MIN_SLOTS)
        self._count = 0  # live mounts
        self._used = 0  # key slots not None: live mounts plus _GONE ones
        self._depths: list[int] = [0]  # mounts per depth (number of components)
        self._maxdepth = 0  # deepest depth with a mount (0: none, or only '/')
        # Writer only: one shared target object per distinct (volume, subpath).
        self._targets: dict[tuple[str, str], _Target] = {}
        # Once the slot list is on huge pages: the pages holding keys set since (settle()).
        self._key_pages: set[int] | None = None
        # Listings' and volumes' index (see _Index): none until someone asks.
        self._index: _Index | None = None

    def __len__(self) -> int:
        return self._count

    def __contains__(self, path: str) -> bool:
        return self._find(path) >= 0

    def set(self, path: str, volume: str, subpath: str = "") -> None:
        target = self._targets.get((volume, subpath))
        if target is None:
            target = self._targets[(volume, subpath)] = (volume, subpath) if subpath else volume
        slots = self._slots
        at = self._find(path)
        if at >= 0:
            self._reindex(path, _volume(slots[at + 1]), volume)
            slots[at + 1] = target
            return
        self._reindex(path, None, volume)
        if (self._used + 1) * _SLOTS_PER_MOUNT * 2 > len(slots):
            # Twice the live count: a full table doubles; one full of removed mounts' slots
            # is rebuilt at least half empty, so rebuilds stay rare under churn.
            self._rebuild(2 * self._count)
            slots = self._slots
        depth = _depth(path)
        depths = self._depths
        if depth >= len(depths):
            depths.extend([0] * (depth + 1 - len(depths)))
        depths[depth] += 1
        if depth > self._maxdepth:
            self._maxdepth = depth
        at = _free_slot(slots, path)
        slots[at + 1] = target  # before the key: a reader that sees the key sees this
        slots[at] = path
        self._count += 1
        self._used += 1
        if self._key_pages is not None:
            self._key_pages.add(id(path) >> _PAGE_SHIFT)

    def settle(self) -> None:
        """A bulk load is done (or a rebuild): a table on huge pages asks for them under
        the keys set since, too. Later mounts wait for the next rebuild or load."""
        if self._key_pages:
            huge_pages.advise_pages(self._key_pages)
            self._key_pages = set()

    def reserve(self, count: int) -> None:
        """Size the table for ``count`` mounts at once (a bulk load knows its key count),
        instead of rebuilding it each time the table doubles."""
        if (self._used + count) * _SLOTS_PER_MOUNT * 2 > len(self._slots):
            self._rebuild(self._count + count)

    def remove(self, path: str) -> None:
        at = self._find(path)
        if at < 0:
            return
        slots = self._slots
        self._reindex(path, _volume(slots[at + 1]), None)
        slots[at] = _GONE
        slots[at + 1] = None
        self._count -= 1
        depth = _depth(path)
        self._depths[depth] -= 1
        while self._maxdepth and not self._depths[self._maxdepth]:
            self._maxdepth -= 1
        if len(self._targets) > 2 * self._count + 1024:  # unique subpaths churned
            self._targets = {_pair(v): v for _, v in self._live_raw()}

    def clear(self) -> None:
        self._slots = [None] * (2 * _MIN_SLOTS)
        self._key_pages = None
        self._count = self._used = 0
        self._targets.clear()
        self._depths = [0]
        self._maxdepth = 0
        self._index = None

    def refuse_mount_point(self, path: str, verb: str) -> None:
        """InvalidInput if normal ``path`` is a mount point: the mount table's (``gns mount
        remove``), not a directory to remove or move; that would empty or move the data it
        shows and leave the mount pointing at nothing (HDFS's router refuses the same)."""
        at = self.get(path)
        if at is not None:
            raise mount_point_refused(path, at[0], at[1], verb)

    def get(self, path: str) -> tuple[str, str] | None:
        at = self._find(path)
        hit = self._slots[at + 1] if at >= 0 else None
        return None if hit is None else _pair(hit)

    def items(self) -> Iterator[tuple[str, tuple[str, str]]]:
        return iter(sorted(self._live()))

    def mounts_of(self, volume: str) -> list[tuple[str, str]]:
        """Every mount of ``volume``: (path, subpath), sorted by path: a lookup, not a scan
        of every mount (a request that names a volume asks it)."""
        out = []
        for key in list(self._indexed().by_volume.get(volume, ())):
            pair = self.get(key)
            if pair is not None and pair[0] == volume:  # a reader racing the writer
                out.append((key, pair[1]))
        return out

    def children(self, path: str) -> list[str]:
        """The next component of every mount strictly below normal ``path``, sorted, once
        each: the mount points a listing of ``path`` shows as directories (``/a`` and
        ``/a/b/c`` mounted: ``/`` has ``a``, ``/a`` has ``b``). One binary search of the
        sorted mount paths per name found: the keys below a name are skipped, not read."""
        if _depth(path) >= self._maxdepth:  # no mount is deeper than path itself
            return []
        prefix = "/" if path == "/" else path + "/"
        cut = len(prefix)
        keys = self._indexed().keys
        pos = bisect.bisect_left(keys, prefix)
        end = bisect.bisect_left(keys, prefix[:-1] + _AFTER_SLASH, pos)
        names = set()
        while pos < end:
            key = keys[pos]
            slash = key.find("/", cut)
            if slash < 0:
                if len(key) > cut:  # not the mount at ``path`` itself ('/')
                    names.add(key[cut:])
                pos += 1
            else:  # every key below this name sorts before its next sibling's: skip them
                names.add(key[cut:slash])
                pos = bisect.bisect_left(keys, key[:slash] + _AFTER_SLASH, pos + 1, end)
        return sorted(names)

    def at(self, path: str) -> MountsAt:
        """What the table says of normal ``path``: the mount points below it, whether one
        is at it, whether it resolves."""
        return MountsAt(self.children(path), self._find(path) >= 0, self.resolve_normal(path) is not None)

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
        slots = self._slots
        mask = len(slots) - 2  # 0b11..10: a hash masked with it is an even index, a key slot
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
            at = hash(prefix) & mask
            key = slots[at]
            while key is not None:  # None: not a mount (the usual case; no key touched)
                if key == prefix:
                    hit = slots[at + 1]
                    if hit is None:  # removed while we looked
                        break
                    below = path[len(prefix) + 1 :] if prefix != "/" else path[1:]
                    if isinstance(hit, str):
                        return _new_resolution(Resolution, (path, prefix, hit, below))
                    volume, subpath = hit
                    return _new_resolution(
                        Resolution, (path, prefix, volume, subpath + "/" + below if below else subpath)
                    )
                at = (at + 2) & mask
                key = slots[at]
            cut = prefix.rfind("/")
            if cut > 0:
                prefix = prefix[:cut]
            elif prefix == "/":
                return None
            else:
                prefix = "/"

    def _indexed(self) -> _Index:
        index = self._index
        if index is None:
            index = self._index = _Index(self._live_raw())
        index.unasked = 0
        return index

    def _reindex(self, path: str, old: str | None, new: str | None) -> None:
        """Keep the index (if any) through a change of ``path``'s volume (None: no mount);
        drop it after many changes nobody asked about in between (a bulk load), so that
        they cost one sort at the next question, not one insertion each."""
        index = self._index
        if index is None:
            return
        if index.unasked >= _INDEX_UNASKED_CHANGES:
            self._index = None
            return
        index.unasked += 1
        index.move(path, old, new)

    def _live(self) -> Iterator[tuple[str, tuple[str, str]]]:
        return ((key, _pair(target)) for key, target in self._live_raw())

    def _live_raw(self) -> Iterator[tuple[str, _Target]]:
        slots = self._slots
        for key, target in zip(slots[::2], slots[1::2], strict=True):
            if isinstance(key, str) and key is not _GONE and target is not None:
                yield key, target

    def _find(self, path: str) -> int:
        """The key slot holding ``path``, or -1."""
        slots = self._slots
        mask = len(slots) - 2
        at = hash(path) & mask
        while True:
            key = slots[at]
            if key is None:
                return -1
            if key == path and key is not _GONE:
                return at
            at = (at + 2) & mask

    def _rebuild(self, size: int) -> None:
        """A new table for ``size`` live mounts, without the removed ones' slots."""
        nslots = _MIN_SLOTS
        while nslots < size * _SLOTS_PER_MOUNT:
            nslots <<= 1
        new: _Slots = [None] * (2 * nslots)
        # A big table's probes then miss the cache but not the TLB too; so does the compare
        # of a hit's key, once the pages that hold the keys are advised as well.
        pages: set[int] | None = set() if self._huge_pages and huge_pages.advise(new) else None
        count = 0
        for key, target in self._live_raw():
            at = _free_slot(new, key)
            new[at + 1] = target
            new[at] = key
            count += 1
            if pages is not None:
                pages.add(id(key) >> _PAGE_SHIFT)
        self._slots = new
        self._used = count
        self._key_pages = pages
        self.settle()


def _free_slot(slots: _Slots, path: str) -> int:
    """The first never-used key slot on ``path``'s probe chain (slots of removed mounts are
    not reused: see MountTable)."""
    mask = len(slots) - 2
    at = hash(path) & mask
    while slots[at] is not None:
        at = (at + 2) & mask
    return at


class _Index:
    """The mount paths sorted (listings) and by volume (requests naming a volume): built by
    the first question, from one scan of the table, then kept by its changes. A process
    that never asks (a one-shot resolve) holds none; one that does pays 8 bytes a mount."""

    __slots__ = ("keys", "by_volume", "unasked")

    def __init__(self, live: Iterable[tuple[str, _Target]]) -> None:
        self.keys: list[str] = []
        self.by_volume: dict[str, list[str]] = {}
        for key, target in live:
            self.keys.append(key)
            self.by_volume.setdefault(_pair(target)[0], []).append(key)
        self.keys.sort()
        for keys in self.by_volume.values():
            keys.sort()
        self.unasked = 0  # changes since the last question

    def move(self, path: str, old: str | None, new: str | None) -> None:
        """``path`` was a mount of volume ``old`` and is now one of ``new`` (None: none)."""
        if old == new:
            return
        if old is not None:
            _sorted_remove(self.by_volume.get(old), path)
            if not self.by_volume.get(old, True):
                del self.by_volume[old]
        if new is not None:
            bisect.insort(self.by_volume.setdefault(new, []), path)
        if old is None:
            bisect.insort(self.keys, path)
        elif new is None:
            _sorted_remove(self.keys, path)


def _sorted_remove(keys: list[str] | None, path: str) -> None:
    if keys is not None:
        at = bisect.bisect_left(keys, path)
        if at < len(keys) and keys[at] == path:
            del keys[at]


def mount_point_refused(path: str, volume: str, subpath: str, verb: str) -> InvalidInput:
    """The error for ``verb`` of mount point ``path`` (of ``volume:subpath``)."""
    what = f"{volume}:{subpath}" if subpath else f"the root of volume {volume}"
    return InvalidInput(f"refusing to {verb} {path}: it is a mount point (of {what}); "
                        f"`gns mount remove {path}` unmounts it")


def _volume(target: _Target | None) -> str | None:
    """A slot's volume (None: an emptied slot, as a live key's never is)."""
    return target[0] if isinstance(target, tuple) else target


def _depth(path: str) -> int:
    """Number of components: 0 for '/', 1 for '/a'."""
    return 0 if path == "/" else path.count("/")


def _pair(value: _Target) -> tuple[str, str]:
    return (value, "") if isinstance(value, str) else value


class _Entry(Protocol):
    """A directory entry as listings carry it (the client's model, the gRPC message)."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...


E = TypeVar("E", bound=_Entry)


def with_mount_points(entries: Iterable[E], mount_points: Iterable[str], mount_dir: Callable[[str], E]) -> list[E]:
    """A volume's listing with the mount points below it merged in, sorted by name with no
    name twice (what HDFS router-based federation and MapR show, and FUSE).

    A mount point is a directory: the volume's own entry of that name stays if it is a
    directory too (it keeps its mtime and mode); a file of that name is shadowed, since
    every path below the mount point resolves into the mounted volume."""
    by_name = {e.name: e for e in entries}
    for name in mount_points:
        mine = by_name.get(name)
        if mine is None or mine.type != "dir":
            by_name[name] = mount_dir(name)
    return [by_name[n] for n in sorted(by_name)]
