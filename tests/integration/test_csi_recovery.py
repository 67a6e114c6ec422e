"""The CSI node driver when things go wrong on the node (SPEC §9: "If the FUSE process dies,
the driver re-attaches within 10 s"), with the real driver on a Unix socket, real FUSE
mounts and a one-cluster federation: a PID in the state file that now names an unrelated
process, files written into a target while its mount was down, a FUSE process that stops
answering (SIGSTOP), and an owner that freezes under CreateVolume.
"""
from __future__ import annotations

import errno
import functools
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from federation.api._gen.csi.v1 import csi_pb2 as csi
from federation.local.csi_process import CsiProcess, fuse_available, mount_cap, start_csi
from federation.local.etcd_server import EtcdCluster
from federation.pids import boot_id, is_process, stamp_of
from tests.fixtures.federation import Federation

VOLUME = "/recovery/v"
KEEP = "kept\n"


@pytest.fixture(scope="module")
def fed(etcd_module: EtcdCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    reason = fuse_available()
    if reason:
        pytest.skip(reason)
    f = Federation(etcd_module, tmp_path_factory.mktemp("csi-recovery"))
    try:
        f.add("onprem-a")
        assert f.gns("volume", "create", "recov", "--cluster", "onprem-a").returncode == 0
        assert f.gns("mount", "add", VOLUME, "recov").returncode == 0
        assert f.gns("put", "-", f"{VOLUME}/keep.txt", input=KEEP.encode()).returncode == 0
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


def _publish(driver: CsiProcess, target: Path, vid: str = VOLUME) -> None:
    driver.node.NodePublishVolume(csi.NodePublishVolumeRequest(
        volume_id=vid, target_path=str(target), volume_capability=mount_cap()), timeout=30)


def _unpublish(driver: CsiProcess, target: Path, vid: str = VOLUME) -> None:
    driver.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(
        volume_id=vid, target_path=str(target)), timeout=30)


def _records(driver: CsiProcess) -> dict[str, dict[str, object]]:
    data: dict[str, dict[str, object]] = json.loads(
        (driver.state_dir / "publications.json").read_text())
    return data


def _fuse_pid(driver: CsiProcess, target: Path) -> int:
    return int(str(_records(driver)[str(target)]["pid"]))


def _readable(target: Path) -> bool:
    try:
        return (target / "keep.txt").read_text() == KEEP
    except OSError:
        return False


