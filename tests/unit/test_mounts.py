"""The resolver against a naive reference: longest prefix on whole components."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from namespace.mounts import MountTable

comp = st.sampled_from(["a", "b", "bc", "health", "s", "x y", "é"])
path = st.lists(comp, max_size=5).map(lambda p: "/" + "/".join(p))
mounts = st.dictionaries(path, st.tuples(st.sampled_from(["v1", "v2", "v3"]), st.sampled_from(["", "sub", "s/t"])), max_size=12)


def naive(table: dict[str, tuple[str, str]], p: str) -> tuple[str, str, str] | None:
    best = None
    for m in table:
        if m == "/" or p == m or p.startswith(m + "/"):
            if best is None or len(m) > len(best):
                best = m
    if best is None:
        return None
    rest = p[len(best):].lstrip("/")
    vol, sub = table[best]
    rel = "/".join(x for x in (sub, rest) if x)
    return best, vol, rel


@settings(max_examples=400)
@given(mounts, path)
def test_resolver_agrees_with_reference(table: dict[str, tuple[str, str]], p: str) -> None:
    t = MountTable()
    for m, (v, s) in table.items():
        t.set(m, v, s)
    got = t.resolve(p)
    want = naive(table, p)
    if want is None:
        assert got is None
    else:
        assert got is not None
        assert (got.mount, got.volume, got.relative_path) == want


def test_component_boundary_and_nesting() -> None:
    t = MountTable()
    t.set("/a/b", "outer")
    t.set("/a/b/c/d", "inner", "deep")
    assert t.resolve("/a/bc") is None
    r = t.resolve("/a/b/c")
    assert r is not None and (r.volume, r.relative_path) == ("outer", "c")
    r = t.resolve("/a/b/c/d/e.csv")
    assert r is not None and (r.mount, r.volume, r.relative_path) == ("/a/b/c/d", "inner", "deep/e.csv")
    t.remove("/a/b/c/d")
    r = t.resolve("/a/b/c/d/e.csv")
    assert r is not None and r.volume == "outer" and r.relative_path == "c/d/e.csv"


def test_root_mount_catches_everything() -> None:
    t = MountTable()
    t.set("/", "root")
    r = t.resolve("//x//y/")
    assert r is not None and (r.path, r.relative_path) == ("/x/y", "x/y")
