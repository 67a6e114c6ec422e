"""``gns ls`` shows mount points as directories (SPEC §4, §12), the etcd way and through
``--controller`` alike.

Volumes: ``lma`` (owner onprem-a) at ``/lm/data``, ``lmb`` (onprem-b) nested at
``/lm/data/b``, ``lmc`` (onprem-a) at ``/lm/data/sub2/c`` below a directory ``lma`` does not
have, and ``lmd`` (onprem-b) at ``/lm/deep/x/y`` under prefixes no mount covers. The
``--controller`` way enters at onprem-b, so listings of ``lma`` are forwarded.
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from federation.local.etcd_server import EtcdCluster
from tests.fixtures.federation import Federation, assert_error, gns_way

WAYS = ["etcd", "controller"]


@pytest.fixture(scope="module")
def fed(etcd_module: EtcdCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    f = Federation(etcd_module, tmp_path_factory.mktemp("lsmounts"))
    try:
        f.add("onprem-a", wait=False)
        f.add("onprem-b", wait=False)
        for cid in f.controllers:
            f.wait_healthy(cid, timeout=30)
        for vol, owner, mount in (("lma", "onprem-a", "/lm/data"), ("lmb", "onprem-b", "/lm/data/b"),
                                  ("lmc", "onprem-a", "/lm/data/sub2/c"), ("lmd", "onprem-b", "/lm/deep/x/y")):
            _ok(f.gns("volume", "create", vol, "--cluster", owner))
            _ok(f.gns("mount", "add", mount, vol))
        _ok(f.gns("put", "-", "/lm/data/f.txt", input=b"hello"))
        _ok(f.gns("put", "-", "/lm/data/sub/g.txt", input=b"g"))
        _ok(f.gns("put", "-", "/lm/data/b/in-b.txt", input=b"bb"))
        yield f
    finally:
        f.stop_all()


def _ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr


def _ls(f: Federation, way: str, tmp: Path, path: str) -> Any:
    proc = gns_way(f, way, tmp, "ls", path, "--json")
    assert proc.returncode == 0, (way, path, proc.stderr)
    return json.loads(proc.stdout)


def _dir(name: str) -> dict[str, Any]:
    return {"name": name, "type": "dir", "size": 0}


@pytest.mark.parametrize("way", WAYS)
def test_mount_points_are_directories_of_a_volume_listing(fed: Federation, tmp_path: Path, way: str) -> None:
    assert _ls(fed, way, tmp_path, "/lm/data") == [
        _dir("b"),  # the nested mount, merged in
        {"name": "f.txt", "type": "file", "size": 5},
        _dir("sub"),
        _dir("sub2"),  # lma has no sub2: only the mount at sub2/c makes it a directory
    ]
    assert _ls(fed, way, tmp_path, "/lm/data/b") == [{"name": "in-b.txt", "type": "file", "size": 2}]
    assert _ls(fed, way, tmp_path, "/lm/data/sub2") == [_dir("c")]
    assert _ls(fed, way, tmp_path, "/lm/data/sub") == [{"name": "g.txt", "type": "file", "size": 1}]


@pytest.mark.parametrize("way", WAYS)
def test_prefixes_of_mounts_list_without_a_mount_of_their_own(fed: Federation, tmp_path: Path, way: str) -> None:
    assert _ls(fed, way, tmp_path, "/") == [_dir("lm")]
    assert _ls(fed, way, tmp_path, "/lm") == [_dir("data"), _dir("deep")]
    assert _ls(fed, way, tmp_path, "/lm/deep/x") == [_dir("y")]
    assert _ls(fed, way, tmp_path, "//lm/deep/") == [_dir("x")]  # normalised first
    text = gns_way(fed, way, tmp_path, "ls", "/lm")
    assert text.returncode == 0, text.stderr
    assert [ln.split()[-1] for ln in text.stdout.splitlines()] == ["data/", "deep/"]


@pytest.mark.parametrize("way", WAYS)
def test_neither_mounted_nor_a_prefix_is_still_not_found(fed: Federation, tmp_path: Path, way: str) -> None:
    assert_error(gns_way(fed, way, tmp_path, "ls", "/elsewhere"), 3, "not under any mount")
    assert_error(gns_way(fed, way, tmp_path, "ls", "/lm/dat"), 3)  # whole components only
    assert_error(gns_way(fed, way, tmp_path, "ls", "/lm/data/nope"), 3)
    assert_error(gns_way(fed, way, tmp_path, "ls", "/lm/deep/x/nope"), 3)


def test_python_client_lists_mount_points_both_ways(fed: Federation) -> None:
    from federation.client import Client

    with fed.client() as etcd_way, Client(controller=fed.controllers["onprem-a"].endpoint) as ctl_way:
        for c in (etcd_way, ctl_way):
            assert [e.to_json() for e in c.ls("/")] == [_dir("lm")]
            assert [(e.name, e.type) for e in c.ls("/lm/data")] == [
                ("b", "dir"), ("f.txt", "file"), ("sub", "dir"), ("sub2", "dir")]
    # --via: the entry controller resolves the global path and adds the mount points too.
    with fed.client(via="onprem-b") as via:
        assert [e.name for e in via.ls("/lm/data")] == ["b", "f.txt", "sub", "sub2"]
        assert [e.name for e in via.ls("/lm")] == ["data", "deep"]
