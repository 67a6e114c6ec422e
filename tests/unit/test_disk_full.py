"""``federation.storage.space``: a full disk is recognised whichever layer met it (the OS or
SQLite), also behind the errors raised from it, and nothing else is; the headroom a volume
keeps back is real allocated space, given back for a delete that meets a full disk, and
taken again once there is room; a controller reports its data disk's size and free space."""
from __future__ import annotations

import errno
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from federation.controller.metrics import ControllerMetrics
from federation.storage import VolumeStorage
from federation.storage.space import HEADROOM_BYTES, Headroom, disk_full_reason
from tests.support.full_disk import chained_enospc, sqlite_full

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def test_enospc_and_edquot_are_a_full_disk() -> None:
    assert disk_full_reason(ENOSPC) == "No space left on device"
    assert disk_full_reason(OSError(errno.EDQUOT, "Disk quota exceeded")) == "Disk quota exceeded"
    assert disk_full_reason(OSError(errno.ENOSPC, None)) == "No space left on device"  # no strerror given


def test_sqlite_full_is_a_full_disk() -> None:
    exc = sqlite_full()
    assert exc.sqlite_errorcode == sqlite3.SQLITE_FULL
    assert disk_full_reason(exc) == "database or disk is full"


def test_an_error_raised_from_a_full_disk_is_one() -> None:
    assert disk_full_reason(chained_enospc()) == "No space left on device"


def test_other_errors_are_not() -> None:
    assert disk_full_reason(OSError(errno.EIO, "Input/output error")) is None
    assert disk_full_reason(FileNotFoundError(errno.ENOENT, "gone")) is None
    assert disk_full_reason(sqlite3.OperationalError("database is locked")) is None
    assert disk_full_reason(KeyError("a bug")) is None


def test_a_chain_that_loops_ends() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a
    assert disk_full_reason(a) is None


def test_a_volume_keeps_its_headroom_allocated(tmp_path: Path) -> None:
    with VolumeStorage.open(tmp_path / "v", "v", create=True) as vol:
        st = (tmp_path / "v" / "headroom").stat()
        assert st.st_size == HEADROOM_BYTES
        assert st.st_blocks * 512 >= HEADROOM_BYTES  # real blocks: a sparse file holds none
        assert list(vol.files()) == []  # not a file of the volume


def test_a_delete_that_meets_a_full_disk_runs_again_on_the_headroom(tmp_path: Path) -> None:
    room = Headroom(tmp_path / "headroom", size=1 << 20)
    assert room.restore() and room.held
    calls = []

    def delete() -> int:
        calls.append(room.held)
        if len(calls) == 1:
            raise ENOSPC
        return 7

    assert room.freeing(delete) == 7
    assert calls == [True, False] and not room.path.exists()  # given back before the retry
    assert room.restore() and room.path.stat().st_size == 1 << 20


def test_only_a_full_disk_and_only_once(tmp_path: Path) -> None:
    room = Headroom(tmp_path / "headroom", size=1 << 20)
    room.restore()

    def broken() -> None:
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError, match="Input/output"):
        room.freeing(broken)
    assert room.held and room.path.exists()  # not given back for an error it cannot help

    def always_full() -> None:
        raise ENOSPC

    with pytest.raises(OSError, match="No space"):
        room.freeing(always_full)
    assert not room.path.exists()
    calls = []

    def counted_full() -> None:
        calls.append(1)
        raise ENOSPC

    with pytest.raises(OSError, match="No space"):  # nothing left to give: fails at once
        room.freeing(counted_full)
    assert len(calls) == 1


def test_a_delete_runs_again_when_another_volume_gave_the_headroom_back_meanwhile(tmp_path: Path) -> None:
    room = Headroom(tmp_path / "headroom", size=1 << 20)
    room.restore()
    calls = []

    def delete() -> int:
        calls.append(1)
        if len(calls) == 1:
            room.release()  # a delete in another volume of the disk, while this one ran
            raise ENOSPC
        return 3

    assert room.freeing(delete) == 3 and len(calls) == 2


def test_the_volumes_of_a_data_directory_share_one_headroom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "volumes"
    with VolumeStorage.open(root / "a", "a", create=True):  # made before it was shared
        pass
    assert (root / "a" / "headroom").stat().st_size == HEADROOM_BYTES
    room = Headroom(root / ".headroom", size=1 << 20)
    with VolumeStorage.open(root / "a", "a", headroom=room) as a, \
            VolumeStorage.open(root / "b", "b", create=True, headroom=room) as b:
        # One file for the directory; the volume's own given back to the disk.
        assert sorted(str(p.relative_to(root)) for p in root.rglob("*headroom*")) == [".headroom"]
        a.put_bytes("x", b"x")
        b.put_bytes("y", b"y")
        room.release()  # a delete in volume a met a full disk

        def full(fd: int, offset: int, length: int) -> None:
            raise ENOSPC

        monkeypatch.setattr(os, "posix_fallocate", full)  # and the disk is still full
        with pytest.raises(OSError, match="kept for deletes"):  # for every volume on it
            b.put_bytes("z", b"z")
        assert b.delete("y") > 0
        monkeypatch.undo()
        a.put_bytes("z", b"z")
        assert room.held and (root / ".headroom").stat().st_size == 1 << 20


