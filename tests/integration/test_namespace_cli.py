"""Volumes, mounts and resolve through the real CLI; bad input changes nothing in etcd."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from namespace.etcd import Etcd, EtcdConfig
from tests.fixtures.federation import Federation, assert_error


def etcd_snapshot(urls: str) -> dict[bytes, bytes]:
    """Every gns key and value, excluding liveness (lease-bound, not user state)."""
    async def read() -> dict[bytes, bytes]:
        e = await Etcd.connect(EtcdConfig.parse(urls))
        try:
            kvs, _ = await e.get_prefix(b"/gns/")
            return {k: v for k, v in kvs if b"/alive/" not in k and b"/volstate/" not in k}
        finally:
            await e.close()

    return asyncio.run(read())


@pytest.fixture
def fed(federation: Federation) -> Federation:
    federation.add("onprem-a", region="dc1")
    federation.add("onprem-b", region="dc2")
    return federation


def js(proc: Any) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_volume_crud(fed: Federation) -> None:
    v = js(fed.gns("volume", "create", "sensors", "--cluster", "onprem-a", "--json"))
    assert v == {"name": "sensors", "owner": "onprem-a", "epoch": 1, "version": 0, "state": "Ready"}
    assert js(fed.gns("volume", "show", "sensors", "--json"))["owner"] == "onprem-a"
    js(fed.gns("volume", "create", "logs", "--cluster", "onprem-b", "--json"))
    names = [x["name"] for x in js(fed.gns("volume", "list", "--json"))]
    assert names == ["logs", "sensors"]
    assert_error(fed.gns("volume", "create", "sensors", "--cluster", "onprem-b"), 4, "already exists")
    assert_error(fed.gns("volume", "show", "nope"), 3, "not found")
    assert_error(fed.gns("volume", "create", "x1", "--cluster", "ghost"), 3, "ghost")
    # labels: set at creation, shown where a volume has some
    v = js(fed.gns("volume", "create", "tagged", "--cluster", "onprem-b", "--label", "team=data",
                   "--label", "example.com/tier=gold", "--label", "note=", "--json"))
    assert v["labels"] == {"team": "data", "example.com/tier": "gold", "note": ""}
    assert js(fed.gns("volume", "show", "tagged", "--json"))["labels"] == v["labels"]
    assert "team=data" in fed.gns("volume", "show", "tagged").stdout


def test_mount_crud_and_resolve(fed: Federation) -> None:
    fed.gns("volume", "create", "sensors", "--cluster", "onprem-a")
    fed.gns("volume", "create", "deep", "--cluster", "onprem-b")
    js(fed.gns("mount", "add", "/health/sensors", "sensors", "--json"))
    js(fed.gns("mount", "add", "/health/sensors/archive/2024", "deep:years/2024", "--json"))
    js(fed.gns("mount", "add", "/health//other/", "sensors:raw", "--json"))
    assert js(fed.gns("mount", "list", "--json")) == [
        {"path": "/health/other", "volume": "sensors", "subpath": "raw"},
        {"path": "/health/sensors", "volume": "sensors", "subpath": ""},
        {"path": "/health/sensors/archive/2024", "volume": "deep", "subpath": "years/2024"},
    ]
    r = js(fed.gns("resolve", "/health/sensors/day.csv"))
    assert r["mount"] == "/health/sensors" and r["volume"] == "sensors"
    assert r["relative_path"] == "day.csv"
    assert r["owner"]["cluster"] == "onprem-a" and r["owner"]["epoch"] == 1
    assert r["owner"]["endpoint"] == fed.controllers["onprem-a"].endpoint
    assert r["replicas"] == []
    # nested: the longer mount wins, with its subpath
    r = js(fed.gns("resolve", "/health/sensors/archive/2024/jan.csv"))
    assert (r["volume"], r["relative_path"], r["owner"]["cluster"]) == ("deep", "years/2024/jan.csv", "onprem-b")
    # component boundary: /health/sensorsX is not under /health/sensors
    assert_error(fed.gns("resolve", "/health/sensorsX/a"), 3, "not under any mount")
    # subpath mount
    r = js(fed.gns("resolve", "/health/other/a/b"))
    assert r["relative_path"] == "raw/a/b"
    # the mount point itself resolves to its volume root (or subpath)
    assert js(fed.gns("resolve", "/health/sensors"))["relative_path"] == ""
    assert_error(fed.gns("resolve", "/elsewhere"), 3)

    assert_error(fed.gns("mount", "add", "/health/sensors", "deep"), 4, "already mounted")
    assert_error(fed.gns("mount", "add", "/x", "ghost"), 3, "ghost")
    assert fed.gns("mount", "remove", "/health/sensors/archive/2024/").returncode == 0
    r = js(fed.gns("resolve", "/health/sensors/archive/2024/jan.csv"))
    assert (r["volume"], r["relative_path"]) == ("sensors", "archive/2024/jan.csv")
    assert_error(fed.gns("mount", "remove", "/health/sensors/archive/2024"), 3, "no mount")


def test_acl_check_of_a_controller_says_it_may_do_everything(fed: Federation) -> None:
    report = js(fed.gns("acl", "check", "/any/path", "--as", "cluster:onprem-b", "--json"))
    assert report["perms"] == ["read", "write", "admin"] and report["admin_by_default"] is True
    out = fed.gns("acl", "check", "/any/path", "--as", "cluster:onprem-b")
    assert "may read,write,admin on /any/path (a controller of this federation)" in out.stdout
    # a cluster the registry does not know holds what it is granted
    assert js(fed.gns("acl", "check", "/any", "--as", "cluster:ghost", "--json"))["perms"] == []


BAD_INPUT = [
    (("volume", "create", "Bad", "--cluster", "onprem-a"), 2, "invalid volume name"),
    (("volume", "create", "-x", "--cluster", "onprem-a"), 2, ""),
    (("volume", "create", "ok1", "--cluster", "Bad!"), 2, "invalid cluster name"),
    (("volume", "create", "ok1"), 2, "--cluster"),
    (("volume", "create", "x" * 64, "--cluster", "onprem-a"), 2, "invalid volume name"),
    (("volume", "create", "ok1", "--cluster", "onprem-a", "--label", "novalue"), 2, "key=value"),
    (("volume", "create", "ok1", "--cluster", "onprem-a", "--label", "=v"), 2, "key=value"),
    (("volume", "create", "ok1", "--cluster", "onprem-a", "--label", "bad key=v"), 2,
     "invalid label key"),
    (("volume", "create", "ok1", "--cluster", "onprem-a", "--label", "Bad.Prefix/k=v"), 2,
     "invalid label key"),
    (("volume", "create", "ok1", "--cluster", "onprem-a", "--label", "-k=v"), 2,
     "invalid label key"),
    (("volume", "create", "ok1", "--cluster", "onprem-a", "--label", "k" * 64 + "=v"), 2,
     "invalid label key"),
    (("volume", "create", "ok1", "--cluster", "onprem-a", "--label", "k=a\tb"), 2, "printable"),
    (("volume", "create", "ok1", "--cluster", "onprem-a", "--label", "k=" + "v" * 1025), 2,
     "1024"),
    (("volume", "create", "ok1", "--cluster", "nosuch", "--label", "k k=v"), 2,
     "invalid label key"),
    (("volume", "show", "UPPER"), 2, "invalid volume name"),
    (("cluster", "show", "no_such"), 2, "invalid cluster name"),
    (("cluster", "show", "nosuch"), 3, "not found"),
    (("cluster", "remove", "nosuch"), 3, "not found"),
    (("mount", "add", "relative/path", "sensors"), 2, "relative"),
    (("mount", "add", "/a/../b", "sensors"), 2, "'..'"),
    (("mount", "add", "/a/./b", "sensors"), 2, "'.'"),
    (("mount", "add", "/a\x01b", "sensors"), 2, "control character"),
    (("mount", "add", "/" + "c" * 256, "sensors"), 2, "255"),
    (("mount", "add", "/ok", "Sensors"), 2, "invalid volume name"),
    (("mount", "add", "/ok", "sensors:../up"), 2, "'..'"),
    (("mount", "add", "/ok", "nosuch"), 3, "not found"),
    (("mount", "add", "/ok"), 2, "Missing argument"),
    (("mount", "add", "/health", "sensors"), 4, "already mounted"),
    (("mount", "remove", "/nothing/here"), 3, "no mount"),
    (("mount", "remove", "nothing"), 2, "relative"),
    (("resolve", "no/slash"), 2, "relative"),
    (("resolve", "/" + "/".join(["y" * 250] * 17)), 2, "4096"),
    (("resolve", "/unmounted"), 3, "not under any mount"),
    (("volume", "frobnicate"), 2, "No such command"),
    (("volume", "list", "--bogus-flag"), 2, "No such option"),
    (("--etcd", "not a url", "volume", "list"), 2, "invalid etcd endpoint"),
]


def test_bad_input_exit_codes_and_nothing_changes(fed: Federation) -> None:
    fed.gns("volume", "create", "sensors", "--cluster", "onprem-a")
    fed.gns("mount", "add", "/health", "sensors")
    before = etcd_snapshot(fed.etcd_urls)
    for args, code, fragment in BAD_INPUT:
        assert_error(fed.gns(*args), code, fragment)
    assert etcd_snapshot(fed.etcd_urls) == before


def test_unreachable_etcd_is_exit_5(fed: Federation) -> None:
    from federation.local.ports import free_port

    proc = fed.gns("--etcd", f"http://127.0.0.1:{free_port()}", "volume", "list", timeout=60)
    assert_error(proc, 5, "etcd unreachable")


def test_mount_change_reaches_another_process_cache(fed: Federation) -> None:
    """A controller (another process) serves a new mount as soon as its watch delivers it."""
    import time

    import grpc

    from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
    from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc

    fed.gns("volume", "create", "late", "--cluster", "onprem-a")
    stub = pb_grpc.FederationStub(grpc.insecure_channel(fed.controllers["onprem-b"].endpoint))
    with pytest.raises(grpc.RpcError) as err:
        stub.Resolve(pb.ResolveRequest(path="/late/x"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    fed.gns("mount", "add", "/late", "late")
    deadline = time.monotonic() + 5
    while True:
        try:
            reply = stub.Resolve(pb.ResolveRequest(path="/late/x"), timeout=5)
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline, "mount never reached the other controller's cache"
            time.sleep(0.02)
    assert reply.volume == "late" and reply.owner.cluster == "onprem-a"
    fed.gns("mount", "remove", "/late")
    deadline = time.monotonic() + 5
    while True:
        try:
            stub.Resolve(pb.ResolveRequest(path="/late/x"), timeout=5)
            assert time.monotonic() < deadline, "unmount never reached the cache"
            time.sleep(0.02)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND
            break
