"""Fencing, crash safety and bounded memory, with real signals against controller processes."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.fixtures.federation import Federation, assert_error


def sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def make_file(path: Path, size: int, seed: int) -> str:
    """A pseudo-random file of ``size`` bytes (fast: one random block, varied per MiB)."""
    block = os.urandom(1 << 20)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(size // len(block)):
            chunk = seed.to_bytes(4, "little") + i.to_bytes(8, "little") + block[12:]
            f.write(chunk)
            h.update(chunk)
    return h.hexdigest()


def temp_files(data_dir: Path) -> list[Path]:
    """Files in the volumes' temp areas (where a put streams before it commits)."""
    return [p for p in data_dir.rglob("*") if p.is_file() and "tmp" in p.relative_to(data_dir).parts]


def test_sigstop_past_ttl_fences_old_epoch(federation: Federation) -> None:
    fed = federation
    fed.lease_ttl = 3
    fed.add("onprem-a")
    fed.add("onprem-b")
    fed.gns("volume", "create", "fv", "--cluster", "onprem-a")
    fed.gns("mount", "add", "/fv", "fv")
    assert fed.gns_bytes("put", "-", "/fv/f", "--epoch", "1", input=b"epoch-1").returncode == 0

    fed.kill("onprem-a", signal.SIGSTOP)
    try:
        fed.wait_state("onprem-a", "Down", timeout=fed.lease_ttl + 3)
        # A write for the old epoch is already queued when the process wakes up.
        with fed.client() as c:
            spec = c.view().clusters["onprem-a"]
        late = subprocess.Popen(
            [sys.executable, "-c", (
                "import sys, grpc\n"
                "from federation.api._gen.gns.federation.v1 import federation_pb2 as pb, federation_pb2_grpc as g\n"
                f"s = g.FederationStub(grpc.insecure_channel('{spec.endpoint}'))\n"
                "def gen():\n"
                "    yield pb.WriteChunk(header=pb.WriteHeader(target=pb.Target(volume='fv', relative_path='f', epoch=1)))\n"
                "    yield pb.WriteChunk(data=b'late-write')\n"
                "try:\n"
                "    s.Write(gen(), timeout=30); print('ACCEPTED')\n"
                "except grpc.RpcError as e:\n"
                "    print('REFUSED', e.code().name, e.details())\n"
            )],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        time.sleep(1.0)
    finally:
        fed.kill("onprem-a", signal.SIGCONT)
    out, err = late.communicate(timeout=60)
    assert out.startswith("REFUSED"), (out, err)

    fed.wait_state("onprem-a", "Ready", timeout=15)
    vol = json.loads(fed.gns("volume", "show", "fv", "--json").stdout)
    assert vol["owner"] == "onprem-a" and vol["epoch"] >= 2
    assert_error(fed.gns_bytes("put", "-", "/fv/f", "--epoch", "1", input=b"stale"), 4, "epoch")
    assert fed.gns("cat", "/fv/f").stdout == "epoch-1"
    # the current epoch writes again
    assert fed.gns_bytes("put", "-", "/fv/f", input=b"epoch-2").returncode == 0
    assert fed.gns("cat", "/fv/f").stdout == "epoch-2"


def test_kill9_owner_during_large_put_leaves_old_or_new(federation: Federation, tmp_path: Path) -> None:
    fed = federation
    fed.add("onprem-a")
    fed.add("aws-1")
    fed.gns("volume", "create", "crash", "--cluster", "onprem-a")
    fed.gns("mount", "add", "/crash", "crash")
    old = tmp_path / "old.bin"
    old_sha = make_file(old, 8 << 20, 1)
    assert fed.gns("put", str(old), "/crash/big.bin").returncode == 0
    new = tmp_path / "new.bin"
    make_file(new, 768 << 20, 2)

    put = subprocess.Popen(
        [sys.executable, "-m", "federation.cli.main", "put", str(new), "/crash/big.bin", "--via", "aws-1"],
        env=fed.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    owner = psutil.Process(fed.controllers["onprem-a"].pid)
    data_dir = fed.controllers["onprem-a"].data_dir
    try:
        # kill once a good part of the file is on the owner's disk
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            tmp_bytes = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file() and "tmp" in p.parts)
            if tmp_bytes > 64 << 20:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the put never got going")
        owner.kill()
        killed = fed.controllers["onprem-a"].proc
        assert killed is not None
        killed.wait(10)
        put.communicate(timeout=60)  # reads and closes the pipes
        assert put.returncode != 0
    finally:
        if put.poll() is None:
            put.kill()
            put.communicate()
    fed.start("onprem-a")
    got = tmp_path / "got.bin"
    assert fed.gns("get", "/crash/big.bin", str(got)).returncode == 0
    assert sha_file(got) == old_sha
    names = [e["name"] for e in json.loads(fed.gns("ls", "/crash", "--json").stdout)]
    assert names == ["big.bin"]
    assert not temp_files(data_dir)


@pytest.mark.slow
def test_1gib_through_a_forwarder_in_bounded_memory(federation: Federation, tmp_path: Path) -> None:
    fed = federation
    fed.add("onprem-a")
    fed.add("onprem-b")
    fed.gns("volume", "create", "huge", "--cluster", "onprem-a")
    fed.gns("mount", "add", "/huge", "huge")
    src = tmp_path / "one.gib"
    digest = make_file(src, 1 << 30, 7)
    procs = {cid: psutil.Process(c.pid) for cid, c in fed.controllers.items()}
    base = {cid: p.memory_info().rss for cid, p in procs.items()}
    peak = dict(base)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for cid, p in procs.items():
                peak[cid] = max(peak[cid], p.memory_info().rss)
            time.sleep(0.02)

    t = threading.Thread(target=sample)
    t.start()
    try:
        put = fed.gns("put", str(src), "/huge/one.gib", "--via", "onprem-b", "--json", timeout=600)
        assert put.returncode == 0, put.stderr
        assert json.loads(put.stdout)["sha256"] == digest
        src.unlink()
        out = tmp_path / "back.gib"
        get = fed.gns("get", "/huge/one.gib", str(out), "--via", "onprem-b", timeout=600)
        assert get.returncode == 0, get.stderr
    finally:
        done.set()
        t.join()
    assert sha_file(out) == digest
    growth = {cid: (peak[cid] - base[cid]) / 2**20 for cid in procs}
    assert all(g < 100 for g in growth.values()), growth
