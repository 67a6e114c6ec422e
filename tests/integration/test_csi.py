"""The CSI driver over its Unix socket, called the way kubelet and the external-provisioner
call it, against a real federation (etcd + two controller processes).

FUSE-backed publishing needs ``gns fuse`` and /dev/fuse; those tests skip with the reason
when either is missing.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from federation.api._gen.csi.v1 import csi_pb2 as csi
from federation.local.csi_process import CsiProcess, fuse_available, mount_cap, start_csi
from federation.local.etcd_server import EtcdCluster
from tests.fixtures.federation import Federation, assert_error

Mode = csi.VolumeCapability.AccessMode
PVC = {"csi.storage.k8s.io/pvc/namespace": "apps", "csi.storage.k8s.io/pvc/name": "data"}


@pytest.fixture(scope="module")
def fed(etcd_module: EtcdCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    f = Federation(etcd_module, tmp_path_factory.mktemp("csi-fed"))
    try:
        f.add("onprem-a", wait=False)
        f.add("onprem-b", wait=False)
        for cid in f.controllers:
            f.wait_healthy(cid, timeout=30)
        yield f
    finally:
        f.stop_all()


@pytest.fixture(scope="module")
def driver(fed: Federation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CsiProcess]:
    d = start_csi(fed, tmp_path_factory.mktemp("csi"))
    try:
        yield d
    finally:
        d.stop()


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def _js(fed: Federation, *args: str) -> Any:
    out = fed.gns(*args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def create(driver: CsiProcess, name: str, **params: str) -> csi.CreateVolumeResponse:
    resp: csi.CreateVolumeResponse = driver.controller.CreateVolume(csi.CreateVolumeRequest(
        name=name, volume_capabilities=[mount_cap()], parameters=params), timeout=30)
    return resp


# -- identity ---------------------------------------------------------------------------------


def test_identity(driver: CsiProcess) -> None:
    info = driver.identity.GetPluginInfo(csi.GetPluginInfoRequest())
    assert info.name == "csi.gns.io" and info.vendor_version
    caps = {c.service.type for c in driver.identity.GetPluginCapabilities(
        csi.GetPluginCapabilitiesRequest()).capabilities}
    svc = csi.PluginCapability.Service
    assert caps == {svc.CONTROLLER_SERVICE, svc.VOLUME_ACCESSIBILITY_CONSTRAINTS}
    assert driver.identity.Probe(csi.ProbeRequest()).ready.value is True
    ctl = driver.controller.ControllerGetCapabilities(csi.ControllerGetCapabilitiesRequest())
    assert [c.rpc.type for c in ctl.capabilities] == [
        csi.ControllerServiceCapability.RPC.CREATE_DELETE_VOLUME]
    info = driver.node.NodeGetInfo(csi.NodeGetInfoRequest())
    assert info.node_id == "node-1"
    assert dict(info.accessible_topology.segments) == {"topology.gns.io/cluster": "onprem-a"}


# -- controller ---------------------------------------------------------------------------------


def test_create_twice_same_volume_then_delete_twice(fed: Federation, driver: CsiProcess) -> None:
    name = "pvc-0b7c2d9e-1111-4c1e-9d7a-2f1c3b4a5d6e"
    params = {**PVC, "mirrorTargets": "onprem-b", "mirrorMode": "continuous",
              "failoverAfter": "30"}
    first = create(driver, name, **params)
    second = create(driver, name, **params)
    assert first.volume.volume_id == second.volume.volume_id == "/k8s/apps/data"
    assert first.volume.volume_context == second.volume.volume_context
    assert dict(first.volume.volume_context) == {
        "path": "/k8s/apps/data", "volume": name, "cluster": "onprem-a"}
    vol = _js(fed, "volume", "show", name)
    assert vol["owner"] == "onprem-a"
    mounts = _js(fed, "mount", "list")
    assert {"path": "/k8s/apps/data", "volume": name, "subpath": ""} in mounts
    (policy,) = [p for p in _js(fed, "mirror", "list") if p["name"] == name]
    assert policy["targets"] == ["onprem-b"] and policy["mode"] == "continuous"
    assert policy["failover"]["automatic"] is True and policy["failover"]["after"] == "30s"

    # same name, incompatible parameters: ALREADY_EXISTS, nothing changed
    code, msg = _code(lambda: create(driver, name, **{**params, "mirrorMode": "manual"}))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "mirror policy" in msg
    code, _ = _code(lambda: create(driver, name, **{**params, "cluster": "onprem-b"}))
    assert code == grpc.StatusCode.ALREADY_EXISTS

    for _ in range(2):
        driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id="/k8s/apps/data"))
    assert fed.gns("volume", "show", name).returncode == 3
    assert all(m["path"] != "/k8s/apps/data" for m in _js(fed, "mount", "list"))
    assert all(p["name"] != name for p in _js(fed, "mirror", "list"))


def test_create_defaults_and_names(fed: Federation, driver: CsiProcess) -> None:
    # no PVC metadata: the mount goes under the prefix by request name; an odd request name
    # becomes a DNS-1123 label; the owner defaults to the topology the CO prefers
    req = csi.CreateVolumeRequest(
        name="My_Volume.1", volume_capabilities=[mount_cap()],
        parameters={"mountPrefix": "/scratch"},
        accessibility_requirements=csi.TopologyRequirement(preferred=[
            csi.Topology(segments={"topology.gns.io/cluster": "onprem-b"})]),
    )
    vol = driver.controller.CreateVolume(req).volume
    assert vol.volume_id == "/scratch/My_Volume.1"
    name = vol.volume_context["volume"]
    assert name.startswith("my-volume-1-") and len(name) <= 63
    assert _js(fed, "volume", "show", name)["owner"] == "onprem-b"
    driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vol.volume_id))
    assert fed.gns("volume", "show", name).returncode == 3


def test_unknown_ids_get_the_specs_codes(driver: CsiProcess, tmp_path: Path) -> None:
    # DeleteVolume of an unknown id succeeds (spec: idempotent)
    driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id="/no/such/volume"))
    driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id="reallyfakevolumeid"))
    code, _ = _code(lambda: driver.controller.ValidateVolumeCapabilities(
        csi.ValidateVolumeCapabilitiesRequest(volume_id="/no/such/volume",
                                              volume_capabilities=[mount_cap()])))
    assert code == grpc.StatusCode.NOT_FOUND
    for vid in ("/no/such/volume", "reallyfakevolumeid"):
        code, _ = _code(lambda: driver.node.NodePublishVolume(csi.NodePublishVolumeRequest(
            volume_id=vid, target_path=str(tmp_path / "t"), volume_capability=mount_cap())))
        assert code == grpc.StatusCode.NOT_FOUND
    # NodeUnpublishVolume of something never published: OK (idempotent)
    driver.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(
        volume_id="/no/such/volume", target_path=str(tmp_path / "never")))


BAD_CREATE = [
    ({"name": ""}, "name"),
    ({"caps": []}, "volume_capabilities"),
    ({"caps": [csi.VolumeCapability(block=csi.VolumeCapability.BlockVolume(),
                                    access_mode=Mode(mode=Mode.SINGLE_NODE_WRITER))]}, "block"),
    ({"caps": [csi.VolumeCapability(mount=csi.VolumeCapability.MountVolume())]}, "access_mode"),
    ({"caps": [csi.VolumeCapability(access_mode=Mode(mode=Mode.SINGLE_NODE_WRITER))]},
     "access_type"),
    ({"params": {"mirrorMode": "eventually", "mirrorTargets": "onprem-b"}}, "mirrorMode"),
    ({"params": {"failoverAfter": "soon", "mirrorTargets": "onprem-b"}}, "failoverAfter"),
    ({"params": {"mirrorMode": "sync"}}, "mirrorTargets"),
    ({"params": {"replicas": "3"}}, "replicas"),
    ({"params": {"cluster": "Onprem_A"}}, "cluster"),
    ({"params": {"cluster": "nowhere"}}, "cluster"),
    ({"params": {"mountPrefix": "relative/path"}}, "mountPrefix"),
    ({"params": {"mountPrefix": "/a/../b"}}, "mountPrefix"),
    ({"params": {"mirrorTargets": "ftp://x/y"}}, "ftp"),
    ({"capacity": csi.CapacityRange(required_bytes=10, limit_bytes=5)}, "capacity_range"),
]


@pytest.mark.parametrize(("change", "named"), BAD_CREATE, ids=[n for _, n in BAD_CREATE])
def test_create_volume_invalid_argument(fed: Federation, driver: CsiProcess,
                                        change: dict[str, Any], named: str) -> None:
    req = csi.CreateVolumeRequest(
        name=str(change.get("name", "pvc-bad-input")),
        volume_capabilities=change.get("caps", [mount_cap()]),
        parameters=change.get("params", {}),
        capacity_range=change.get("capacity"),
    )
    code, msg = _code(lambda: driver.controller.CreateVolume(req))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, msg
    assert named in msg
    assert fed.gns("volume", "show", "pvc-bad-input").returncode == 3  # nothing made


def test_every_problem_is_reported_at_once(driver: CsiProcess) -> None:
    code, msg = _code(lambda: driver.controller.CreateVolume(csi.CreateVolumeRequest(
        name="pvc-x", parameters={"mirrorMode": "eventually", "failoverAfter": "soon",
                                  "mirrorTargets": "onprem-b", "bogus": "1"})))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    for part in ("volume_capabilities", "mirrorMode", "failoverAfter", "bogus"):
        assert part in msg


def test_every_bad_parameter_is_named(driver: CsiProcess) -> None:
    code, msg = _code(lambda: create(driver, "pvc-many-bad", bogus="1", cluster="nosuch",
                                     mirrorTargets="ftp://x", mirrorMode="weird"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    for part in ("bogus", "nosuch", "ftp", "weird"):
        assert part in msg, (part, msg)


def test_example_continuous_storage_class_provisions(fed: Federation, driver: CsiProcess) -> None:
    """deploy/examples/storageclass-continuous.yaml: a store target with automatic failover."""
    name = "pvc-example-continuous"
    params = {**PVC, "csi.storage.k8s.io/pvc/name": "cont",
              "mirrorTargets": "onprem-b,s3://dr-bucket/k8s", "mirrorMode": "continuous",
              "failoverAfter": "30s"}
    vid = create(driver, name, **params).volume.volume_id
    try:
        (policy,) = [p for p in _js(fed, "mirror", "list") if p["name"] == name]
        assert policy["failover"]["promoteTo"] == "onprem-b"
        assert create(driver, name, **params).volume.volume_id == vid  # still idempotent
    finally:
        driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid))
    assert fed.gns("volume", "show", name).returncode == 3


def test_repeat_with_a_mirror_policy_the_volume_lacks_changes_nothing(
        fed: Federation, driver: CsiProcess) -> None:
    """CSI: a repeated CreateVolume whose parameters differ from the volume's is
    ALREADY_EXISTS and changes nothing, also when the first made no mirror policy."""
    name = "pvc-no-policy"
    params = {**PVC, "csi.storage.k8s.io/pvc/name": "nopolicy"}
    vid = create(driver, name, **params).volume.volume_id
    try:
        code, msg = _code(lambda: create(driver, name, **params, mirrorTargets="onprem-b"))
        assert code == grpc.StatusCode.ALREADY_EXISTS and "mirror policy" in msg, msg
        assert all(p["name"] != name for p in _js(fed, "mirror", "list"))
        assert create(driver, name, **params).volume.volume_id == vid  # still idempotent
    finally:
        driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid))
    assert fed.gns("volume", "show", name).returncode == 3


def test_concurrent_creates_of_one_name_leave_one_volume_and_one_mount(
        fed: Federation, driver: CsiProcess) -> None:
    """The same request name with different claims (so different mount paths), at once:
    one is made, the others are ALREADY_EXISTS naming where the volume is, and leave no
    mount of their own behind (which would keep DeleteVolume failing for good)."""
    from concurrent.futures import ThreadPoolExecutor

    name = "pvc-race"

    def attempt(i: int) -> tuple[str, str]:
        try:
            resp = create(driver, name, **{**PVC, "csi.storage.k8s.io/pvc/name": f"race{i}"})
        except grpc.RpcError as exc:
            return exc.code().name, exc.details() or ""
        return "OK", resp.volume.volume_id

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(attempt, range(4)))
    made = [detail for code, detail in results if code == "OK"]
    assert len(made) == 1, results
    for code, detail in results:
        if code != "OK":
            assert code == "ALREADY_EXISTS" and made[0] in detail, results
    assert [m["path"] for m in _js(fed, "mount", "list") if m["volume"] == name] == made
    driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=made[0]))
    assert fed.gns("volume", "show", name).returncode == 3
    assert all(m["volume"] != name for m in _js(fed, "mount", "list"))


def _create_sized(driver: CsiProcess, name: str, required: int, limit: int = 0
                  ) -> csi.CreateVolumeResponse:
    resp: csi.CreateVolumeResponse = driver.controller.CreateVolume(csi.CreateVolumeRequest(
        name=name, volume_capabilities=[mount_cap()],
        capacity_range=csi.CapacityRange(required_bytes=required, limit_bytes=limit),
        parameters={**PVC, "csi.storage.k8s.io/pvc/name": "sized"}), timeout=30)
    return resp


def test_same_name_other_capacity_already_exists(fed: Federation, driver: CsiProcess) -> None:
    gib = 1 << 30
    name = "pvc-sized"
    first = _create_sized(driver, name, gib)
    try:
        assert first.volume.capacity_bytes == gib
        assert _create_sized(driver, name, gib).volume == first.volume
        # a range the volume made first fits: OK, with the recorded capacity
        assert _create_sized(driver, name, 0, 2 * gib).volume.capacity_bytes == gib
        assert _create_sized(driver, name, gib // 2, 2 * gib).volume.capacity_bytes == gib
        for required, limit in ((2 * gib, 0), (2 * gib, 2 * gib), (0, gib // 2)):
            code, msg = _code(lambda: _create_sized(driver, name, required, limit))
            assert code == grpc.StatusCode.ALREADY_EXISTS, (required, limit, msg)
            assert "capacity" in msg
    finally:
        driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=first.volume.volume_id))
    assert fed.gns("volume", "show", name).returncode == 3


def test_refused_delete_changes_nothing(fed: Federation, driver: CsiProcess,
                                        tmp_path: Path) -> None:
    name = "pvc-still-used"
    vid = create(driver, name, **{**PVC, "csi.storage.k8s.io/pvc/name": "used"}).volume.volume_id
    doc = tmp_path / "extra.json"
    doc.write_text(json.dumps({
        "apiVersion": "gns.io/v1alpha1", "kind": "MirrorPolicy", "metadata": {"name": "extra-dr"},
        "spec": {"volume": name, "mode": "manual", "targets": [{"cluster": "onprem-b"}]}}))
    assert fed.gns("mirror", "apply", "-f", str(doc)).returncode == 0
    try:
        code, msg = _code(lambda: driver.controller.DeleteVolume(
            csi.DeleteVolumeRequest(volume_id=vid)))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "extra-dr" in msg
        assert {"path": vid, "volume": name, "subpath": ""} in _js(fed, "mount", "list")
        assert _js(fed, "volume", "show", name)["name"] == name
    finally:
        assert fed.gns("mirror", "remove", "extra-dr").returncode == 0
    driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid))
    assert fed.gns("volume", "show", name).returncode == 3
    assert all(m["path"] != vid for m in _js(fed, "mount", "list"))


def test_delete_leaves_volumes_it_did_not_make(fed: Federation, driver: CsiProcess) -> None:
    assert fed.gns("volume", "create", "emptyv", "--cluster", "onprem-a").returncode == 0
    assert fed.gns("mount", "add", "/health/emptyv", "emptyv").returncode == 0
    assert fed.gns("put", "-", "/health/emptyv/keep.txt", input=b"mine\n").returncode == 0
    # what a pod with a static PV of this path could write: the record an earlier driver
    # kept inside its volumes; .gns/ is gns's own now (refused), and a volume is the
    # driver's by its labels only anyway
    forged = json.dumps({"driver": "csi.gns.io", "volume": "emptyv", "path": "/health/emptyv",
                         "requiredBytes": 0, "limitBytes": 0}).encode()
    assert_error(fed.gns("put", "-", "/health/emptyv/.gns/csi.json", input=forged), 2,
                 "'/health/emptyv/.gns/csi.json': '.gns' is a name gns keeps for itself")
    assert fed.gns("put", "-", "/health/emptyv/csi.json", input=forged).returncode == 0
    try:
        driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id="/health/emptyv"))
        assert {"path": "/health/emptyv", "volume": "emptyv", "subpath": ""} in _js(
            fed, "mount", "list")
        assert fed.gns("cat", "/health/emptyv/keep.txt").stdout == "mine\n"
        # nor does CreateVolume adopt it (DeleteVolume would then destroy it)
        code, _ = _code(lambda: create(driver, "emptyv", mountPrefix="/health"))
        assert code == grpc.StatusCode.ALREADY_EXISTS
        assert fed.gns("cat", "/health/emptyv/keep.txt").stdout == "mine\n"
    finally:
        fed.gns("mount", "remove", "/health/emptyv")
        fed.gns("volume", "remove", "emptyv")


def test_an_empty_volume_made_by_hand_is_not_adopted(fed: Federation, driver: CsiProcess) -> None:
    """Only a volume created with the driver's labels, in the transaction that created it,
    is the driver's: an empty one made by hand under the claim's name is someone's all the
    same, and DeleteVolume would otherwise remove it."""
    name = "pvc-hand-made"
    assert fed.gns("volume", "create", name, "--cluster", "onprem-a").returncode == 0
    try:
        code, msg = _code(lambda: create(driver, name, **{**PVC, "csi.storage.k8s.io/pvc/name":
                                                           "hand"}))
        assert code == grpc.StatusCode.ALREADY_EXISTS and "not provisioned by" in msg
        assert all(m["volume"] != name for m in _js(fed, "mount", "list"))
        assert "labels" not in _js(fed, "volume", "show", name)
    finally:
        fed.gns("volume", "remove", name)


@pytest.mark.parametrize(("args", "exit_code", "named"), [
    (["--node-id", "Bad Node", "--cluster", "onprem-a"], 2, "--node-id"),
    (["--node-id", "node-1", "--cluster", "nosuch"], 3, "nosuch"),
    # the last --endpoint wins: a socket directory that cannot be made
    (["--node-id", "node-1", "--endpoint", "unix:///proc/nope/csi.sock"], 2, "--endpoint"),
], ids=["bad-node-id", "unknown-cluster", "endpoint-cannot-be-made"])
def test_csi_refuses_bad_flags_at_start(fed: Federation, tmp_path: Path, args: list[str],
                                        exit_code: int, named: str) -> None:
    sock = f"/tmp/gns-csi-bad-{os.getpid()}.sock"
    out = fed.gns("csi", "--endpoint", f"unix://{sock}", "--state-dir", str(tmp_path / "s"),
                  *args, timeout=30)
    assert out.returncode == exit_code, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gns: error:") and named in lines[0], lines
    assert not os.path.exists(sock)


def test_other_rpcs_invalid_argument(driver: CsiProcess, tmp_path: Path) -> None:
    target = str(tmp_path / "t")
    cases = [
        (lambda: driver.controller.DeleteVolume(csi.DeleteVolumeRequest()), "volume_id"),
        (lambda: driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id="/a/../b")),
         "volume_id"),
        (lambda: driver.controller.ValidateVolumeCapabilities(
            csi.ValidateVolumeCapabilitiesRequest(volume_capabilities=[mount_cap()])), "volume_id"),
        (lambda: driver.controller.ValidateVolumeCapabilities(
            csi.ValidateVolumeCapabilitiesRequest(volume_id="/k8s")), "volume_capabilities"),
        (lambda: driver.node.NodePublishVolume(csi.NodePublishVolumeRequest(
            target_path=target, volume_capability=mount_cap())), "volume_id"),
        (lambda: driver.node.NodePublishVolume(csi.NodePublishVolumeRequest(
            volume_id="/k8s", volume_capability=mount_cap())), "target_path"),
        (lambda: driver.node.NodePublishVolume(csi.NodePublishVolumeRequest(
            volume_id="/k8s", target_path="relative", volume_capability=mount_cap())),
         "target_path"),
        (lambda: driver.node.NodePublishVolume(csi.NodePublishVolumeRequest(
            volume_id="/k8s", target_path=target)), "volume_capability"),
        (lambda: driver.node.NodePublishVolume(csi.NodePublishVolumeRequest(
            volume_id="/k8s", target_path=target, volume_capability=csi.VolumeCapability(
                block=csi.VolumeCapability.BlockVolume(),
                access_mode=Mode(mode=Mode.SINGLE_NODE_WRITER)))), "block"),
        (lambda: driver.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(
            target_path=target)), "volume_id"),
        (lambda: driver.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(
            volume_id="/k8s")), "target_path"),
    ]
    for call, named in cases:
        code, msg = _code(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (named, code, msg)
        assert named in msg, (named, msg)


# -- node (FUSE) --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuse_ok() -> None:
    reason = fuse_available()
    if reason:
        pytest.skip(reason)


def _publish(driver: CsiProcess, vid: str, target: Path, *, readonly: bool = False,
             mode: Mode.Mode = Mode.SINGLE_NODE_WRITER) -> None:
    driver.node.NodePublishVolume(csi.NodePublishVolumeRequest(
        volume_id=vid, target_path=str(target), volume_capability=mount_cap(mode),
        readonly=readonly), timeout=30)


def _unpublish(driver: CsiProcess, vid: str, target: Path) -> None:
    driver.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(
        volume_id=vid, target_path=str(target)), timeout=30)


def test_publish_write_read_elsewhere_unpublish(fed: Federation, driver: CsiProcess,
                                                tmp_path: Path, fuse_ok: None) -> None:
    vid = create(driver, "pvc-publish-1", **PVC | {"csi.storage.k8s.io/pvc/name": "pub"}
                 ).volume.volume_id
    target = tmp_path / "pods" / "uid" / "volumes" / "mount"
    for _ in range(2):  # idempotent
        _publish(driver, vid, target)
    # a fresh claim is empty (initdb, mysqld --initialize refuse anything else): what marks
    # it as the driver's is in its etcd record, not among the pod's files
    assert os.listdir(target) == []
    assert _js(fed, "volume", "show", "pvc-publish-1")["labels"] == {
        "csi.gns.io/path": vid, "csi.gns.io/required-bytes": "0", "csi.gns.io/limit-bytes": "0"}
    # a plain process writes files there, as an app in the pod would
    subprocess.run(["sh", "-c", f"mkdir -p {target}/logs && echo hello > {target}/logs/a.txt"
                    f" && cp /etc/hostname {target}/h"], check=True, timeout=30)
    out = fed.gns("cat", f"{vid}/logs/a.txt", "--via", "onprem-b")
    assert out.returncode == 0 and out.stdout == "hello\n", out.stderr
    for _ in range(2):
        _unpublish(driver, vid, target)
    assert not os.path.ismount(target)
    driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid))


def test_static_publish_of_a_path_owned_elsewhere_and_read_only(
        fed: Federation, driver: CsiProcess, tmp_path: Path, fuse_ok: None) -> None:
    assert fed.gns("volume", "create", "static-b", "--cluster", "onprem-b").returncode == 0
    assert fed.gns("mount", "add", "/shared/b", "static-b").returncode == 0
    assert fed.gns("put", "-", "/shared/b/readme.txt", input=b"from b\n").returncode == 0
    rw, ro, ro_mode = tmp_path / "rw", tmp_path / "ro", tmp_path / "ro-mode"
    _publish(driver, "/shared/b", rw)
    _publish(driver, "/shared/b", ro, readonly=True)
    _publish(driver, "/shared/b", ro_mode, mode=Mode.MULTI_NODE_READER_ONLY)
    try:
        assert (rw / "readme.txt").read_text() == "from b\n"
        (rw / "new.txt").write_text("written on a\n")
        out = fed.gns("cat", "/shared/b/new.txt")
        assert out.stdout == "written on a\n", out.stderr
        for target in (ro, ro_mode):
            assert (target / "readme.txt").read_text() == "from b\n"
            with pytest.raises(OSError) as info:
                (target / "nope.txt").write_text("x")
            assert info.value.errno == errno.EROFS
        # the same target asked for with other options: ALREADY_EXISTS
        code, _ = _code(lambda: _publish(driver, "/shared/b", ro))
        assert code == grpc.StatusCode.ALREADY_EXISTS
    finally:
        for target in (rw, ro, ro_mode):
            _unpublish(driver, "/shared/b", target)


def test_publish_refuses_bad_targets_and_volume_ids_with_the_specs_codes(
        fed: Federation, driver: CsiProcess, tmp_path: Path, fuse_ok: None) -> None:
    assert fed.gns("volume", "create", "codes", "--cluster", "onprem-a").returncode == 0
    assert fed.gns("mount", "add", "/codes/v", "codes").returncode == 0
    assert fed.gns("put", "-", "/codes/v/f.txt", input=b"a file\n").returncode == 0
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("the node's\n")
    cases = [
        ("/codes/v", a_file, grpc.StatusCode.FAILED_PRECONDITION, str(a_file)),
        ("/codes/v", a_file / "sub", grpc.StatusCode.FAILED_PRECONDITION, str(a_file)),
        ("/codes/v", full, grpc.StatusCode.FAILED_PRECONDITION, "not empty"),
        ("/codes/v/no/such/dir", tmp_path / "t1", grpc.StatusCode.NOT_FOUND, "/codes/v/no"),
        ("/codes/v/f.txt", tmp_path / "t2", grpc.StatusCode.INVALID_ARGUMENT, "file"),
    ]
    for vid, target, want, named in cases:
        code, msg = _code(lambda: _publish(driver, vid, target))
        assert code == want and named in msg, (vid, target, code, msg)
        assert not os.path.ismount(target)
    assert (full / "mine.txt").read_text() == "the node's\n"
    assert not (tmp_path / "t1").exists()  # a refused publish leaves no directory behind


@pytest.fixture(scope="module")
def above(fed: Federation) -> str:
    """A volume mounted at /above/x holding f.txt: nothing is mounted at /above itself."""
    assert fed.gns("volume", "create", "above-x", "--cluster", "onprem-a").returncode == 0
    assert fed.gns("mount", "add", "/above/x", "above-x").returncode == 0
    assert fed.gns("put", "-", "/above/x/f.txt", input=b"x\n").returncode == 0
    return "/above/x"


def test_publish_normalizes_volume_ids(driver: CsiProcess, above: str, tmp_path: Path,
                                       fuse_ok: None) -> None:
    """``/above//x/`` and ``/above/x`` are one volume: publishing both at one target is
    idempotent, not ALREADY_EXISTS, and either unpublishes it."""
    target = tmp_path / "same"
    _publish(driver, "/above//x/", target)
    try:
        _publish(driver, above, target)
        assert (target / "f.txt").read_text() == "x\n"
    finally:
        _unpublish(driver, "/above/x/", target)
    assert not os.path.ismount(target)


def test_publish_of_a_directory_above_mounts(driver: CsiProcess, above: str, tmp_path: Path,
                                             fuse_ok: None) -> None:
    """SPEC §9: a volumeHandle is any global path, also one above the mounts (``/k8s``), as
    ``gns fuse --root /k8s`` mounts it; ValidateVolumeCapabilities agrees, and names a
    file or a missing path as publishing would."""
    def validate(vid: str) -> csi.ValidateVolumeCapabilitiesResponse:
        resp: csi.ValidateVolumeCapabilitiesResponse = (
            driver.controller.ValidateVolumeCapabilities(csi.ValidateVolumeCapabilitiesRequest(
                volume_id=vid, volume_capabilities=[mount_cap()]), timeout=30))
        return resp

    assert validate("/above").confirmed.volume_capabilities
    code, msg = _code(lambda: validate("/above/x/f.txt"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "is a file" in msg
    code, _ = _code(lambda: validate("/above/nothing"))
    assert code == grpc.StatusCode.NOT_FOUND
    target = tmp_path / "top"
    _publish(driver, "/above", target)
    try:
        assert (target / "x" / "f.txt").read_text() == "x\n"
    finally:
        _unpublish(driver, "/above", target)
    assert not os.path.ismount(target)


@pytest.fixture(scope="module")
def unpub(fed: Federation) -> str:
    assert fed.gns("volume", "create", "unpub", "--cluster", "onprem-a").returncode == 0
    assert fed.gns("mount", "add", "/unpub/v", "unpub").returncode == 0
    assert fed.gns("put", "-", "/unpub/v/f.txt", input=b"still\n").returncode == 0
    return "/unpub/v"


def test_unpublish_leaves_a_mount_it_did_not_make(driver: CsiProcess, unpub: str,
                                                  tmp_path: Path, fuse_ok: None) -> None:
    """A tmpfs at the target: NodePublishVolume refuses it, and NodeUnpublishVolume answers
    OK (nothing of this driver's is published there) without unmounting it."""
    foreign = tmp_path / "tmpfs"
    foreign.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "none", str(foreign)], check=True, timeout=10)
    try:
        code, _ = _code(lambda: _publish(driver, unpub, foreign))
        assert code == grpc.StatusCode.ALREADY_EXISTS
        for _ in range(2):
            _unpublish(driver, unpub, foreign)
        assert os.path.ismount(foreign)
    finally:
        subprocess.run(["umount", str(foreign)], timeout=10)