def _wait(what: str, ok: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``ok()``; fails the test after ``timeout``."""
    started = time.monotonic()
    while not ok():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_recorded_pid_now_naming_another_process_is_never_signalled(
        fed: Federation, tmp_path: Path) -> None:
    """state/publications.json outlives node reboots (a hostPath): the PIDs in it may name
    unrelated processes by the time a driver reads it. Those must survive; the targets are
    re-attached."""
    victim = subprocess.Popen(["sleep", "300"])
    stamp = stamp_of(victim.pid)
    assert stamp is not None
    stamped, legacy = tmp_path / "stamped", tmp_path / "legacy"
    state = tmp_path / "node" / "csi-state"
    state.mkdir(parents=True)
    base = {"volume_id": VOLUME, "path": VOLUME, "readonly": False, "restarts": 0,
            "pid": victim.pid}
    (state / "publications.json").write_text(json.dumps({
        # the PID of a process that started later than the one recorded
        str(stamped): {**base, "target": str(stamped), "boot_id": boot_id(),
                       "start_ticks": stamp.start_ticks - 1},
        # written before records had stamps: believed only if it runs gns fuse there
        str(legacy): {**base, "target": str(legacy)},
    }))
    for target in (stamped, legacy):
        target.mkdir()  # what a reboot leaves: bare directories
    node = start_csi(fed, tmp_path / "node")
    try:
        for target in (stamped, legacy):
            _wait(f"{target} re-attached", functools.partial(_readable, target), 10)
            assert _fuse_pid(node, target) != victim.pid
        assert victim.poll() is None, "the driver signalled a process it did not start"
        for target in (stamped, legacy):
            _unpublish(node, target)
            assert not os.path.ismount(target)
        assert victim.poll() is None
    finally:
        node.stop()
        victim.kill()
        victim.wait()


def test_reattach_mounts_over_files_written_while_the_mount_was_down(
        driver: CsiProcess, tmp_path: Path) -> None:
    """An app that keeps writing while its FUSE process is dead writes into the bare target
    directory; the re-attach must still happen (gns fuse refuses a non-empty mount point
    unless told), and the log must say those files are hidden."""
    target = tmp_path / "gap"
    _publish(driver, target)
    pid = _fuse_pid(driver, target)
    try:
        # Hold the watchdog still, so that the gap is certain to be seen by the app.
        os.kill(driver.proc.pid, signal.SIGSTOP)
        try:
            os.kill(pid, signal.SIGKILL)
            _wait("the mount went stale", lambda: _errno_of(target) == errno.ENOTCONN, 10)
            subprocess.run(["fusermount3", "-uz", str(target)], check=True, timeout=10)
            (target / "app.log").write_text("written during the gap\n")
        finally:
            os.kill(driver.proc.pid, signal.SIGCONT)
        _wait("re-attached over the non-empty target", lambda: _readable(target), 10)
        assert not (target / "app.log").exists()  # hidden under the mount
        # The mount answers a moment before the driver, back from waiting for it, logs it.
        _wait("the log to say the file is hidden", lambda: "hidden" in driver.log.read_text(), 10)
        log = driver.log.read_text()
        assert "hidden" in log and "app.log" in log and str(target) in log
    finally:
        _unpublish(driver, target)
    assert not os.path.ismount(target)
    assert (target / "app.log").read_text() == "written during the gap\n"  # the node's, kept


def _errno_of(target: Path) -> int:
    try:
        os.stat(target / "keep.txt")
    except OSError as exc:
        return exc.errno or 0
    return 0


def test_one_hung_fuse_process_does_not_stop_the_others(driver: CsiProcess,
                                                        tmp_path: Path) -> None:
    """A FUSE process frozen with SIGSTOP: every access to its mount waits. The watchdog
    must still re-attach another publication whose process died, and must take the frozen
    one for dead (kill it, re-attach) instead of waiting with it."""
    frozen, killed = tmp_path / "frozen", tmp_path / "killed"
    _publish(driver, frozen)
    _publish(driver, killed)
    frozen_pid = _fuse_pid(driver, frozen)
    frozen_stamp = stamp_of(frozen_pid)
    assert frozen_stamp is not None
    hung = _StatLoop(frozen)
    try:
        os.kill(frozen_pid, signal.SIGSTOP)
        hung.start()
        # Once one stat has waited this long the kernel's attribute cache has expired: any
        # stat of the mount now waits for the frozen process, the old watchdog's included.
        _wait("a stat of the frozen mount waits", lambda: hung.waiting_for() > 1.5, 10)
        os.kill(_fuse_pid(driver, killed), signal.SIGKILL)
        _wait("the other publication re-attached", lambda: _readable(killed), 10)
        # Its new process, then its files: the kernel's page cache may answer a read of the
        # frozen mount without asking the stopped process (it did once, under load).
        _wait("the frozen publication re-attached",
              lambda: _fuse_pid(driver, frozen) != frozen_pid and _readable(frozen), 15)
        assert not is_process(frozen_pid, frozen_stamp), "the frozen process was left"
        _wait("the waiting stat answered", lambda: hung.waiting_for() == 0, 10)
    finally:
        hung.stop()
        if is_process(frozen_pid, frozen_stamp):
            os.kill(frozen_pid, signal.SIGCONT)
        for target in (frozen, killed):
            _unpublish(driver, target)
    for target in (frozen, killed):
        assert not os.path.ismount(target)


class _StatLoop(threading.Thread):
    """An app that keeps looking at a mount; says how long its current stat has waited."""

    def __init__(self, target: Path) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.since: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.since = time.monotonic()
            try:
                os.stat(self.target / "keep.txt")
            except OSError:
                pass
            self.since = None
            self.done.wait(0.05)

    def waiting_for(self) -> float:
        since = self.since
        return 0.0 if since is None else time.monotonic() - since

    def stop(self) -> None:
        self.done.set()


def test_create_volume_never_waits_for_a_frozen_owner_and_refuses_a_down_one(
        fed: Federation, driver: CsiProcess) -> None:
    """The owner freezes (SIGSTOP). Provisioning is etcd's alone (what marks the volume as
    the driver's is in its etcd record), so CreateVolume does not wait for the frozen owner
    (it once waited for gRPC's keepalive, over a minute); once the owner is Down it is
    UNAVAILABLE at once and leaves no volume or mount behind. Last in the module: it stops
    the only cluster."""
    def request(name: str) -> csi.CreateVolumeRequest:
        return csi.CreateVolumeRequest(name=name, volume_capabilities=[mount_cap()],
                                       parameters={"cluster": "onprem-a"})

    # the driver's channel to the owner is open, as in a node that has been serving
    vid = driver.controller.CreateVolume(request("pvc-warm"), timeout=30).volume.volume_id
    driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=vid), timeout=30)
    fed.kill("onprem-a", signal.SIGSTOP)
    try:
        started = time.monotonic()
        made = driver.controller.CreateVolume(request("pvc-frozen-owner"), timeout=35)
        assert time.monotonic() - started < 10
        fed.wait_state("onprem-a", "Down", 15)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            driver.controller.CreateVolume(request("pvc-frozen-owner-2"), timeout=35)
        code, msg = info.value.code(), info.value.details()
        assert code == grpc.StatusCode.UNAVAILABLE and "Down" in msg, msg
        assert time.monotonic() - started < 5
    finally:
        fed.kill("onprem-a", signal.SIGCONT)
    fed.wait_healthy("onprem-a", 30)
    assert fed.gns("volume", "show", "pvc-frozen-owner-2").returncode == 3
    mounts = json.loads(fed.gns("mount", "list", "--json").stdout)
    assert [m["path"] for m in mounts if "frozen-owner" in m["volume"]] == [made.volume.volume_id]
    driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=made.volume.volume_id),
                                   timeout=30)
    assert fed.gns("volume", "show", "pvc-frozen-owner").returncode == 3
