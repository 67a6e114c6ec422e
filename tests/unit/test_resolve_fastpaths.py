"""The resolver's fast paths (issue 14) agree with the slow, obvious ones.

``normalize`` has a string-scan fast path for paths already in normal form, and
``MountTable`` is an open-addressing table with markers for removed mounts, rebuilt as mounts
come and go, read by threads while one writer changes it: none of that may change an answer.
"""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from namespace.errors import InvalidInput
from namespace.mounts import MountTable
from namespace.paths import normalize

# The normal-form regex the fast path stands in front of.
_NORMAL = re.compile(r"/|(?:/(?!\.\.?(?:/|$))[^/\x00-\x1f\x7f-\x9f]+)+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def reference(path: str) -> str | None:
    """SPEC §3 spelled out slowly; None where the path is refused."""
    if not path.startswith("/") or _CONTROL.search(path):
        return None
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        return None
    try:
        encoded = [p.encode("utf-8") for p in parts]
    except UnicodeEncodeError:
        return None
    if any(len(p) > 255 for p in encoded):
        return None
    normal = "/" + "/".join(parts)
    return normal if len(normal.encode("utf-8")) <= 4096 else None


text = st.text(alphabet=st.sampled_from(["/", ".", "a", "é", " ", "\x00", "\x85", "\u00a0", "\ud800", "x"]), max_size=24)


@settings(max_examples=600)
@given(text)
def test_normalize_agrees_with_reference(path: str) -> None:
    want = reference(path)
    if want is None:
        with pytest.raises(InvalidInput):
            normalize(path)
    else:
        assert normalize(path) == want


@pytest.mark.parametrize("path", ["/.hidden/x", "/a/.b", "/a/b.c", "/ä/\u00a0", "/a b"])
def test_dot_led_and_unusual_names_still_normal(path: str) -> None:
    assert normalize(path) == path


def test_filter_survives_growth_and_removals() -> None:
    table = MountTable()
    paths = [f"/t-{i % 13}/g-{i % 7}/p-{i}" for i in range(20_000)]
    for i, p in enumerate(paths):
        table.set(p, f"v{i % 5}")
    assert all(table.resolve(p + "/x/y") is not None for p in paths)
    for p in paths[::2]:
        table.remove(p)
    for i, p in enumerate(paths):
        got = table.resolve(p + "/file")
        assert (got is None) if i % 2 == 0 else (got is not None and got.mount == p)
    table.clear()
    assert table.resolve(paths[1]) is None
    table.set("/", "root", "sub")
    got = table.resolve(paths[1])
    assert got is not None and got.relative_path == "sub" + paths[1]


def test_depth_cut_follows_the_deepest_mount() -> None:
    """Prefixes deeper than the deepest mount are skipped; adding or removing the deepest
    mount moves that bound, and the answers stay those of the naive walk."""
    table = MountTable()
    table.set("/a", "va")
    deep = "/a/b/c/d/e/f/g/h"
    assert table.resolve(deep) == ("/a/b/c/d/e/f/g/h", "/a", "va", "b/c/d/e/f/g/h")
    table.set("/a/b/c/d/e", "ve", "s/t")
    assert table.resolve(deep) == (deep, "/a/b/c/d/e", "ve", "s/t/f/g/h")
    table.set("/a/b/c/d/e/f/g/h/i/j", "vj")
    assert table.resolve(deep + "/i/j/k") == (deep + "/i/j/k", deep + "/i/j", "vj", "k")
    table.remove("/a/b/c/d/e/f/g/h/i/j")
    assert table.resolve(deep + "/i/j/k") == (deep + "/i/j/k", "/a/b/c/d/e", "ve", "s/t/f/g/h/i/j/k")
    table.remove("/a/b/c/d/e")
    table.remove("/a")
    assert table.resolve(deep) is None
    table.set("/", "root")
    assert table.resolve(deep) == (deep, "/", "root", deep[1:])
    assert table.resolve("/") == ("/", "/", "root", "")


def test_targets_are_shared_and_reported_as_set() -> None:
    table = MountTable()
    for i in range(3000):
        table.set(f"/m/{i}", "vol", f"sub/{i % 3}" if i % 2 else "")
    assert table.get("/m/1") == ("vol", "sub/1") and table.get("/m/2") == ("vol", "")
    for i in range(3000):  # churn through many distinct subpaths: the shared set stays bounded
        table.set(f"/u/{i}", "vol", f"unique/{i}")
        table.remove(f"/u/{i}")
    assert len(table) == 3000 and table.get("/u/5") is None
    assert dict(table.items())["/m/7"] == ("vol", "sub/1")


comp = st.sampled_from(["a", "b", "bc", "s", "é"])
path = st.lists(comp, max_size=4).map(lambda p: "/" + "/".join(p))
ops = st.lists(
    st.tuples(st.booleans(), path, st.sampled_from([("v1", ""), ("v2", "sub"), ("v3", "s/t")])), max_size=40
)


@settings(max_examples=300)
@given(ops, st.lists(path, max_size=8))
def test_open_addressing_after_adds_and_removals(history: list[tuple[bool, str, tuple[str, str]]], queries: list[str]) -> None:
    """Any sequence of sets and removals (re-adding removed mounts, updating targets) leaves
    the table answering like a plain dict of the live mounts, for every API."""
    table = MountTable()
    want: dict[str, tuple[str, str]] = {}
    for add, p, (vol, sub) in history:
        if add:
            table.set(p, vol, sub)
            want[p] = (vol, sub)
        else:
            table.remove(p)
            want.pop(p, None)
    assert len(table) == len(want)
    assert list(table.items()) == sorted(want.items())
    for p in [p for _, p, _ in history] + queries:
        assert table.get(p) == want.get(p) and (p in table) == (p in want)
        got = table.resolve(p)
        best = max((m for m in want if m == "/" or p == m or p.startswith(m + "/")), key=len, default=None)
        assert (got is None) if best is None else (got is not None and got.mount == best)


def test_churn_keeps_the_table_bounded_and_chains_intact() -> None:
    """Removed mounts leave markers that keep other mounts' probe chains whole; a stream of
    adds and removals over a steady set rebuilds the table instead of growing it."""
    table = MountTable()
    steady = [f"/s/{i}" for i in range(3000)]
    for p in steady:
        table.set(p, "vs")
    size = len(table._slots)
    for i in range(200_000):
        table.set(f"/churn/{i}", "vc", f"u/{i}")
        table.remove(f"/churn/{i - 5}")
        if i % 20_000 == 0:
            assert all(table.resolve(p + "/f") is not None for p in steady)
    assert len(table) == 3000 + 5
    assert len(table._slots) <= 4 * size  # bounded by the live count, not by the churn
    assert all(table.get(p) == ("vs", "") for p in steady)
    assert table.get("/churn/199999") == ("vc", "u/199999") and table.get("/churn/10") is None
    table.set("/churn/10", "back")  # a removed path comes back
    assert table.resolve("/churn/10/x") == ("/churn/10/x", "/churn/10", "back", "x")


def test_readers_race_one_writer() -> None:
    """Readers in other threads only ever see a state the writer passed through: a mount
    with its own target, or no mount (then its parent's), while it is added, retargeted,
    removed and the table is rebuilt around it."""
    import sys
    import threading

    table = MountTable()
    table.set("/a", "outer")
    allowed = {("outer", "b/c/f"), ("inner", "f"), ("other", "deep/f")}
    seen: set[tuple[str, str]] = set()
    bad: list[object] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            got = table.resolve("/a/b/c/f")
            pair = (got.volume, got.relative_path) if got else None
            if pair not in allowed:
                bad.append(got)
            else:
                seen.add(pair)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    threads = [threading.Thread(target=reader)]
    try:
        for t in threads:
            t.start()
        for i in range(5_000):
            table.set("/a/b/c", "inner")
            table.set("/a/b/c", "other", "deep")
            table.remove("/a/b/c")
            table.set(f"/filler/{i}", "x")  # grows (rebuilds) the table now and then
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(old)
    assert not bad
    assert seen