def test_unpublish_of_another_volume_leaves_the_target(driver: CsiProcess, unpub: str,
                                                       tmp_path: Path, fuse_ok: None) -> None:
    """NodeUnpublishVolume naming another volume than the target publishes: OK, and the
    publication stays (the pod using it keeps its files)."""
    target = tmp_path / "ours"
    _publish(driver, unpub, target)
    try:
        _unpublish(driver, "/other/volume", target)
        assert (target / "f.txt").read_text() == "still\n"
    finally:
        for _ in range(2):  # idempotent
            _unpublish(driver, unpub, target)
    assert not os.path.ismount(target)


def test_killed_fuse_process_is_reattached(fed: Federation, driver: CsiProcess,
                                           tmp_path: Path, fuse_ok: None) -> None:
    vid = create(driver, "pvc-reattach", **PVC | {"csi.storage.k8s.io/pvc/name": "re"}
                 ).volume.volume_id
    target = tmp_path / "re"
    _publish(driver, vid, target)
    try:
        (target / "f.txt").write_text("still here\n")
        pid = json.loads((driver.state_dir / "publications.json").read_text())[str(target)]["pid"]
        os.kill(pid, signal.SIGKILL)
        started = time.monotonic()
        while True:
            try:
                if (target / "f.txt").read_text() == "still here\n":
                    break
            except OSError:
                pass
            assert time.monotonic() - started < 10, "not readable again within 10 s"
            time.sleep(0.1)
    finally:
        _unpublish(driver, vid, target)
        driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid))


