"""SPEC §3: normalisation and validation of global paths, and DNS-1123 names."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from namespace.errors import Conflict, FileNotFound, InvalidInput
from namespace.paths import check_name, normalize, normalize_relative, shown_at

component = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\x7f"),
    min_size=1, max_size=20,
).filter(lambda s: s not in (".", "..") and not any(0x80 <= ord(c) <= 0x9f for c in s))
valid_path = st.lists(component, max_size=8).map(lambda parts: "/" + "/".join(parts))
slashes = st.text(alphabet="/", min_size=1, max_size=3)


@pytest.mark.parametrize("raw, normal", [
    ("/", "/"), ("//", "/"), ("/a", "/a"), ("/a/", "/a"), ("//a//b///", "/a/b"),
    ("/health/sensors/day.csv", "/health/sensors/day.csv"), ("/é/日本", "/é/日本"),
    ("/a.b/..c/...", "/a.b/..c/..."),
])
def test_normal_forms(raw: str, normal: str) -> None:
    assert normalize(raw) == normal


@pytest.mark.parametrize("bad", [
    "", "a", "a/b", "./a", "/a/./b", "/a/../b", "/..", "/.", "/a/..",
    "/a\x00b", "/a\nb", "/a\tb", "/a\x7fb", "/a\x85b",
    "/" + "x" * 256, "/" + "é" * 128, "/" + "/".join(["y" * 200] * 21),
])
def test_invalid_forms_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        normalize(bad)


def test_limits_are_inclusive() -> None:
    assert normalize("/" + "x" * 255)
    path = "/" + "/".join(["z" * 255] * 16)  # 4096 bytes exactly
    assert len(path.encode()) == 4096
    assert normalize(path) == path
    with pytest.raises(InvalidInput):
        normalize(path + "z")


@given(valid_path, st.lists(slashes, max_size=10))
def test_normalize_is_idempotent_and_collapses(path: str, extra: list[str]) -> None:
    parts = path.split("/")
    messy = "".join(p + (extra[i % len(extra)] if extra else "/") for i, p in enumerate(parts))
    try:
        once = normalize(messy if messy.startswith("/") else "/" + messy)
    except InvalidInput:
        return  # over a length limit: refused, which is fine
    assert normalize(once) == once
    assert "//" not in once and (once == "/" or not once.endswith("/"))


@given(valid_path, st.sampled_from([".", ".."]), st.integers(0, 8))
def test_dot_components_always_refused(path: str, dot: str, pos: int) -> None:
    parts = path.split("/")[1:]
    parts.insert(min(pos, len(parts)), dot)
    with pytest.raises(InvalidInput):
        normalize("/" + "/".join(parts))


@given(valid_path, st.characters(min_codepoint=0, max_codepoint=0x1f))
def test_control_characters_always_refused(path: str, ch: str) -> None:
    with pytest.raises(InvalidInput):
        normalize(path + "/a" + ch + "b")


@given(valid_path.filter(lambda p: p != "/"))
def test_relative_always_refused(path: str) -> None:
    with pytest.raises(InvalidInput):
        normalize(path.lstrip("/"))


def test_relative_subpaths() -> None:
    assert normalize_relative("") == ""
    assert normalize_relative("/") == ""
    assert normalize_relative("a//b/") == "a/b"
    with pytest.raises(InvalidInput):
        normalize_relative("a/../b")


@pytest.mark.parametrize("name", ["a", "onprem-a", "aws-1", "x" * 63, "0abc"])
def test_good_names(name: str) -> None:
    assert check_name("cluster", name) == name


@pytest.mark.parametrize("name", ["", "A", "-a", "a-", "a_b", "a.b", "x" * 64, "é", "a b"])
def test_bad_names(name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid cluster name"):
        check_name("cluster", name)


@pytest.mark.parametrize("relative, anchor, path, mount, shown", [
    ("a/b", "a/b", "/m/a/b", "/m", "/m/a/b"),  # the anchor itself
    ("a/b/c", "a/b", "/m/a/b", "/m", "/m/a/b/c"),  # below it
    ("x", "", "/m", "/m", "/m/x"),  # below a volume root
    ("a", "a/b", "/m/a/b", "/m", "/m/a"),  # above it, within the mount
    ("", "a/b", "/m/a/b", "/m", "/m"),  # up to the mount point
    ("", "a", "/a", "/", "/"),
    ("raw", "raw/b", "/o/b", "/o", "/o"),  # a subpath mount: its subpath is the mount point
    ("", "raw/b", "/o/b", "/o", None),  # above the subpath: not shown there
    ("", "raw/b", "/x/raw/b", "/x/raw", None),  # whatever the mount point is called
    ("z", "a/b", "/m/a/b", "/m", None),  # another branch
])
def test_volume_paths_shown_globally(relative: str, anchor: str, path: str, mount: str,
                                     shown: str | None) -> None:
    assert shown_at(relative, anchor, path, mount) == shown


def test_errors_keep_the_paths_they_name_apart() -> None:
    err = Conflict.naming("cannot overwrite {} with {}", "d/f", "")
    assert str(err) == "cannot overwrite 'd/f' with '/'" and err.paths == ("d/f", "")
    err.retryable = True
    again = err.renamed(lambda p: "/g/" + p)
    assert type(again) is Conflict and again.retryable
    assert str(again) == "cannot overwrite '/g/d/f' with '/g/'"
    plain = FileNotFound("no such volume")
    assert plain.renamed(lambda p: "/g") is plain  # names no path: left as it is
    assert isinstance(FileNotFound.naming("no such file: {}", "x"), FileNotFoundError)
