"""``federation.fuse.cache.MetaCache`` against a model: after any sequence of its
operations it holds exactly the entries a plain scan of its two tables would, and its index
of what lies below each path holds nothing stale (a mount's cache lives for days); and
forgetting a subtree never scans the tables (it used to, for every delete reported). A
listing once handed out (or handed in) never changes under its holder, and our own creates
in a listed directory edit a private copy in place rather than copying it each time.

Bounded, it holds a part of what the unbounded cache holds, the same where it holds it,
within its bound; entries past every lifetime go as new ones come in."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.fuse.cache import Attrs, MetaCache

F = Attrs("file", 1, 1.0, 0o644)
D = Attrs("dir", 0, 1.0, 0o755)
PATHS = ["", "a", "a/b", "a/b/c", "a/bc", "ab", "x", "x/y", "x/y/z"]
VOLUMES = ["v", "w"]


class Model:
    """The two tables, with subtrees found by scanning every key."""

    def __init__(self) -> None:
        self.attrs: dict[str, tuple[Attrs | None, str]] = {}
        self.lists: dict[str, tuple[list[tuple[str, Attrs]], str]] = {}

    def below(self, path: str) -> list[str]:
        keys = set(self.attrs) | set(self.lists)
        return [k for k in keys if k == path or path == "" or k.startswith(path + "/")]

    def apply(self, op: str, path: str, volume: str) -> None:
        parent, _, name = path.rpartition("/")
        if op == "put_attrs":
            self.attrs[path] = (F, volume)
        elif op == "put_list":
            self.lists[path] = ([("k", F)], volume)
            self.attrs[f"{path}/k" if path else "k"] = (F, volume)
        elif op == "upsert":
            self.attrs[path] = (F, volume)
            if parent in self.lists:
                entries = [e for e in self.lists[parent][0] if e[0] != name] + [(name, F)]
                self.lists[parent] = (sorted(entries, key=lambda e: e[0]), self.lists[parent][1])
        elif op == "remove":
            for k in self.below(path):
                self.attrs.pop(k, None)
                self.lists.pop(k, None)
            self.attrs[path] = (None, volume)
            if parent in self.lists:
                self.lists[parent] = ([e for e in self.lists[parent][0] if e[0] != name], self.lists[parent][1])
        elif op == "invalidate":
            self.attrs.pop(path, None)
            self.lists.pop(path, None)
            self.lists.pop(parent, None)
        elif op == "forget_attrs":
            self.attrs.pop(path, None)
        elif op == "invalidate_tree":
            for k in self.below(path):
                self.attrs.pop(k, None)
                self.lists.pop(k, None)
            self.lists.pop(parent, None)
        elif op == "unhealthy":
            for d in (self.attrs, self.lists):
                for k in [k for k, v in d.items() if v[1] == volume]:
                    del d[k]


Held = list[tuple[list[tuple[str, Attrs]], list[tuple[str, Attrs]]]]


def run(cache: MetaCache, op: str, path: str, volume: str, held: Held | None = None) -> None:
    """Apply ``op``; a listing handed in or out goes to ``held`` with a copy of it as it was."""
    if op == "put_attrs":
        cache.put_attrs(path, F, volume)
    elif op == "put_list":
        entries = [("k", F)]
        cache.put_list(path, entries, volume)
        if held is not None:
            held.append((entries, list(entries)))
    elif op == "get_list":
        got = cache.get_list(path)
        if got is not None and held is not None:
            held.append((got, list(got)))
    elif op == "upsert":
        cache.upsert(path, F, volume)
    elif op == "remove":
        cache.remove(path, volume)
    elif op == "invalidate":
        cache.invalidate(path)
    elif op == "forget_attrs":
        cache.forget_attrs(path)
    elif op == "invalidate_tree":
        cache.invalidate_tree(path)
    elif op == "unhealthy":
        cache.set_healthy(volume, False)


OPS = st.lists(st.tuples(
    st.sampled_from(["put_attrs", "put_list", "get_list", "upsert", "remove", "invalidate",
                     "forget_attrs", "invalidate_tree", "unhealthy"]),
    st.sampled_from(PATHS), st.sampled_from(VOLUMES)), max_size=40)


def held_as_model(cache: MetaCache) -> tuple[dict[str, Any], dict[str, Any]]:
    return ({k: (v[0], v[2]) for k, v in cache._attrs.items()},
            {k: (v[0], v[2]) for k, v in cache._lists.items()})


def counted(cache: MetaCache) -> int:
    return len(cache._attrs) + sum(len(v[0]) for v in cache._lists.values())


@settings(max_examples=400, deadline=None)
@given(OPS)
def test_the_cache_holds_what_the_model_holds_and_its_index_nothing_stale(ops: list[tuple[str, str, str]]) -> None:
    cache, model = MetaCache(), Model()
    held: Held = []
    for op, path, volume in ops:
        run(cache, op, path, volume, held)
        model.apply(op, path, volume)
        assert held_as_model(cache) == (model.attrs, model.lists)
        assert len(cache) == counted(cache)
        assert all(got == then for got, then in held)  # nothing changed under a holder
    assert_index_exact(cache)


@settings(max_examples=400, deadline=None)
@given(OPS, st.integers(min_value=1, max_value=6))
def test_a_bounded_cache_holds_part_of_the_model_within_its_bound(
        ops: list[tuple[str, str, str]], bound: int) -> None:
    cache, model = MetaCache(max_entries=bound), Model()
    for op, path, volume in ops:
        run(cache, op, path, volume)
        model.apply(op, path, volume)
        attrs, lists = held_as_model(cache)
        assert attrs.items() <= model.attrs.items() and lists.items() <= model.lists.items()
        assert len(cache) == counted(cache) <= max(bound, 2)  # 2: the listing made last, whole
    assert_index_exact(cache)


def assert_index_exact(cache: MetaCache) -> None:
    assert cache._private <= set(cache._lists)
    held = set(cache._attrs) | set(cache._lists)
    for node, kids in cache._below.items():  # every index node leads to something held
        assert kids, node
        for kid in kids:
            assert kid.rpartition("/")[0] == node
            assert any(k == kid or k.startswith(kid + "/") for k in held), kid
    for key in held - {""}:  # and everything held is reachable from the root
        parent = key.rpartition("/")[0]
        assert key in cache._below.get(parent, set()), key


class NoScans(OrderedDict):  # type: ignore[type-arg]
    """A table that refuses to be scanned past its first entry (eviction looks at the
    oldest): what per-event operations must never do."""

    def __iter__(self) -> Iterator[Any]:
        for i, key in enumerate(super().__iter__()):
            if i:
                raise AssertionError("scanned the whole table")
            yield key

    def items(self) -> Iterator[tuple[Any, Any]]:  # type: ignore[override]
        for key in self:
            yield key, self[key]

    def keys(self) -> Any:
        raise AssertionError("scanned the whole table")

    values = keys


def test_forgetting_a_subtree_costs_the_subtree_not_the_cache() -> None:
    cache = MetaCache()
    for d in range(10):
        cache.put_list(f"t/d{d}", [(f"f{i}", F) for i in range(100)], "v")
    cache._attrs, cache._lists = NoScans(cache._attrs), NoScans(cache._lists)
    cache.invalidate_tree("t/d3/f7")  # what the change stream does for a delete
    cache.remove("t/d4", "v")  # our own rm -r
    cache.invalidate("t/d5/f1")
    cache.upsert("t/d6/new", F, "v")
    assert cache.get_attrs("t/d3/f7") == (False, None)
    assert cache.get_attrs("t/d4") == (True, None) and cache.get_attrs("t/d4/f1") == (False, None)
    assert cache.get_attrs("t/d3/f8") == (True, F)
    assert ("new", F) in (cache.get_list("t/d6") or [])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entries_past_every_lifetime_go_as_new_ones_come_in() -> None:
    clock = Clock()
    cache = MetaCache(ttl=30.0, fallback_ttl=1.0, clock=clock)
    cache.set_healthy("v", True)
    cache.put_list("old", [(f"f{i}", F) for i in range(1000)], "v")
    clock.now += 29.0
    cache.put_attrs("new", F, "v")
    assert len(cache) == 2001  # all still alive
    clock.now += 2.0
    cache.put_attrs("newer", F, "v")
    assert cache.get_list("old") is None and set(cache._attrs) == {"new", "newer"}
    assert len(cache) == 2 and set(cache._below) == {""}


def test_past_the_bound_the_oldest_fetched_go_first() -> None:
    clock = Clock()
    cache = MetaCache(max_entries=250, clock=clock)
    cache.set_healthy("v", True)
    for d in range(5):  # an `ls -lR`: 5 directories of 50 files, 500 entries in all
        clock.now += 1
        cache.put_list(f"t/d{d}", [(f"f{i}", F) for i in range(50)], "v")
    assert len(cache) <= 250
    assert cache.get_list("t/d4") is not None and cache.get_attrs("t/d4/f49") == (True, F)
    assert cache.get_list("t/d3") is not None  # 2 x 100 fit; the oldest three did not
    assert cache.get_list("t/d0") is None and cache.get_attrs("t/d0/f0") == (False, None)
    assert all(not k.startswith("t/d0") for k in cache._below), "the index keeps evicted paths"
    # Looking an entry up does not keep it: order is by fetch (it is fetched again at ttl).
    cache.get_attrs("t/d3/f0")
    clock.now += 1
    cache.put_list("t/d5", [(f"f{i}", F) for i in range(100)], "v")
    assert cache.get_attrs("t/d3/f0") == (False, None) and len(cache) <= 250


def test_creates_in_a_listed_directory_copy_its_listing_once_per_reader() -> None:
    """Filling a listed directory (rsync lists, then copies) edits one private copy in
    place: copying the listing for every file made it quadratic in the directory's size."""
    cache = MetaCache()
    listed = [(f"f{i:03d}", F) for i in range(0, 200, 2)]
    cache.put_list("d", listed, "v")
    cache.upsert("d/f001", F, "v")
    own = cache._lists["d"][0]
    assert own is not listed and len(listed) == 100  # the lister's list is left alone
    for i in range(3, 40, 2):
        cache.upsert(f"d/f{i:03d}", F, "v")
    cache.remove("d/f000", "v")
    assert cache._lists["d"][0] is own  # edited in place: no reader holds it
    reader = cache.get_list("d")
    assert reader is own
    snapshot = list(reader)
    cache.upsert("d/f041", F, "v")
    assert reader == snapshot and cache._lists["d"][0] is not reader  # a reader's is copied
    names = [n for n, _ in cache._lists["d"][0]]
    assert names == sorted(names) and "f041" in names and "f000" not in names
    assert len(names) == 100 + 20 - 1 + 1 and len(cache) == counted(cache)


