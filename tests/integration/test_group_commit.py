"""Group commit of concurrent puts (issue 14): one transaction per batch, a failing put
fails alone, every acknowledged put survives kill -9, and nothing partial is ever visible.

The kill test runs a real writer subprocess with eight threads and SIGKILLs it mid-stream.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from federation.storage import FileMeta, VolumeStorage
from federation.storage.group_commit import GroupCommitter, Request
from federation.storage.puts import Batch
from namespace.errors import Conflict

REPO = Path(__file__).resolve().parents[2]


def _read(vol: VolumeStorage, path: str) -> bytes:
    with vol.read(path) as r:
        return b"".join(r)


def test_concurrent_puts_share_commits_and_each_gets_one_version(tmp_path: Path) -> None:
    vol = VolumeStorage.open(tmp_path / "v", "gc", create=True)
    try:
        versions: list[int] = []
        lock = threading.Lock()

        def run(k: int) -> None:
            for i in range(25):
                m = vol.put_bytes(f"t{k}/f{i}", f"{k}-{i}".encode())
                with lock:
                    versions.append(m.version)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(versions) == list(range(1, 201))  # +1 per put, none shared
        assert vol.version == 200
        assert vol.put_committer.items == 200 and vol.put_committer.batches <= 200
        for k in range(8):
            assert _read(vol, f"t{k}/f24") == f"{k}-24".encode()
    finally:
        vol.close()


def test_a_failing_put_fails_alone_in_its_batch(tmp_path: Path) -> None:
    vol = VolumeStorage.open(tmp_path / "v", "gc", create=True)
    try:
        vol.put_bytes("taken", b"first")
        gate = threading.Event()
        committer = vol.put_committer
        real = committer._run_batch

        def slow_first(batch: list[Request[Batch, FileMeta]]) -> None:
            gate.wait(5)  # let the others queue up behind this batch
            real(batch)

        committer._run_batch = slow_first
        errors: dict[str, BaseException] = {}

        def put(path: str, if_absent: bool = False) -> None:
            try:
                vol.put_bytes(path, path.encode(), if_absent=if_absent)
            except Conflict as exc:
                errors[path] = exc

        threads = [threading.Thread(target=put, args=("a",))]
        threads[0].start()
        time.sleep(0.2)
        threads += [threading.Thread(target=put, args=(p,), kwargs=kw) for p, kw in
                    (("b", {}), ("taken", {"if_absent": True}), ("c", {}))]
        for t in threads[1:]:
            t.start()
        deadline = time.monotonic() + 5
        while len(committer._queue) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.set()
        for t in threads:
            t.join()
        assert set(errors) == {"taken"}
        assert _read(vol, "taken") == b"first"
        assert vol.version == 4 and {_read(vol, p) for p in "abc"} == {b"a", b"b", b"c"}
        assert committer.batches == 3  # "taken", then "a" alone, then b, taken and c together
    finally:
        vol.close()


def test_committer_gives_every_waiter_the_batch_error() -> None:
    def boom(batch: list[Request[None, int]]) -> None:
        raise OSError("disk gone")

    gc: GroupCommitter[None, int] = GroupCommitter(boom)
    with pytest.raises(OSError):
        gc.submit(lambda _: 1)


CHILD = r"""
import hashlib, os, sys, threading
from federation.storage import VolumeStorage
vol = VolumeStorage.open(sys.argv[1], "gc", create=True)
out_lock = threading.Lock()
def run(k):
    for i in range(100000):
        data = os.urandom(4096)
        m = vol.put_bytes(f"r{sys.argv[2]}/t{k}/f{i:06d}", data)
        with out_lock:
            sys.stdout.write(f"{m.path} {m.version} {hashlib.sha256(data).hexdigest()}\n")
            sys.stdout.flush()
ts = [threading.Thread(target=run, args=(k,)) for k in range(8)]
for t in ts: t.start()
for t in ts: t.join()
"""


@pytest.mark.slow
def test_kill9_mid_batch_loses_nothing_acknowledged(tmp_path: Path) -> None:
    root = tmp_path / "v"
    for round_ in range(3):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(round_)], cwd=REPO,
                                 stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(REPO)})
        acked: dict[str, tuple[int, str]] = {}
        assert child.stdout is not None
        target = 150 + 70 * round_
        for line in child.stdout:
            path, version, sha = line.split()
            acked[path] = (int(version), sha)
            if len(acked) >= target:
                break
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        with VolumeStorage.open(root, "gc") as vol:
            files = {f.path: f for f in vol.files()}
            for path, (acked_version, acked_sha) in acked.items():
                assert path in files, f"acknowledged put {path} lost"
                assert files[path].sha256 == acked_sha and files[path].version == acked_version
            # nothing partial: every visible file is whole, and one version per put
            for f in list(files.values())[:: max(1, len(files) // 50)]:
                assert hashlib.sha256(_read(vol, f.path)).hexdigest() == f.sha256
            assert vol.version == len(files)
            assert sorted(f.version for f in files.values()) == list(range(1, len(files) + 1))