def test_concurrent_publishes_of_one_volume(fed: Federation, driver: CsiProcess,
                                            tmp_path: Path, fuse_ok: None) -> None:
    """Pods starting together: publications of different targets proceed side by side."""
    from concurrent.futures import ThreadPoolExecutor

    vid = create(driver, "pvc-many", **PVC | {"csi.storage.k8s.io/pvc/name": "many"}
                 ).volume.volume_id
    assert fed.gns("put", "-", f"{vid}/shared.txt", input=b"one file\n").returncode == 0
    targets = [tmp_path / f"pod{i}" for i in range(3)]
    try:
        with ThreadPoolExecutor(len(targets)) as pool:
            list(pool.map(lambda t: _publish(driver, vid, t), targets))
        for t in targets:
            assert (t / "shared.txt").read_text() == "one file\n"
    finally:
        for t in targets:
            _unpublish(driver, vid, t)
        driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid))


def test_restarted_driver_adopts_and_reattaches(fed: Federation, driver: CsiProcess,
                                                tmp_path: Path, fuse_ok: None) -> None:
    """kill -9 of the node plugin leaves its FUSE process serving the pod; if that dies too,
    the next driver (same state dir) re-attaches the mount it finds stale."""
    vid = create(driver, "pvc-adopt", **PVC | {"csi.storage.k8s.io/pvc/name": "adopt"}
                 ).volume.volume_id
    first = start_csi(fed, tmp_path / "node")
    target = tmp_path / "adopt"
    second: CsiProcess | None = None
    try:
        _publish(first, vid, target)
        (target / "f.txt").write_text("kept\n")
        pid = json.loads((first.state_dir / "publications.json").read_text())[str(target)]["pid"]
        first.proc.kill()
        first.proc.wait()
        assert (target / "f.txt").read_text() == "kept\n"  # the pod's mount outlives the driver
        os.kill(pid, signal.SIGKILL)
        started = time.monotonic()
        while True:  # stale: "Transport endpoint is not connected"
            try:
                os.stat(target / "f.txt")
            except OSError as exc:
                if exc.errno == errno.ENOTCONN:
                    break
            assert time.monotonic() - started < 10, "mount did not go stale"
            time.sleep(0.05)
        second = start_csi(fed, tmp_path / "node")
        started = time.monotonic()
        while True:
            try:
                if (target / "f.txt").read_text() == "kept\n":
                    break
            except OSError:
                pass
            assert time.monotonic() - started < 10, "not re-attached within 10 s"
            time.sleep(0.1)
        _unpublish(second, vid, target)
        assert not os.path.ismount(target)
    finally:
        for d in (first, second):
            if d is not None:
                d.stop()
        driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid))


