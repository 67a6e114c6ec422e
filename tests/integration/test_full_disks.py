"""A full disk, at an owner or at a replica: refused writes say so, and deletes still free it.

An owner whose disk is full refuses a write as ``OutOfSpace`` and keeps nothing of it.

What a user meets: ``gns put`` (direct, or entering through another cluster) ends with one
line naming the cluster and the full disk, exit 1, not an "internal error"; concurrent small
puts (one group commit, the catalog's SQLite filling up) fail the same way, each on its
own; ``cp`` onto a FUSE mount fails with ``ENOSPC``. Nothing partial is visible afterwards,
no temporary file is left, and once the disk has room again writes succeed. A replica whose
disk filled up to the last block still follows the deletes its owner makes, so a mirror
that stopped for lack of space catches up once the owner frees it.

Real parts: etcd, two controller processes; the owner's data directory is a small tmpfs
(root mounts it, as the FUSE tests need root too).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from federation.storage import VolumeStorage
from federation.storage.space import HEADROOM_BYTES
from namespace.errors import NotFound, OutOfSpace
from tests.fixtures.federation import Controller, Federation, metric
from tests.support import cli_status, wait_for
from tests.support.fuse_mount import Mount
from tests.support.mirrors import apply_policy, make_volume, policy_doc
from tests.support.small_disk import NEEDS_SMALL_DISKS, on_small_disk

pytestmark = [pytest.mark.slow, *NEEDS_SMALL_DISKS]

DISK_MIB = 24
FULL = "cluster onprem-a has no space left on its disk"


@pytest.fixture()
def owner(federation: Federation) -> Iterator[tuple[Federation, Controller]]:
    """onprem-a owns volume ``full`` (at /full) on a small tmpfs; onprem-b is a second entry."""
    fed = federation
    with on_small_disk(fed, "onprem-a", DISK_MIB) as ctl:
        fed.add("onprem-b")
        assert fed.gns("volume", "create", "full", "--cluster", "onprem-a").returncode == 0
        assert fed.gns("mount", "add", "/full", "full").returncode == 0
        yield fed, ctl


def leftovers(ctl: Controller) -> list[str]:
    """Temporary files of the volume's puts (swept at open, and never left by a failed put)."""
    tmp = ctl.data_dir / "volumes" / "full" / "tmp"
    return sorted(os.listdir(tmp)) if tmp.exists() else []


def test_a_put_larger_than_the_disk_says_so_and_keeps_nothing(owner: tuple[Federation, Controller],
                                                              tmp_path: Path) -> None:
    fed, ctl = owner
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom((DISK_MIB + 16) << 20))
    for way in ([], ["--controller", fed.controllers["onprem-b"].endpoint]):
        r = fed.gns(*way, "put", str(big), "/full/big.bin")
        assert r.returncode == 1, r
        assert r.stderr.startswith(f"gns: error: {FULL} (No space left on device)"), r.stderr
        assert r.stderr.count("\n") == 1 and "internal error" not in r.stderr
        assert fed.gns("stat", "/full/big.bin").returncode == 3
        assert leftovers(ctl) == []
    # What an operator watches (the GnsDataDirAlmostFull alert): the small disk, read live.
    assert metric(fed, "onprem-a", "gns_data_dir_size_bytes") == DISK_MIB << 20
    assert 0 < metric(fed, "onprem-a", "gns_data_dir_free_bytes") < (DISK_MIB - 4) << 20
    # The failed put freed what it had taken: a file that fits goes in.
    small = os.urandom(1 << 20)
    with fed.client() as c:
        c.put(small, "/full/small.bin")
        assert c.cat("/full/small.bin") == small
        c.rm("/full/small.bin")


