"""``federation.fuse.cache.MetaCache`` against a model: after any sequence of its
operations it holds exactly the entries a plain scan of its two tables would, and its index
of what lies below each path holds nothing stale (a mount's cache lives for days); and
forgetting a subtree never scans the tables (it used to, for every delete reported)."""
from __future__ import annotations

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


def run(cache: MetaCache, op: str, path: str, volume: str) -> None:
    if op == "put_attrs":
        cache.put_attrs(path, F, volume)
    elif op == "put_list":
        cache.put_list(path, [("k", F)], volume)
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
    st.sampled_from(["put_attrs", "put_list", "upsert", "remove", "invalidate", "forget_attrs",
                     "invalidate_tree", "unhealthy"]),
    st.sampled_from(PATHS), st.sampled_from(VOLUMES)), max_size=40)


@settings(max_examples=400, deadline=None)
@given(OPS)
def test_the_cache_holds_what_the_model_holds_and_its_index_nothing_stale(ops: list[tuple[str, str, str]]) -> None:
    cache, model = MetaCache(), Model()
    for op, path, volume in ops:
        run(cache, op, path, volume)
        model.apply(op, path, volume)
        assert {k: (v[0], v[2]) for k, v in cache._attrs.items()} == model.attrs
        assert {k: (v[0], v[2]) for k, v in cache._lists.items()} == model.lists
    held = set(cache._attrs) | set(cache._lists)
    for node, kids in cache._below.items():  # every index node leads to something held
        assert kids, node
        for kid in kids:
            assert kid.rpartition("/")[0] == node
            assert any(k == kid or k.startswith(kid + "/") for k in held), kid
    for key in held - {""}:  # and everything held is reachable from the root
        parent = key.rpartition("/")[0]
        assert key in cache._below.get(parent, set()), key


class NoScans(dict):  # type: ignore[type-arg]
    """A table that refuses to be scanned: what per-event operations must never do."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("scanned the whole table")

    keys = values = items = __iter__


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
