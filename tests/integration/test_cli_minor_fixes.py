"""Small CLI contract fixes found by an outside-in audit (SPEC §3-§5, §12), the etcd way,
through ``--controller`` and with ``--via`` alike:

* ``stat`` of a volume root (a mount point) is a directory with a directory mode and the
  time its tree last changed (the volume's creation while nothing has), not mtime 0 mode 0;
* ``stat`` of a path ``ls`` shows as a directory only because of the mount table (``/``, a
  prefix of mounts, a mount point whose subpath the volume does not have yet) answers a
  directory; a path that is neither mounted nor above a mount stays exit 3;
* ``mv`` of a directory onto a file (and of a file onto a directory) is a conflict (exit 4,
  mv's "cannot overwrite"), not invalid input, and changes nothing;
* errors name the global path the user typed (``/mf/health/nosuch.csv``), not the
  volume-relative one storage knows (``nosuch.csv``), also through nested and subpath
  mounts.

Volumes: ``mfh`` (onprem-a) at ``/mf/health``, ``mfs`` (onprem-b) nested at
``/mf/health/sensors``, ``mfd`` (onprem-a) at ``/mf/deep/x/y`` under prefixes no mount
covers, ``mfe`` (onprem-b, never written) at ``/mf/empty``, and subpath mounts of ``mfh``:
``/mf/raw`` (``mfh:raw``, which has files) and ``/mf/later`` (``mfh:later``, which does
not). The ``--controller`` and ``--via`` ways enter at onprem-b, so ``mfh`` is forwarded.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from federation.local.etcd_server import EtcdCluster
from tests.fixtures.federation import Federation, assert_error

WAYS = ["etcd", "controller", "via"]
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


def _gns(f: Federation, way: str, tmp: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it; the controller way has no etcd address anywhere."""
    env = f.env()
    if way == "controller":
        env.pop("GNS_ETCD")
        env["GNS_HOME"] = str(tmp / "empty-home")  # no federation.json to find etcd in
        env["GNS_CONTROLLER"] = f.controllers["onprem-b"].endpoint
    if way == "via":
        args = (*args, "--via", "onprem-b")
    proc = subprocess.run([sys.executable, "-m", "federation.cli.main", *args], input=stdin,
                          capture_output=True, env=env, timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def _stat(f: Federation, way: str, tmp: Path, path: str) -> Any:
    proc = _gns(f, way, tmp, "stat", path, "--json")
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
    _ok(_gns(fed, way, tmp_path, "put", "-", f"/mf/health/{way}.txt", stdin=b"x"))
    after = time.time()
    root = _stat(fed, way, tmp_path, "/mf/health")
    assert (root["path"], root["type"], root["size"], root["mode"]) == ("/mf/health", "dir", 0, 0o755)
    assert before - 1 <= root["mtime"] <= after + 1, (before, root, after)
    assert _stat(fed, way, tmp_path, "/mf/health")["mtime"] == root["mtime"]  # stable
    # An rm changes the tree: the root's mtime follows it.
    time.sleep(0.05)
    _ok(_gns(fed, way, tmp_path, "rm", f"/mf/health/{way}.txt"))
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
        assert "dir" in [e["type"] for e in json.loads(_gns(fed, way, tmp_path, "ls", path, "--json").stdout)]
    # A mount point whose subpath the volume does not have yet: ls shows it as a directory
    # in /mf, and it is one (empty) itself.
    assert {"name": "later", "type": "dir", "size": 0} in json.loads(
        _gns(fed, way, tmp_path, "ls", "/mf", "--json").stdout)
    assert _stat(fed, way, tmp_path, "/mf/later")["type"] == "dir"
    later = _gns(fed, way, tmp_path, "ls", "/mf/later", "--json")
    assert (later.returncode, json.loads(later.stdout or "null")) == (0, []), later.stderr
    # The subpath mount that has files stats as that directory of the volume.
    assert _stat(fed, way, tmp_path, "/mf/raw")["type"] == "dir"


@pytest.mark.parametrize("way", WAYS)
def test_neither_mounted_nor_above_a_mount_is_still_not_found(fed: Federation, tmp_path: Path, way: str) -> None:
    assert_error(_gns(fed, way, tmp_path, "stat", "/elsewhere"), 3, "/elsewhere")
    assert_error(_gns(fed, way, tmp_path, "stat", "/mf/dee"), 3)  # whole components only
    assert_error(_gns(fed, way, tmp_path, "stat", "/mf/deep/nope"), 3)
    assert_error(_gns(fed, way, tmp_path, "stat", "/mf/health/nope"), 3)
    assert_error(_gns(fed, way, tmp_path, "stat", "/mf/later/nope"), 3)


def test_python_client_stats_mount_prefixes_both_ways(fed: Federation) -> None:
    from federation.client import Client

    with fed.client() as watched, Client(controller=fed.controllers["onprem-a"].endpoint) as remote:
        for c in (watched, remote):
            assert c.stat("/mf/deep").is_dir and c.stat("/").is_dir
            assert c.stat("/mf/health").mode == 0o755


# -- mv collisions ----------------------------------------------------------------------------
@pytest.mark.parametrize("way", WAYS)
def test_mv_collisions_are_conflicts_and_change_nothing(fed: Federation, tmp_path: Path, way: str) -> None:
    base = f"/mf/health/mv-{way}"
    for rel in ("file", "d/x", "ne/y"):
        _ok(_gns(fed, way, tmp_path, "put", "-", f"{base}/{rel}", stdin=b"1"))
    listing = _gns(fed, way, tmp_path, "ls", base, "--json").stdout
    version = _version(fed, "mfh")
    assert_error(_gns(fed, way, tmp_path, "mv", f"{base}/d", f"{base}/file"), 4,
                 f"cannot overwrite non-directory '{base}/file' with directory '{base}/d'")
    assert_error(_gns(fed, way, tmp_path, "mv", f"{base}/file", f"{base}/d"), 4,
                 f"cannot overwrite directory '{base}/d' with non-directory '{base}/file'")
    assert_error(_gns(fed, way, tmp_path, "mv", f"{base}/d", f"{base}/ne"), 4, "directory not empty")
    assert_error(_gns(fed, way, tmp_path, "mv", f"{base}/nope", f"{base}/file/z"), 3,
                 f"no such file or directory: '{base}/nope'")  # the source is looked at first
    assert _gns(fed, way, tmp_path, "ls", base, "--json").stdout == listing
    assert _gns(fed, way, tmp_path, "cat", f"{base}/d/x").stdout == "1"
    assert _version(fed, "mfh") == version
    # What POSIX allows still works: a file onto a file, a directory onto an empty one.
    _ok(_gns(fed, way, tmp_path, "mv", f"{base}/ne/y", f"{base}/file"))
    _ok(_gns(fed, way, tmp_path, "mv", f"{base}/d", f"{base}/ne"))
    assert json.loads(_gns(fed, way, tmp_path, "ls", base, "--json").stdout) == [
        {"name": "file", "type": "file", "size": 1}, {"name": "ne", "type": "dir", "size": 0}]


# -- errors name global paths ---------------------------------------------------------------
@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize(("path", "relative"), [
    ("/mf/health/nosuch.csv", "nosuch.csv"),
    ("/mf/health/sensors/no/such.csv", "no/such.csv"),  # nested, owned by the other cluster
    ("/mf/raw/nosuch.csv", "raw/nosuch.csv"),  # a subpath mount
])
def test_not_found_names_the_global_path(fed: Federation, tmp_path: Path, way: str, path: str,
                                         relative: str) -> None:
    for args in (("cat", path), ("get", path, str(tmp_path / "out")), ("stat", path),
                 ("rm", path), ("mv", path, path + ".moved"), ("ls", path)):
        proc = _gns(fed, way, tmp_path, *args)
        assert_error(proc, 3, f"no such file or directory: '{path}'")
        assert f"'{relative}'" not in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("way", WAYS)
def test_other_path_errors_name_global_paths(fed: Federation, tmp_path: Path, way: str) -> None:
    _ok(_gns(fed, way, tmp_path, "put", "-", f"/mf/raw/{way}/f", stdin=b"1"))
    assert_error(_gns(fed, way, tmp_path, "rm", f"/mf/raw/{way}"), 2,
                 f"'/mf/raw/{way}' is a directory; use -r")
    assert_error(_gns(fed, way, tmp_path, "mv", f"/mf/raw/{way}/g", f"/mf/raw/{way}/h"), 3,
                 f"'/mf/raw/{way}/g'")
    # A file above the destination, named through the mount that shows it.
    _ok(_gns(fed, way, tmp_path, "put", "-", f"/mf/raw/{way}/g", stdin=b"2"))
    assert_error(_gns(fed, way, tmp_path, "mv", f"/mf/raw/{way}/g", f"/mf/raw/{way}/f/x"), 2,
                 f"cannot move to '/mf/raw/{way}/f/x': '/mf/raw/{way}/f' is a file")
