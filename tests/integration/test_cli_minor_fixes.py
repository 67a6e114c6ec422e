"""Small CLI contract fixes found by an outside-in audit (SPEC §3-§5, §12), the etcd way,
through ``--controller`` and with ``--via`` alike:

* ``stat`` of a volume root (a mount point) is a directory with a directory mode and the
  time its tree last changed (the volume's creation while nothing has), not mtime 0 mode 0;
* ``stat`` of a path ``ls`` shows as a directory only because of the mount table (``/``, a
  prefix of mounts, a mount point whose subpath the volume does not have yet) answers a
  directory; a path that is neither mounted nor above a mount stays exit 3;
* ``mv`` of a directory onto a file (and of a file onto a directory) is a conflict (exit 4,
  mv's "cannot overwrite"), not invalid input, and changes nothing;
* ``put`` and ``mv`` to an existing directory write into it under the source's name, as
  ``cp``/``mv``/``hdfs dfs -put``/``-mv`` do (stdin has no name: exit 2; a prefix of mounts
  holds no files: exit 3; a directory never moves into itself: exit 2); the Python API
  keeps exact paths (``rename(2)``);
* errors name the global path the user typed (``/mf/health/nosuch.csv``), not the
  volume-relative one storage knows (``nosuch.csv``), also through nested and subpath
  mounts.

Volumes: ``mfh`` (onprem-a) at ``/mf/health``, ``mfs`` (onprem-b) nested at
``/mf/health/sensors``, ``mfd`` (onprem-a) at ``/mf/deep/x/y`` under prefixes no mount
covers, ``mfe`` (onprem-b, never written) at ``/mf/empty``, and subpath mounts of ``mfh``:
``/mf/raw`` (``mfh:raw``, which has files) and ``/mf/later`` (``mfh:later``, which does
not); some tests add ``/mf/fresh-*`` (``mfh:fresh-*``) mount points of their own. The
``--controller`` and ``--via`` ways enter at onprem-b, so ``mfh`` is forwarded.
"""
from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from federation.client import Client
from federation.local.etcd_server import EtcdCluster
from namespace.errors import Conflict, InvalidInput
from tests.fixtures.federation import CLI_WAYS as WAYS
from tests.fixtures.federation import Federation, assert_error, gns_way

STAT_FIELDS = {"path", "size", "mtime", "sha256", "version"}  # SPEC §4: these names stay


