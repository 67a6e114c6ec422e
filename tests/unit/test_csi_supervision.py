"""What the CSI node driver believes about processes and calls, without servers: which
process a recorded PID names (federation.pids), which recorded publications it adopts
(federation.csi.publisher), the deadline on calls to an owner (federation.csi.deadline) and
the mount probe (federation.csi.probe)."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from federation.csi.deadline import within
from federation.csi.probe import Probe
from federation.csi.publisher import Publication, Publisher, _from_record
from federation.fuse.mountinfo import mounts_at
from federation.pids import boot_id, cmdline, is_process, is_stopped, stamp_of
from namespace.errors import NotFound, Unavailable


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process: what a recorded PID may name after a reboot or reuse."""
    proc = subprocess.Popen(["sleep", "300"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_stamp_tells_one_process_from_another(sleeper: subprocess.Popen[bytes]) -> None:
    mine, theirs = stamp_of(sleeper.pid), stamp_of(sleeper.pid)
    assert mine is not None and mine == theirs and mine.boot_id == boot_id()
    assert is_process(sleeper.pid, mine)
    assert not is_process(sleeper.pid, dataclasses.replace(mine, start_ticks=mine.start_ticks + 1))
    assert not is_process(sleeper.pid, dataclasses.replace(mine, boot_id="another-boot"))
    _until(lambda: cmdline(sleeper.pid) == ["sleep", "300"])  # once exec'd
    assert not is_stopped(sleeper.pid)
    os.kill(sleeper.pid, signal.SIGSTOP)
    _until(lambda: is_stopped(sleeper.pid))
    os.kill(sleeper.pid, signal.SIGCONT)
    _until(lambda: not is_stopped(sleeper.pid))
    sleeper.kill()
    sleeper.wait()
    assert not is_process(sleeper.pid, mine) and stamp_of(sleeper.pid) is None


def _until(ok: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.01)


def _record(target: str, pid: int, **extra: object) -> dict[str, object]:
    return {"volume_id": "/k8s//a/", "path": "/k8s/a", "target": target, "readonly": False,
            "pid": pid, "restarts": 1, "device": "0:77", **extra}


def test_records_naming_other_processes_are_not_adopted(sleeper: subprocess.Popen[bytes]
                                                        ) -> None:
    stamp = stamp_of(sleeper.pid)
    assert stamp is not None
    legacy = _from_record("/t", _record("/t", sleeper.pid))  # before stamps: not gns fuse
    later = _from_record("/t", _record("/t", sleeper.pid, boot_id=stamp.boot_id,
                                       start_ticks=stamp.start_ticks - 1))
    rebooted = _from_record("/t", _record("/t", sleeper.pid, boot_id="another-boot",
                                          start_ticks=stamp.start_ticks))
    for pub in (legacy, later, rebooted):
        assert (pub.pid, pub.stamp, pub.alive()) == (0, None, False)
    assert legacy.volume_id == "/k8s/a"  # normalized, as NodePublishVolume compares it
    assert rebooted.device == "" and later.device == "0:77"
    same = _from_record("/t", _record("/t", sleeper.pid, boot_id=stamp.boot_id,
                                      start_ticks=stamp.start_ticks))
    assert (same.pid, same.stamp, same.alive()) == (sleeper.pid, stamp, True)


def test_a_legacy_record_of_gns_fuse_for_its_target_is_adopted(tmp_path: Path) -> None:
    # argv as the driver starts it; the process only has to look like it
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)",
                             "federation.cli.main", "fuse", "/the/target"])
    try:
        _until(lambda: "fuse" in cmdline(fake.pid))  # exec'd: Popen may return just before
        pub = _from_record("/the/target", _record("/the/target", fake.pid))
        assert pub.pid == fake.pid and pub.alive()
        other = _from_record("/another/target", _record("/another/target", fake.pid))
        assert other.pid == 0
    finally:
        fake.kill()
        fake.wait()


def test_terminate_never_signals_a_process_it_did_not_start(
        sleeper: subprocess.Popen[bytes], tmp_path: Path) -> None:
    publisher = Publisher(lambda target, path, ro: [], tmp_path)
    pub = Publication(volume_id="/a", path="/a", target=str(tmp_path / "t"), readonly=False,
                      pid=sleeper.pid)
    publisher._terminate(pub)
    publisher._terminate(pub, kill=True)
    assert sleeper.poll() is None


def test_within_answers_raises_or_gives_up() -> None:
    assert within(5, "answer", lambda: 42) == 42
    with pytest.raises(NotFound):
        within(5, "missing", lambda: (_ for _ in ()).throw(NotFound("gone")))
    release = threading.Event()
    try:
        with pytest.raises(Unavailable, match=r"stuck: no answer within 0.3 s"):
            within(0.3, "stuck", lambda: release.wait(30))
        with pytest.raises(Unavailable, match=r"stuck: cluster x is Down"):
            within(30, "stuck", lambda: release.wait(30), lambda: "cluster x is Down")
    finally:
        release.set()


def test_probe_and_mount_table(tmp_path: Path) -> None:
    probe = Probe(str(tmp_path))
    assert probe.answers(5) and not probe.disconnected() and probe.silent_for() == 0
    assert Probe(str(tmp_path / "missing")).answers(5)  # answered (ENOENT): not a dead mount
    assert [m.fstype for m in mounts_at("/proc")][-1:] == ["proc"]
    assert mounts_at(tmp_path) == []