def test_driver_through_a_controller_without_etcd(fed: Federation, tmp_path: Path,
                                                  fuse_ok: None) -> None:
    """``gns csi --controller HOST:PORT`` holds no etcd credentials: it provisions, publishes
    (``gns fuse --controller``, which refused to start for want of etcd), and deletes,
    everything through that controller."""
    node = start_csi(fed, tmp_path / "node", controller=fed.controllers["onprem-a"].endpoint)
    try:
        assert node.node.NodeGetInfo(csi.NodeGetInfoRequest()).node_id == "node-1"
        code, _ = _code(lambda: node.node.NodePublishVolume(csi.NodePublishVolumeRequest(
            volume_id="/not/mounted/anywhere", target_path=str(tmp_path / "t"),
            volume_capability=mount_cap())))
        assert code == grpc.StatusCode.NOT_FOUND
        vid = create(node, "pvc-no-etcd", **{**PVC, "csi.storage.k8s.io/pvc/name": "no-etcd"}
                     ).volume.volume_id
        assert _js(fed, "volume", "show", "pvc-no-etcd")["labels"]["csi.gns.io/path"] == vid
        target = tmp_path / "pod" / "mount"
        _publish(node, vid, target)
        try:
            assert os.listdir(target) == []
            (target / "written-in-the-pod.txt").write_text("no etcd here\n")
            assert fed.gns("cat", f"{vid}/written-in-the-pod.txt").stdout == "no etcd here\n"
        finally:
            _unpublish(node, vid, target)
        assert not os.path.ismount(target)
        node.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid), timeout=30)
        assert fed.gns("volume", "show", "pvc-no-etcd").returncode == 3
        assert all(m["path"] != vid for m in _js(fed, "mount", "list"))
    finally:
        node.stop()