@pytest.fixture(scope="module")
def fed(etcd_module: EtcdCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    f = Federation(etcd_module, tmp_path_factory.mktemp("minor"))
    try:
        f.add("onprem-a", wait=False)
        f.add("onprem-b", wait=False)
        for cid in f.controllers:
            f.wait_healthy(cid, timeout=30)
        for vol, owner in (("mfh", "onprem-a"), ("mfs", "onprem-b"), ("mfd", "onprem-a"),
                           ("mfe", "onprem-b")):
            _ok(f.gns("volume", "create", vol, "--cluster", owner))
        for path, target in (("/mf/health", "mfh"), ("/mf/health/sensors", "mfs"),
                             ("/mf/deep/x/y", "mfd"), ("/mf/empty", "mfe"),
                             ("/mf/raw", "mfh:raw"), ("/mf/later", "mfh:later")):
            _ok(f.gns("mount", "add", path, target))
        _ok(f.gns("put", "-", "/mf/health/raw/r.csv", input=b"r"))
        _ok(f.gns("put", "-", "/mf/health/sensors/s.csv", input=b"s"))
        yield f
    finally:
        f.stop_all()


def _ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr


def _stat(f: Federation, way: str, tmp: Path, path: str) -> Any:
    proc = gns_way(f, way, tmp, "stat", path, "--json")
    assert proc.returncode == 0, (way, path, proc.stderr)
    out = json.loads(proc.stdout)
    assert STAT_FIELDS <= out.keys(), out
    return out


def _version(f: Federation, volume: str) -> int:
    proc = f.gns("volume", "show", volume, "--json")
    _ok(proc)
    return int(json.loads(proc.stdout)["version"])


# -- stat of a volume root ---------------------------------------------------------------
@pytest.mark.parametrize("way", WAYS)
def test_volume_root_is_a_directory_with_its_last_change(fed: Federation, tmp_path: Path, way: str) -> None:
    before = time.time()
    _ok(gns_way(fed, way, tmp_path, "put", "-", f"/mf/health/{way}.txt", stdin=b"x"))
    after = time.time()
    root = _stat(fed, way, tmp_path, "/mf/health")
    assert (root["path"], root["type"], root["size"], root["mode"]) == ("/mf/health", "dir", 0, 0o755)
    assert before - 1 <= root["mtime"] <= after + 1, (before, root, after)
    assert _stat(fed, way, tmp_path, "/mf/health")["mtime"] == root["mtime"]  # stable
    # An rm changes the tree: the root's mtime follows it.
    time.sleep(0.05)
    _ok(gns_way(fed, way, tmp_path, "rm", f"/mf/health/{way}.txt"))
    assert _stat(fed, way, tmp_path, "/mf/health")["mtime"] > root["mtime"]
    # Nested, owned elsewhere: its own volume root.
    nested = _stat(fed, way, tmp_path, "/mf/health/sensors")
    assert (nested["type"], nested["mode"]) == ("dir", 0o755) and nested["mtime"] > 0


@pytest.mark.parametrize("way", WAYS)
def test_root_of_a_volume_never_written_shows_its_creation(fed: Federation, tmp_path: Path, way: str) -> None:
    empty = _stat(fed, way, tmp_path, "/mf/empty")
    assert (empty["type"], empty["mode"], empty["version"]) == ("dir", 0o755, 0)
    assert 0 < empty["mtime"] <= time.time()


# -- stat of directories the mount table makes ----------------------------------------------
@pytest.mark.parametrize("way", WAYS)
def test_prefixes_of_mounts_and_mount_points_stat_as_directories(fed: Federation, tmp_path: Path, way: str) -> None:
    for path in ("/", "/mf", "/mf/deep", "/mf/deep/x", "//mf/deep/x/"):
        got = _stat(fed, way, tmp_path, path)
        want_path = "/" if path == "/" else "/" + path.strip("/")
        assert got == {"path": want_path, "type": "dir", "size": 0, "mtime": 0.0, "sha256": "",
                       "version": 0, "mode": 0o755}, (path, got)
        assert "dir" in [e["type"] for e in json.loads(gns_way(fed, way, tmp_path, "ls", path, "--json").stdout)]
    # A mount point whose subpath the volume does not have yet: ls shows it as a directory
    # in /mf, and it is one (empty) itself.
    assert {"name": "later", "type": "dir", "size": 0} in json.loads(
        gns_way(fed, way, tmp_path, "ls", "/mf", "--json").stdout)
    assert _stat(fed, way, tmp_path, "/mf/later")["type"] == "dir"
    later = gns_way(fed, way, tmp_path, "ls", "/mf/later", "--json")
    assert (later.returncode, json.loads(later.stdout or "null")) == (0, []), later.stderr
    # The subpath mount that has files stats as that directory of the volume.
    assert _stat(fed, way, tmp_path, "/mf/raw")["type"] == "dir"


@pytest.mark.parametrize("way", WAYS)
def test_rm_of_a_directory_of_mount_points_is_refused_as_a_mount_point_is(fed: Federation, tmp_path: Path,
                                                                          way: str) -> None:
    """``stat /mf/deep`` says dir; ``rm -r`` of it said "not under any mount" (exit 3). It
    is the mount table's, as a mount point is: exit 2, naming what is below, nothing done."""
    before = fed.gns("mount", "list", "--json").stdout
    for args in (["rm", "-r", "/mf/deep"], ["rm", "/mf/deep/"], ["mv", "/mf/deep", "/mf/health/deep"]):
        assert_error(gns_way(fed, way, tmp_path, *args), 2, "holds only mount points (x)")
    assert fed.gns("mount", "list", "--json").stdout == before


@pytest.mark.parametrize("way", WAYS)
def test_neither_mounted_nor_above_a_mount_is_still_not_found(fed: Federation, tmp_path: Path, way: str) -> None:
    assert_error(gns_way(fed, way, tmp_path, "stat", "/elsewhere"), 3, "/elsewhere")
    assert_error(gns_way(fed, way, tmp_path, "stat", "/mf/dee"), 3)  # whole components only
    assert_error(gns_way(fed, way, tmp_path, "stat", "/mf/deep/nope"), 3)
    assert_error(gns_way(fed, way, tmp_path, "stat", "/mf/health/nope"), 3)
    assert_error(gns_way(fed, way, tmp_path, "stat", "/mf/later/nope"), 3)


def test_python_client_stats_mount_prefixes_both_ways(fed: Federation) -> None:
    from federation.client import Client

    with fed.client() as watched, Client(controller=fed.controllers["onprem-a"].endpoint) as remote:
        for c in (watched, remote):
            assert c.stat("/mf/deep").is_dir and c.stat("/").is_dir
            assert c.stat("/mf/health").mode == 0o755


# -- mv collisions ----------------------------------------------------------------------------
@pytest.mark.parametrize("way", WAYS)
def test_mv_collisions_are_conflicts_and_change_nothing(fed: Federation, tmp_path: Path, way: str) -> None:
    """Onto a file, or into a directory (``gns mv`` moves into one, as mv(1) does) where
    the name is taken by the other kind or by a directory that is not empty."""
    base = f"/mf/health/mv-{way}"
    for rel in ("file", "d/x", "ne/y", "in/file/z", "in/d/w", "fin/d"):
        _ok(gns_way(fed, way, tmp_path, "put", "-", f"{base}/{rel}", stdin=b"1"))
    listings = {p: gns_way(fed, way, tmp_path, "ls", p, "--json").stdout
                for p in (base, f"{base}/in", f"{base}/in/d", f"{base}/fin")}
    version = _version(fed, "mfh")
    assert_error(gns_way(fed, way, tmp_path, "mv", f"{base}/d", f"{base}/file"), 4,
                 f"cannot overwrite non-directory '{base}/file' with directory '{base}/d'")
    assert_error(gns_way(fed, way, tmp_path, "mv", f"{base}/file", f"{base}/in"), 4,
                 f"cannot overwrite directory '{base}/in/file' with non-directory '{base}/file'")
    assert_error(gns_way(fed, way, tmp_path, "mv", f"{base}/d", f"{base}/in/"), 4,
                 f"cannot move '{base}/d' to '{base}/in/d': directory not empty")
    assert_error(gns_way(fed, way, tmp_path, "mv", f"{base}/d", f"{base}/fin"), 4,
                 f"cannot overwrite non-directory '{base}/fin/d' with directory '{base}/d'")
    assert_error(gns_way(fed, way, tmp_path, "mv", f"{base}/nope", f"{base}/file/z"), 3,
                 f"no such file or directory: '{base}/nope'")  # the source is looked at first
    assert_error(gns_way(fed, way, tmp_path, "mv", f"{base}/nope", f"{base}/in"), 3,
                 f"no such file or directory: '{base}/nope'")
    assert {p: gns_way(fed, way, tmp_path, "ls", p, "--json").stdout for p in listings} == listings
    assert gns_way(fed, way, tmp_path, "cat", f"{base}/d/x").stdout == "1"
    assert _version(fed, "mfh") == version
    # What POSIX allows still works: a file replaces a file (onto it, or of its name in a
    # directory), a directory replaces an empty one of its name.
    _ok(gns_way(fed, way, tmp_path, "mv", f"{base}/ne/y", f"{base}/file"))  # leaves ne empty
    _ok(gns_way(fed, way, tmp_path, "put", "-", f"{base}/d2/file", stdin=b"22"))
    _ok(gns_way(fed, way, tmp_path, "mv", f"{base}/d2/file", base))  # leaves d2 empty
    assert gns_way(fed, way, tmp_path, "cat", f"{base}/file").stdout == "22"
    _ok(gns_way(fed, way, tmp_path, "mv", f"{base}/ne", f"{base}/d2"))  # d2/ne: empty
    _ok(gns_way(fed, way, tmp_path, "put", "-", f"{base}/ne/q", stdin=b"q"))
    _ok(gns_way(fed, way, tmp_path, "mv", f"{base}/ne", f"{base}/d2"))
    assert json.loads(gns_way(fed, way, tmp_path, "ls", f"{base}/d2/ne", "--json").stdout) == [
        {"name": "q", "type": "file", "size": 1}]
    # The Python API keeps rename(2)'s exact destination: a directory replaces an empty
    # one there, a file onto a directory is a conflict, and put does not write into one.
    with _api_client(fed, way) as c:
        c.mkdir(f"{base}/empty")
        c.mv(f"{base}/d", f"{base}/empty")
        assert c.cat(f"{base}/empty/x") == b"1"
        with pytest.raises(Conflict):
            c.mv(f"{base}/file", f"{base}/d2")
        with pytest.raises(InvalidInput):
            c.put(b"p", f"{base}/d2")
    assert json.loads(gns_way(fed, way, tmp_path, "ls", base, "--json").stdout) == [
        {"name": "d2", "type": "dir", "size": 0}, {"name": "empty", "type": "dir", "size": 0},
        {"name": "file", "type": "file", "size": 2}, {"name": "fin", "type": "dir", "size": 0},
        {"name": "in", "type": "dir", "size": 0}]


def _api_client(fed: Federation, way: str) -> Client:
    """The Python client the CLI runs as in ``way``."""
    if way == "controller":
        return Client(controller=fed.controllers["onprem-b"].endpoint)
    return fed.client(via="onprem-b" if way == "via" else None, watch=False)


# -- put and mv into an existing directory (cp, mv, hdfs dfs -put/-mv) -------------------------
def _local(tmp: Path, name: str, data: bytes) -> str:
    path = tmp / name
    path.write_bytes(data)
    return str(path)


def _mount(fed: Federation, tmp: Path, path: str, target: str) -> None:
    """Add a mount and wait until the controller the other ways enter at sees it."""
    _ok(fed.gns("mount", "add", path, target))
    deadline = time.monotonic() + 15
    while gns_way(fed, "controller", tmp, "resolve", path).returncode != 0:
        assert time.monotonic() < deadline, f"onprem-b never saw mount {path}"
        time.sleep(0.1)


def _tree(f: Federation, way: str, tmp: Path, *dirs: str) -> dict[str, Any]:
    return {d: json.loads(gns_way(f, way, tmp, "ls", d, "--json").stdout or "null") for d in dirs}


@pytest.mark.parametrize("way", WAYS)
def test_put_into_a_directory_writes_the_local_name(fed: Federation, tmp_path: Path, way: str) -> None:
    base = f"/mf/health/into-{way}"
    _ok(gns_way(fed, way, tmp_path, "put", "-", f"{base}/dir/old.csv", stdin=b"old"))
    fresh = f"/mf/fresh-put-{way}"  # a mount point whose subpath the volume does not have yet
    _mount(fed, tmp_path, fresh, f"mfh:fresh-put-{way}")
    cases = [
        ("root", "/mf/health", "/mf/health"),  # a volume root (mount point)
        ("nested", "/mf/health/sensors", "/mf/health/sensors"),  # one owned by onprem-b
        ("inner", f"{base}/dir", f"{base}/dir"),  # a directory inside a volume
        ("slash", f"{base}/dir/", f"{base}/dir"),  # the trailing '/' is dropped (SPEC §3)
        ("slashes", f"/{base}//dir//", f"{base}/dir"),
        ("fresh", fresh, fresh),
    ]
    for tag, dest, directory in cases:
        name = f"{tag}-{way}.csv"
        proc = gns_way(fed, way, tmp_path, "put", _local(tmp_path, name, tag.encode()), dest, "--json")
        _ok(proc)
        written = f"{directory}/{name}"
        assert json.loads(proc.stdout)["path"] == written, (dest, proc.stdout)
        assert gns_way(fed, way, tmp_path, "cat", written).stdout == tag
        assert _stat(fed, way, tmp_path, directory)["type"] == "dir"
    # A path that is not there stays the file to write; a file there is replaced.
    for dest in (f"{base}/dir/new.csv", f"{base}/dir/old.csv"):
        proc = gns_way(fed, way, tmp_path, "put", _local(tmp_path, "other.csv", b"new"), dest, "--json")
        _ok(proc)
        assert json.loads(proc.stdout)["path"] == dest
        assert gns_way(fed, way, tmp_path, "cat", dest).stdout == "new"
    assert [e["name"] for e in json.loads(gns_way(fed, way, tmp_path, "ls", f"{base}/dir", "--json").stdout)] == [
        f"inner-{way}.csv", "new.csv", "old.csv", f"slash-{way}.csv", f"slashes-{way}.csv"]


@pytest.mark.parametrize("way", WAYS)
def test_put_into_a_prefix_of_mounts_is_refused(fed: Federation, tmp_path: Path, way: str) -> None:
    """/mf/deep is a directory (ls, stat), but only of mount points: no volume holds files there."""
    before = _tree(fed, way, tmp_path, "/mf/deep", "/mf/deep/x")
    src = _local(tmp_path, "day.csv", b"d")
    for dest in ("/mf/deep", "/mf/deep/x/"):
        shown = dest.rstrip("/")
        assert_error(gns_way(fed, way, tmp_path, "put", src, dest), 3,
                     f"cannot write {shown}/day.csv: {shown} is not under any mount")
    assert_error(gns_way(fed, way, tmp_path, "mv", "/mf/health/raw/r.csv", "/mf/deep"), 3,
                 "cannot write /mf/deep/r.csv: /mf/deep is not under any mount")
    assert _tree(fed, way, tmp_path, "/mf/deep", "/mf/deep/x") == before
    assert gns_way(fed, way, tmp_path, "cat", "/mf/raw/r.csv").stdout == "r"


@pytest.mark.parametrize("way", WAYS)
def test_put_from_stdin_into_a_directory_is_refused(fed: Federation, tmp_path: Path, way: str) -> None:
    base = f"/mf/health/stdin-{way}"
    _ok(gns_way(fed, way, tmp_path, "put", "-", f"{base}/dir/f", stdin=b"f"))
    fresh = f"/mf/fresh-stdin-{way}"
    _mount(fed, tmp_path, fresh, f"mfh:fresh-stdin-{way}")
    dirs = ("/mf/health", base, f"{base}/dir", fresh)
    before, version = _tree(fed, way, tmp_path, *dirs), _version(fed, "mfh")
    for dest in ("/mf/health", f"{base}/dir", f"{base}/dir/", fresh):
        shown = dest.rstrip("/")
        assert_error(gns_way(fed, way, tmp_path, "put", "-", dest, stdin=b"nameless"), 2,
                     f"{shown} is a directory and the data has no file name (stdin): "
                     f"give the file's path, {shown}/NAME")
    assert _tree(fed, way, tmp_path, *dirs) == before
    assert _stat(fed, way, tmp_path, fresh)["type"] == "dir"  # not a file at the mount point
    assert _version(fed, "mfh") == version
    # Stdin to a file path is as before.
    _ok(gns_way(fed, way, tmp_path, "put", "-", f"{base}/dir/g", stdin=b"g"))
    assert gns_way(fed, way, tmp_path, "cat", f"{base}/dir/g").stdout == "g"


@pytest.mark.parametrize("way", WAYS)
def test_mv_into_a_directory_keeps_the_name(fed: Federation, tmp_path: Path, way: str) -> None:
    base = f"/mf/health/mvinto-{way}"
    a = f"a-{way}.csv"
    for rel in (a, "dir/keep", "d1/sub/x", "d2/y"):
        _ok(gns_way(fed, way, tmp_path, "put", "-", f"{base}/{rel}", stdin=rel.encode()))
    version = _version(fed, "mfh")

    def mv(src: str, dst: str) -> Any:
        proc = gns_way(fed, way, tmp_path, "mv", src, dst, "--json")
        _ok(proc)
        return json.loads(proc.stdout)

    # A file into a directory: its name kept, one version, --json names where it went.
    assert mv(f"{base}/{a}", f"{base}/dir") == {
        "src": f"{base}/{a}", "dst": f"{base}/dir/{a}", "version": version + 1}
    assert gns_way(fed, way, tmp_path, "cat", f"{base}/dir/{a}").stdout == a
    # A directory into a directory, with a trailing slash, everything below it along.
    assert mv(f"{base}/d1", f"{base}/d2/") == {
        "src": f"{base}/d1", "dst": f"{base}/d2/d1", "version": version + 2}
    assert gns_way(fed, way, tmp_path, "cat", f"{base}/d2/d1/sub/x").stdout == "d1/sub/x"
    assert [e["name"] for e in json.loads(gns_way(fed, way, tmp_path, "ls", base, "--json").stdout)] == ["d2", "dir"]
    # Into a volume root: the subpath mount /mf/raw is mfh's raw/.
    assert mv(f"{base}/dir/{a}", "/mf/raw")["dst"] == f"/mf/raw/{a}"
    assert gns_way(fed, way, tmp_path, "cat", f"/mf/health/raw/{a}").stdout == a
    assert mv(f"/mf/raw/{a}", f"{base}/dir")["dst"] == f"{base}/dir/{a}"
    # Across volumes, into a directory too: exit 4, nothing moved.
    assert_error(gns_way(fed, way, tmp_path, "mv", f"{base}/dir/{a}", "/mf/health/sensors"), 4,
                 f"cannot move {base}/dir/{a} to /mf/health/sensors/{a}: they are on different volumes")
    assert gns_way(fed, way, tmp_path, "cat", f"{base}/dir/{a}").stdout == a
    assert _version(fed, "mfh") == version + 4


@pytest.mark.parametrize("way", WAYS)
def test_mv_directory_into_itself_is_refused(fed: Federation, tmp_path: Path, way: str) -> None:
    base = f"/mf/health/self-{way}"
    for rel in ("d/x", "d/sub/y"):
        _ok(gns_way(fed, way, tmp_path, "put", "-", f"{base}/{rel}", stdin=b"1"))
    dirs = (base, f"{base}/d", f"{base}/d/sub")
    before, version = _tree(fed, way, tmp_path, *dirs), _version(fed, "mfh")
    for dst, into in ((f"{base}/d", f"{base}/d/d"), (f"{base}/d/", f"{base}/d/d"),
                      (f"{base}/d/sub", f"{base}/d/sub/d")):
        assert_error(gns_way(fed, way, tmp_path, "mv", f"{base}/d", dst), 2,
                     f"cannot move '{base}/d' below itself ('{into}')")
    assert _tree(fed, way, tmp_path, *dirs) == before
    assert _version(fed, "mfh") == version


# -- errors name global paths ---------------------------------------------------------------
@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize(("path", "relative"), [
    ("/mf/health/nosuch.csv", "nosuch.csv"),
    ("/mf/health/sensors/no/such.csv", "no/such.csv"),  # nested, owned by the other cluster
    ("/mf/raw/nosuch.csv", "raw/nosuch.csv"),  # a subpath mount
])
def test_not_found_names_the_global_path(fed: Federation, tmp_path: Path, way: str, path: str,
                                         relative: str) -> None:
    commands = (("cat", path), ("get", path, str(tmp_path / "out")), ("stat", path),
                ("rm", path), ("mv", path, path + ".moved"), ("ls", path))
    # Independent and all refused: run side by side (each is a CLI process start-up).
    with ThreadPoolExecutor(len(commands)) as pool:
        procs = list(pool.map(lambda args: gns_way(fed, way, tmp_path, *args), commands))
    for args, proc in zip(commands, procs, strict=True):
        assert_error(proc, 3, f"no such file or directory: '{path}'")
        assert f"'{relative}'" not in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("way", WAYS)
def test_other_path_errors_name_global_paths(fed: Federation, tmp_path: Path, way: str) -> None:
    _ok(gns_way(fed, way, tmp_path, "put", "-", f"/mf/raw/{way}/f", stdin=b"1"))
    assert_error(gns_way(fed, way, tmp_path, "rm", f"/mf/raw/{way}"), 2,
                 f"'/mf/raw/{way}' is a directory; use -r")
    assert_error(gns_way(fed, way, tmp_path, "mv", f"/mf/raw/{way}/g", f"/mf/raw/{way}/h"), 3,
                 f"'/mf/raw/{way}/g'")
    # A file above the destination, named through the mount that shows it.
    _ok(gns_way(fed, way, tmp_path, "put", "-", f"/mf/raw/{way}/g", stdin=b"2"))
    assert_error(gns_way(fed, way, tmp_path, "mv", f"/mf/raw/{way}/g", f"/mf/raw/{way}/f/x"), 2,
                 f"cannot move to '/mf/raw/{way}/f/x': '/mf/raw/{way}/f' is a file")
    # A put below a file, small (one message) and large (a stream), says so the same way.
    for size in (1, 5 << 20):
        assert_error(gns_way(fed, way, tmp_path, "put", "-", f"/mf/raw/{way}/f/y/z",
                             stdin=b"3" * size), 2,
                     f"cannot write '/mf/raw/{way}/f/y/z': '/mf/raw/{way}/f' is a file")


@pytest.mark.parametrize("way", WAYS)
def test_reading_a_directory_of_the_mount_table_is_invalid_input(fed: Federation, tmp_path: Path, way: str) -> None:
    """``/`` and the prefixes of mounts are directories (ls and stat say so): cat and get
    refuse them as they refuse a directory inside a volume (exit 2), not as missing (exit 3,
    which ``gns cat /`` said before). A path under no mount is still not found."""
    out = tmp_path / "out"
    for path in ("/", "/mf", "/mf/deep", "/mf/deep/x"):
        assert_error(gns_way(fed, way, tmp_path, "cat", path), 2, f"{path} is a directory")
        assert_error(gns_way(fed, way, tmp_path, "get", path, str(out)), 2, f"{path} is a directory")
    assert not out.exists()
    for missing in ("/nowhere/x", "/mf/deep/z"):
        assert_error(gns_way(fed, way, tmp_path, "cat", missing), 3, "is not under any mount")
