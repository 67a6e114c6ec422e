"""The resolver against a naive reference: longest prefix on whole components."""
from __future__ import annotations

from dataclasses import dataclass
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from namespace import mounts as mounts_module
from namespace.mounts import MountsAt, MountTable, with_mount_points

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


def naive_children(table: dict[str, tuple[str, str]], p: str) -> list[str]:
    prefix = "/" if p == "/" else p + "/"
    return sorted({m[len(prefix):].split("/")[0] for m in table if m.startswith(prefix) and m != prefix})


@settings(max_examples=400)
@given(mounts, path, st.lists(path, max_size=4))
def test_children_agree_with_reference(table: dict[str, tuple[str, str]], p: str, removed: list[str]) -> None:
    t = MountTable()
    for m, (v, sub) in table.items():
        t.set(m, v, sub)
    for m in removed:  # removed mounts' slots must not show up
        t.remove(m)
        table.pop(m, None)
    assert t.children(p) == naive_children(table, p)


ops = st.lists(st.tuples(st.sampled_from(["set", "retarget", "remove", "clear"]), path,
                         st.sampled_from(["v1", "v2", "v3"]), st.sampled_from(["", "sub"]),
                         st.integers(0, 99)), max_size=30)


@settings(max_examples=300)
@given(ops, st.sampled_from([0, 4096]), st.sets(path, max_size=4))
def test_indexes_follow_every_change(steps: list[tuple[str, str, str, str, int]], unasked: int,
                                     asked: set[str]) -> None:
    """The index of mounts by volume and the sorted one listings use, asked after changes
    of every kind (a mount set, moved to another volume, removed, the table cleared), never
    answer from before one: kept through each change, or dropped for changes nobody asked
    about (``unasked`` 0: every one) and built again."""
    t, table = MountTable(), dict[str, tuple[str, str]]()
    with mock.patch.object(mounts_module, "_INDEX_UNASKED_CHANGES", unasked):
        for op, m, vol, sub, pick in steps:
            if op in ("retarget", "remove") and table:
                m = sorted(table)[pick % len(table)]  # a mount that exists
            if op in ("set", "retarget"):
                t.set(m, vol, sub)
                table[m] = (vol, sub)
            elif op == "remove":
                t.remove(m)
                table.pop(m, None)
            elif op == "clear":
                t.clear()
                table.clear()
            for v in ("v1", "v2", "v3"):
                assert t.mounts_of(v) == sorted((p, s) for p, (w, s) in table.items() if w == v)
            for p in {"/", m, *asked, *(k.rsplit("/", 1)[0] or "/" for k in table)}:
                assert t.children(p) == naive_children(table, p)


def test_children_are_next_components_of_deeper_mounts_only() -> None:
    t = MountTable()
    t.set("/data", "a")
    t.set("/data/b", "b")
    t.set("/x/y/z", "c")
    t.set("/x/y/w", "d")
    assert t.children("/") == ["data", "x"]
    assert t.children("/data") == ["b"]
    assert t.children("/data/b") == []  # a mount is not below itself
    assert t.children("/x") == ["y"]
    assert t.children("/x/y") == ["w", "z"]
    assert t.children("/da") == []  # whole components only
    assert t.children("/x/y/z/deeper") == []
    t.set("/", "root")
    assert t.children("/") == ["data", "x"]
    assert MountTable().children("/") == []


@dataclass(frozen=True)
class Entry:
    name: str
    type: str
    size: int = 0


def test_with_mount_points_merges_sorted_without_duplicates() -> None:
    listing = [Entry("a.csv", "file", 3), Entry("b", "dir"), Entry("z.txt", "file", 1)]
    merged = with_mount_points(listing, ["m", "b", "c"], lambda n: Entry(n, "dir"))
    assert merged == [Entry("a.csv", "file", 3), Entry("b", "dir"), Entry("c", "dir"),
                      Entry("m", "dir"), Entry("z.txt", "file", 1)]


def test_a_mount_point_shadows_a_file_of_its_name_but_keeps_a_directory() -> None:
    mine = Entry("b", "dir", 0)
    assert with_mount_points([mine], ["b"], lambda n: Entry(n, "dir", 9))[0] is mine
    assert with_mount_points([Entry("b", "file", 5)], ["b"], lambda n: Entry(n, "dir")) == [Entry("b", "dir")]
    assert with_mount_points([], [], lambda n: Entry(n, "dir")) == []


def test_what_the_table_says_of_a_path() -> None:
    t = MountTable()
    for m in ("/a/b", "/a/b/c/d", "/x"):
        t.set(m, "v")
    assert t.at("/") == MountsAt(["a", "x"], False, False) and t.at("/").is_dir
    assert t.at("/a") == MountsAt(["b"], False, False)
    assert t.at("/a/b") == MountsAt(["c"], True, True)
    assert t.at("/a/b/c") == MountsAt(["d"], False, True) and t.at("/a/b/c").is_dir
    assert t.at("/x") == MountsAt([], True, True) and t.at("/x").is_dir  # a mount point
    assert t.at("/x/y") == MountsAt([], False, True) and not t.at("/x/y").is_dir
    assert t.at("/elsewhere") == MountsAt([], False, False) and not t.at("/elsewhere").is_dir