def test_a_change_elsewhere_rechecks_the_directories_above_it_that_it_made_or_unmade() -> None:
    """A put into a new directory makes its parents; the last delete in one made by no
    mkdir takes it away; no change names them, and the cache knew them wrongly for 30 s."""
    cache = MetaCache()
    cache.put_list("", [("a", D)], "v")
    cache.put_list("a", [("old", F)], "v")
    cache.put_attrs("a/nd", None, "v")  # looked for before it existed
    cache.put_attrs("a/nd/deep", None, "v")
    cache.recheck_ancestors("a/nd/deep/f", removed=False)
    assert cache.get_attrs("a/nd") == (False, None) and cache.get_attrs("a/nd/deep") == (False, None)
    assert cache.get_list("a") is None  # listed without nd
    assert cache.get_list("") is not None  # a was listed as a directory: kept, and all above

    cache.put_list("a", [("nd", D), ("old", F)], "v")
    cache.put_list("a/nd", [("f", F)], "v")
    cache.put_attrs("a/nd", D, "v")
    cache.recheck_ancestors("a/nd/g", removed=False)  # nd is known: nothing above changes
    assert cache.get_list("a") is not None and cache.get_attrs("a/nd") == (True, D)

    cache.recheck_ancestors("a/nd/f", removed=True)  # nd held only f: it may be gone
    assert cache.get_attrs("a/nd") == (False, None) and cache.get_list("a") is None
    assert cache.get_list("") is not None  # a lists "old" too: still there

    cache.put_list("a", [("nd", D), ("old", F)], "v")
    cache.put_list("a/nd", [("f", F), ("h", F)], "v")
    cache.recheck_ancestors("a/nd/f", removed=True)  # nd holds h: still there
    assert cache.get_list("a") is not None
    assert_index_exact(cache)