def test_restore_on_a_full_disk_leaves_nothing_half_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    room = Headroom(tmp_path / "headroom", size=1 << 20)

    def full(fd: int, offset: int, length: int) -> None:
        raise ENOSPC

    monkeypatch.setattr(os, "posix_fallocate", full)
    assert room.restore() is False and not room.held
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert room.restore() is True


def test_a_controller_reports_its_data_disk(tmp_path: Path) -> None:
    metrics = ControllerMetrics("c1")
    metrics.watch_disk(tmp_path)
    st = os.statvfs(tmp_path)
    assert metrics.registry.get_sample_value("gns_data_dir_size_bytes") == st.f_blocks * st.f_frsize
    free = metrics.registry.get_sample_value("gns_data_dir_free_bytes")
    assert free is not None and abs(free - st.f_bavail * st.f_frsize) < 64 << 20  # read at each scrape


def test_new_content_waits_while_the_headroom_is_given_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with VolumeStorage.open(tmp_path / "v", "v", create=True) as vol:
        vol.put_bytes("a", b"a")
        room = vol._headroom
        room.release()  # as a delete that met a full disk does

        def full(fd: int, offset: int, length: int) -> None:
            raise ENOSPC

        monkeypatch.setattr(os, "posix_fallocate", full)  # and the disk is still full
        with pytest.raises(OSError, match="kept for deletes") as refused:
            vol.put_bytes("b", b"b")
        assert disk_full_reason(refused.value) is not None
        with pytest.raises(OSError, match="kept for deletes"):
            vol.writer("c")
        assert vol.delete("a") > 0  # deletes still go
        assert sorted(m.path for m in vol.files()) == []
        monkeypatch.undo()  # room again: the headroom is taken back, then content goes in
        vol.put_bytes("b", b"b")
        assert room.held and [m.path for m in vol.files()] == ["b"]


def test_puts_on_many_threads_take_the_headroom_back_once(tmp_path: Path) -> None:
    room = Headroom(tmp_path / "headroom", size=1 << 20)
    room.restore()
    for _ in range(20):
        room.release()
        barrier = threading.Barrier(8)

        def put() -> None:
            barrier.wait()
            room.check_room()  # each may find it given back; none may fail

        with ThreadPoolExecutor(8) as pool:
            for f in [pool.submit(put) for _ in range(8)]:
                f.result()
        assert room.held and room.path.stat().st_size == 1 << 20
        assert sorted(p.name for p in tmp_path.iterdir()) == ["headroom"]


def test_a_headroom_half_made_when_the_process_died_is_swept(tmp_path: Path) -> None:
    room = Headroom(tmp_path / "headroom", size=1 << 20)
    room.restore()
    (tmp_path / "headroom.new").write_bytes(b"\0" * 4096)  # killed -9 inside a later restore
    again = Headroom(tmp_path / "headroom", size=1 << 20)  # the next open
    assert again.restore()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["headroom"]


@pytest.mark.parametrize("fits", [16, 0], ids=["small-batches-fit", "nothing-fits"])
def test_a_committed_delete_stays_a_success_whatever_its_collection_meets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fits: int
) -> None:
    """A recursive delete of many small files on a full disk: its collection's transactions
    may not fit even the headroom. They go in small batches, or not now; the delete, which
    committed, is reported as done (it was reported as failed, "nothing committed")."""
    from federation.storage.gc import BlobCollector

    with VolumeStorage.open(tmp_path / "v", "v", create=True) as vol:
        for i in range(40):
            vol.put_bytes(f"d/f{i}", os.urandom(100))
        real = BlobCollector.collect_locked
        batches: list[int] = []

        def collect(self: BlobCollector, batch: int = 1000) -> int:
            batches.append(batch)
            if batch > fits:
                raise sqlite_full()
            return real(self, batch)

        monkeypatch.setattr(BlobCollector, "collect_locked", collect)
        before = vol.version
        assert vol.delete("d", recursive=True) == before + 1
        assert list(vol.files()) == []
        assert batches == [1000, 1000, 16]  # as it is, again on the headroom, then small
        if not fits:
            assert any("wait for a later collection" in r.getMessage() for r in caplog.records)
        monkeypatch.undo()
        vol.put_bytes("after", b"x")  # the queue is collected by a later pass
        assert [m.path for m in vol.files()] == ["after"]