def test_concurrent_small_puts_fail_each_as_out_of_space(owner: tuple[Federation, Controller]) -> None:
    """Small files go into the catalog (SQLite) in shared group commits: filling the disk
    that way fails each put on its own, as OutOfSpace, and every put that succeeded reads
    back whole. Then the full disk is freed the way a user would, with ``rm``: a delete is
    a catalog write too, and commits on the space the volume keeps back for it."""
    fed, ctl = owner
    # Half go inline into the catalog, half into blob files (whose deletion gives the disk
    # its space back; SQLite keeps its freed pages for later small files).
    sizes = (48 << 10, 200 << 10)
    payloads = {f"/full/many/f{i:04}.bin": os.urandom(sizes[i % 2]) for i in range(2 * DISK_MIB * 1024 // 124)}

    with fed.client() as c:
        def put(path: str) -> BaseException | None:
            try:
                c.put(payloads[path], path)
            except (OutOfSpace, NotFound) as exc:
                return exc
            return None

        with ThreadPoolExecutor(8) as pool:
            results = dict(zip(payloads, pool.map(put, payloads), strict=True))
        failed = {p: e for p, e in results.items() if e is not None}
        assert failed, "the disk never filled"
        assert all(isinstance(e, OutOfSpace) and FULL in str(e) for e in failed.values()), \
            {type(e).__name__: str(e) for e in failed.values()}
        stored = {e.name for e in c.ls("/full/many")}
        assert stored == {p.rsplit("/", 1)[1] for p, e in results.items() if e is None}
        for path in sorted(stored)[:: max(1, len(stored) // 20)]:
            assert c.cat(f"/full/many/{path}") == payloads[f"/full/many/{path}"]
        victim = sorted(stored)[0]
    r = fed.gns("rm", f"/full/many/{victim}")  # the first delete on the full disk
    assert r.returncode == 0, r.stderr
    assert fed.gns("rm", "-r", "/full/many").returncode == 0
    with fed.client() as c:
        assert [e.name for e in c.ls("/full")] == []
        room = os.urandom(8 << 20)  # the disk has room again, and the headroom is back
        c.put(room, "/full/room.bin")
        assert c.cat("/full/room.bin") == room
        c.rm("/full/room.bin")
    assert (ctl.data_dir / "volumes" / ".headroom").stat().st_size == HEADROOM_BYTES  # one, shared
    assert not (ctl.data_dir / "volumes" / "full" / "headroom").exists()
    assert leftovers(ctl) == []


@pytest.mark.skipif(shutil.which("fusermount3") is None, reason="fusermount3 is missing (fuse3)")
def test_cp_onto_a_fuse_mount_gets_enospc(owner: tuple[Federation, Controller], tmp_path: Path) -> None:
    fed, ctl = owner
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom((DISK_MIB + 16) << 20))
    mount = Mount(fed, tmp_path / "mnt", tmp_path / "cache")
    try:
        r = subprocess.run(["cp", str(big), str(tmp_path / "mnt" / "full" / "big.bin")],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and "No space left on device" in r.stderr, r
        assert fed.gns("stat", "/full/big.bin").returncode == 3
    finally:
        mount.stop()
    assert leftovers(ctl) == []


def fill(directory: Path) -> Path:
    """Take every block left on ``directory``'s file system (what another program on a
    shared disk does), so the next write there fails."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        step = 64 << 10
        while step:  # down to the last partial block
            try:
                os.write(fd, b"\0" * step)
            except OSError:
                step //= 2
    finally:
        os.close(fd)
    return filler


def test_a_replica_full_to_the_last_block_follows_its_owners_deletes(federation: Federation,
                                                                      tmp_path: Path) -> None:
    fed = federation
    fed.add("onprem-a")
    with on_small_disk(fed, "onprem-b", DISK_MIB) as replica:
        make_volume(fed, "rep", "onprem-a")
        apply_policy(fed, tmp_path, policy_doc("rep-dr", "rep", "continuous", ["onprem-b"]))
        with fed.client() as c:
            for i in range(8):
                c.put(os.urandom(1 << 20), f"/rep/d/f{i}.bin")
        wait_for(lambda: cli_status(fed, "rep-dr")["onprem-b"]["lag_versions"] == 0
                 and cli_status(fed, "rep-dr")["onprem-b"]["state"] == "Synced", 60, "the replica to sync")
        filler = fill(replica.data_dir)
        with fed.client() as c:
            c.put(os.urandom(1 << 20), "/rep/more.bin")  # the owner has room; the replica none
        t = wait_for(lambda: (t := cli_status(fed, "rep-dr")["onprem-b"])["state"] == "Error" and t, 60,
                     "the mirror to fail")
        assert "cluster onprem-b has no space left on its disk" in str(t["last_error"]), t
        # The owner frees space; the replica, with not one block left, must still follow.
        assert fed.gns("rm", "-r", "/rep/d").returncode == 0
        assert fed.gns("rm", "/rep/more.bin").returncode == 0
        t = wait_for(lambda: (t := cli_status(fed, "rep-dr")["onprem-b"])["state"] == "Synced"
                     and t["lag_versions"] == 0 and t, 60, "the replica to follow the deletes")
        assert (t["last_error"], t["error_at"]) == (None, None), t  # recovered: not shown
        filler.unlink()


def test_a_recursive_delete_of_5k_small_files_commits_on_a_full_disk(tmp_path: Path) -> None:
    """The volume alone, on a disk filled to the last block: `rm -r` of 5k small files
    commits, and says so, and the disk takes content again once it has room. (About 10k
    files of 1 KiB is where one delete's catalog changes outgrow the 4 MiB headroom: then
    it fails, changing nothing.)"""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], check=True)
    try:
        with VolumeStorage.open(disk / "v", "v", create=True) as vol:
            data = os.urandom(1024)
            for i in range(5_000):
                vol.put_bytes(f"d/s{i // 1000}/f{i}", data[:-8] + i.to_bytes(8, "big"))
            filler = fill(disk)
            before = vol.version
            assert vol.delete("d", recursive=True) == before + 1
            assert list(vol.files()) == []
            filler.unlink()
            vol.put_bytes("after", b"x")  # room again: the headroom is taken back first
            assert [m.path for m in vol.files()] == ["after"]
            assert (disk / "v" / "headroom").stat().st_size == HEADROOM_BYTES
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