def test_a_walk_keeps_the_listings_above_it() -> None:
    # `ls -lR`: the top directory is listed first; each subdirectory's lookup then asks it.
    clock = Clock()
    cache = MetaCache(max_entries=300, clock=clock)
    cache.set_healthy("v", True)
    cache.put_list("t", [(f"d{d}", D) for d in range(20)], "v")
    for d in range(20):
        clock.now += 1
        cache.put_list(f"t/d{d}", [(f"f{i}", F) for i in range(50)], "v")
        assert cache.get_list("t") is not None, d  # not evicted, though fetched first
    assert len(cache) <= 300


def test_the_directory_listed_last_is_kept_whole_past_the_bound() -> None:
    # `ls -l` of a directory larger than the bound looks every name up after listing it:
    # evicting the listing would fetch the whole directory again for each name.
    cache = MetaCache(max_entries=100)
    cache.put_attrs("elsewhere", F, "v")
    cache.put_list("big", [(f"f{i:04d}", F) for i in range(1000)], "v")
    assert cache.get_list("big") is not None and cache.get_attrs("big/f0000") == (True, F)
    assert cache.get_attrs("elsewhere") == (False, None) and len(cache) == 2000
    cache.put_list("small", [("a", F)], "v")  # the walk moved on: the bound holds again
    assert len(cache) <= 100 and cache.get_list("small") is not None


def test_the_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        MetaCache(max_entries=0)
