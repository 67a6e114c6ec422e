"""Ctrl-C during ``gns put - PATH`` (SPEC §4, §5): exit 130, one error line, nothing committed.

The upload streams from a stdin pipe that stays open, so at the signal a gRPC thread is
waiting for the next chunk of stdin. The interpreter used to die at shutdown with
``Fatal Python error: _enter_buffered_busy`` (SIGABRT) because that thread still held
stdin's buffer lock.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.local.etcd_server import EtcdCluster
from tests.fixtures.federation import Federation, assert_error
from tests.support import wait_for

CHUNK = 1 << 20


@pytest.fixture(scope="module")
def fed(etcd_module: EtcdCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    f = Federation(etcd_module, tmp_path_factory.mktemp("putint"))
    try:
        f.add("onprem-a")
        assert f.gns("volume", "create", "pi", "--cluster", "onprem-a").returncode == 0
        assert f.gns("mount", "add", "/pi", "pi").returncode == 0
        yield f
    finally:
        f.stop_all()


def _env(f: Federation, mode: str, tmp: Path) -> dict[str, str]:
    env = f.env()
    if mode == "controller":
        env.pop("GNS_ETCD")
        env["GNS_HOME"] = str(tmp / "empty-home")
        env["GNS_CONTROLLER"] = f.controllers["onprem-a"].endpoint
    return env


@pytest.mark.parametrize("mode", ["etcd", "controller"])
@pytest.mark.parametrize("sent", [2 * CHUNK + 5, 100])
def test_sigint_while_streaming_stdin(fed: Federation, tmp_path: Path, mode: str, sent: int) -> None:
    """``sent`` past one chunk: the stream is open and its request thread waits on stdin;
    under one chunk: the main thread still waits for the first chunk to decide unary or not."""
    path = f"/pi/{mode}-{sent}.bin"
    proc = subprocess.Popen(
        [sys.executable, "-m", "federation.cli.main", "put", "-", path],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=_env(fed, mode, tmp_path),
    )
    try:
        assert proc.stdin is not None
        # A pipe holds 64 KiB: once this write returns, gns has read all but that much, so
        # past one chunk the streaming Write has begun. The pipe stays open: no EOF.
        proc.stdin.write(b"x" * sent)
        proc.stdin.flush()
        time.sleep(1.0)  # let the reader block on the (empty) pipe again
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        proc.send_signal(signal.SIGINT)
        # Wait with stdin still open (as `(echo a; sleep 30) | gns put ...` keeps it):
        # closing it would hand the blocked reader an EOF and hide the crash.
        proc.wait(timeout=30)
        assert proc.stderr is not None
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except BrokenPipeError:  # gns left without reading all we wrote
                    pass
    done = subprocess.CompletedProcess(proc.args, proc.returncode, b"", err)
    assert_error(done, 130)
    assert b"Fatal Python error" not in err
    assert_error(fed.gns("stat", path), 3)


def _parts(fed: Federation) -> tuple[list[Path], list[str]]:
    """The owner's temp files of puts in progress, and those its process holds open."""
    c = fed.controllers["onprem-a"]
    files = list(c.data_dir.glob("volumes/pi/tmp/put-*.part"))
    held = []
    for fd in Path(f"/proc/{c.pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.endswith(".part") or ".part " in target:
            held.append(target)
    return files, held


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_put_whose_client_went_away_leaves_no_temp_file(fed: Federation, sig: signal.Signals) -> None:
    """The owner kept each interrupted upload's temp file, open, for good (a `gns put
    /dev/zero` killed after a few seconds left 10 GB): the call's cancellation cancelled the
    task of a write a pool thread was still doing, the abort then closed the writer's buffer
    under that thread, and the BufferError skipped closing and deleting the file."""
    path = "/pi/zero.bin"
    for _ in range(3):  # whether a write is in flight at the cut is chance: try a few cuts
        proc = subprocess.Popen([sys.executable, "-m", "federation.cli.main", "put", "/dev/zero", path],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=fed.env())
        try:
            wait_for(lambda: any(_size(p) >= 64 * CHUNK for p in _parts(fed)[0]), 30,
                     "the owner to receive 64 MiB of the upload")
            proc.send_signal(sig)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        left: list[tuple[list[Path], list[str]]] = []

        def dropped() -> bool:
            left.append(_parts(fed))
            return left[-1] == ([], [])

        try:
            wait_for(dropped, 15, "the owner to drop the upload's temp file")
        except AssertionError:
            raise AssertionError(f"left behind (files, held open): {left[-1]}") from None
        assert_error(fed.gns("stat", path), 3)
