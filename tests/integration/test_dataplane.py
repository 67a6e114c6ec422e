"""The data plane across three controller processes: round trips, forwarding, concurrency."""
from __future__ import annotations

import hashlib
import json
import os
import random
import threading
from pathlib import Path

import pytest

from namespace.errors import FileNotFound, InvalidInput
from tests.fixtures.federation import Federation, assert_error


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(scope="module")
def fed(federation3: Federation) -> Federation:
    f = federation3
    for vol, owner in (("dp", "onprem-a"), ("dpb", "onprem-b")):
        assert f.gns("volume", "create", vol, "--cluster", owner).returncode == 0
    assert f.gns("mount", "add", "/dp", "dp").returncode == 0
    assert f.gns("mount", "add", "/dp/b-side", "dpb:inner").returncode == 0
    return f


@pytest.mark.parametrize("via", [[], ["--via", "onprem-b"]])
def test_names_gns_keeps_for_itself_are_not_written(fed: Federation, via: list[str]) -> None:
    """A user's /dp/.gns/manifest.json stopped every object-store mirror of the volume
    ("reserved by the mirror layout") until someone deleted it, and a file:// mirror
    refused .NAME.gns-meta files: such names are refused at the write (exit 2, nothing
    changed), as .gns/ at a volume's root holds gns's own (diverged files)."""
    assert fed.gns("put", "-", "/dp/ok.txt", *via, input=b"ok").returncode == 0
    for args in (["put", "-", "/dp/.gns/manifest.json"], ["put", "-", "/dp/.gns-locks/3.lock"],
                 ["put", "-", "/dp/sub/.ok.txt.gns-meta"], ["mv", "/dp/ok.txt", "/dp/.gns/ok.txt"]):
        assert_error(fed.gns(*args, *via, input=b"x"), 2, "is a name gns keeps for itself")
    for path in ("/dp/.gns/manifest.json", "/dp/.gns-locks/3.lock", "/dp/sub/.ok.txt.gns-meta", "/dp/.gns/ok.txt"):
        assert fed.gns("stat", path).returncode == 3
    assert fed.gns("cat", "/dp/ok.txt").stdout == "ok"
    assert fed.gns("put", "-", "/dp/sub/.gns/fine.txt", *via, input=b"x").returncode == 0  # below the root


@pytest.mark.parametrize("size", [0, 1, 1000, 1 << 20, 5 * (1 << 20) + 17])
def test_put_get_round_trip_sha256(fed: Federation, tmp_path: Path, size: int) -> None:
    data = random.randbytes(size)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    put = fed.gns("put", str(src), f"/dp/rt/{size}.bin", "--json")
    assert put.returncode == 0, put.stderr
    info = json.loads(put.stdout)
    assert info["sha256"] == sha(data) and info["size"] == size
    dst = tmp_path / "dst.bin"
    assert fed.gns("get", f"/dp/rt/{size}.bin", str(dst)).returncode == 0
    assert sha(dst.read_bytes()) == sha(data)
    st = json.loads(fed.gns("stat", f"/dp/rt/{size}.bin", "--json").stdout)
    assert {k: st[k] for k in ("path", "size", "sha256")} == {
        "path": f"/dp/rt/{size}.bin", "size": size, "sha256": sha(data)}
    assert isinstance(st["mtime"], float) and st["version"] >= 1


def test_via_forwarding_both_ways(fed: Federation) -> None:
    data = random.randbytes(3 * (1 << 20) + 5)
    # written through aws-1 (not the owner), read through onprem-b and directly
    assert fed.gns_bytes("put", "-", "/dp/via/f.bin", "--via", "aws-1", input=data).returncode == 0
    out = fed.gns_bytes("cat", "/dp/via/f.bin", "--via", "onprem-b")
    assert out.returncode == 0 and sha(out.stdout) == sha(data)
    assert sha(fed.gns_bytes("get", "/dp/via/f.bin", "-").stdout) == sha(data)
    st = json.loads(fed.gns("stat", "/dp/via/f.bin", "--via", "aws-1", "--json").stdout)
    assert st["served_by"] == "onprem-a" and st["sha256"] == sha(data)
    # the nested mount goes to the other owner, also through a forwarder
    assert fed.gns_bytes("put", "-", "/dp/b-side/x.txt", "--via", "onprem-a", input=b"b!").returncode == 0
    st = json.loads(fed.gns("stat", "/dp/b-side/x.txt", "--json").stdout)
    assert st["served_by"] == "onprem-b"
    with fed.client() as c:
        ctl = c.view().clusters["onprem-a"].metrics_endpoint
    import urllib.request

    metrics = urllib.request.urlopen(f"http://{ctl}/metrics", timeout=5).read().decode()
    assert 'gns_forwarded_total{method="Put",to="onprem-b"}' in metrics  # small: one unary Put
    assert "gns_request_seconds_bucket" in metrics and "gns_bytes_in_total" in metrics
    assert "gns_lease_renewals" in metrics


def test_ls_stat_rm_and_versions(fed: Federation) -> None:
    before = json.loads(fed.gns("volume", "show", "dp", "--json").stdout)["version"]
    for name in ("a.txt", "sub/b.txt", "sub/deeper/c.txt"):
        assert fed.gns_bytes("put", "-", f"/dp/tree/{name}", input=name.encode()).returncode == 0
    ls = json.loads(fed.gns("ls", "/dp/tree", "--json").stdout)
    assert ls == [{"name": "a.txt", "type": "file", "size": 5}, {"name": "sub", "type": "dir", "size": 0}]
    assert json.loads(fed.gns("stat", "/dp/tree/sub", "--json").stdout)["type"] == "dir"
    assert_error(fed.gns("rm", "/dp/tree/sub"), 2, "is a directory")
    assert fed.gns("rm", "/dp/tree/sub", "-r").returncode == 0
    assert fed.gns("rm", "/dp/tree/a.txt").returncode == 0
    assert_error(fed.gns("stat", "/dp/tree/a.txt"), 3)
    assert_error(fed.gns("rm", "/dp/tree/a.txt"), 3)
    after = json.loads(fed.gns("volume", "show", "dp", "--json").stdout)["version"]
    assert after == before + 5  # three puts, one rm -r, one rm: one version each


def test_bad_input_changes_nothing(fed: Federation, tmp_path: Path) -> None:
    v0 = json.loads(fed.gns("volume", "show", "dp", "--json").stdout)["version"]
    (tmp_path / "adir").mkdir()
    unreadable = tmp_path / "secret"
    unreadable.write_bytes(b"x")
    unreadable.chmod(0)
    fed.gns_bytes("put", "-", "/dp/bad/file", input=b"f")
    v0 += 1
    cases: list[tuple[tuple[str, ...], int, str]] = [
        (("put", str(tmp_path / "missing"), "/dp/bad/x"), 3, "not found"),
        (("put", str(tmp_path / "adir"), "/dp/bad/x"), 2, "directory"),
        (("put", "-", "relative"), 2, "relative"),
        (("put", "-", "/dp/../x"), 2, "'..'"),
        (("put", "-", "/nomount/x"), 3, "not under any mount"),
        (("put", "-", "/dp/bad/file/below"), 2, "is a file"),
        (("put", "-", "/dp/bad"), 2, "/dp/bad is a directory and the data has no file name"),
        (("put", "-", "/dp"), 2, "/dp is a directory and the data has no file name"),  # a volume root
        (("get", "/dp/bad/nothing", str(tmp_path / "out")), 3, ""),
        (("get", "/dp/bad", str(tmp_path / "out")), 2, "directory"),
        (("cat", "/dp/bad"), 2, "directory"),
        (("cat", "/dp/bad/nothing"), 3, ""),
        (("ls", "/dp/bad/nothing"), 3, ""),
        (("stat", "/dp/\x01"), 2, "control"),
        (("rm", "/dp/bad/nothing"), 3, ""),
        (("put", "-", "/dp/bad/y", "--via", "ghost-cluster"), 3, "ghost-cluster"),
        (("put", "-", "/dp/bad/y", "--via", "Bad_Name"), 2, "invalid cluster name"),
        (("get", "/dp/bad/file", "-", "--consistency", "weird"), 2, "consistency"),
        (("put", "-", "/dp/bad/y", "--epoch", "0"), 2, "epoch"),
        (("cat", "/dp/bad/file", "--consistency", "any", "--max-staleness", "5 minutes"), 2,
         "invalid duration"),
        (("cat", "/dp/bad/file", "--max-staleness", "-1s"), 2, "negative"),
        (("stat", "/dp/bad/file", "--max-staleness", "1x"), 2, "invalid duration"),
        # Writes always go to the owner: read-consistency flags are refused, not ignored.
        (("put", "-", "/dp/bad/y", "--consistency", "any"), 2, "--consistency"),
        (("rm", "/dp/bad/file", "--max-staleness", "1h"), 2, "--max-staleness"),
    ]
    if os.geteuid() != 0:
        cases.append((("put", str(unreadable), "/dp/bad/x"), 2, "cannot read"))
    for args, code, fragment in cases:
        assert_error(fed.gns_bytes(*args, input=b"data"), code, fragment)
    assert not (tmp_path / "out").exists()
    assert json.loads(fed.gns("volume", "show", "dp", "--json").stdout)["version"] == v0
    assert json.loads(fed.gns("ls", "/dp/bad", "--json").stdout) == [{"name": "file", "type": "file", "size": 1}]


def test_get_writes_through_fifos_and_symlinks_never_replacing_them(fed: Federation, tmp_path: Path) -> None:
    """``gns get`` to something that is not a regular file (a FIFO, as /dev/null is a device)
    writes into it; to a symlink, writes where it points. A temp-and-rename put a plain
    file in their place (as root, /dev/null itself)."""
    data = random.randbytes(300_000)
    assert fed.gns_bytes("put", "-", "/dp/special/f.bin", input=data).returncode == 0
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    out = fed.gns("get", "/dp/special/f.bin", str(fifo))
    reader.join(30)
    assert out.returncode == 0, out.stderr
    assert got == [data] and fifo.is_fifo()
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    assert fed.gns("get", "/dp/special/f.bin", str(link)).returncode == 0
    assert link.is_symlink() and real.read_bytes() == data
    assert_error(fed.gns("get", "/dp/special/f.bin", str(tmp_path / "no" / "dir" / "x")), 3, "does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.bin", "pipe", "real.bin"]


@pytest.mark.parametrize("staleness", ["1h", "90s", "1.5", "1h30m", "0"])
def test_max_staleness_takes_durations(fed: Federation, staleness: str) -> None:
    fed.gns_bytes("put", "-", "/dp/dur/file", input=b"fresh")
    out = fed.gns_bytes("cat", "/dp/dur/file", "--consistency", "any", "--max-staleness", staleness)
    assert out.returncode == 0 and out.stdout == b"fresh", out.stderr


def test_stale_epoch_is_refused(fed: Federation) -> None:
    assert fed.gns_bytes("put", "-", "/dp/epoch/ok", "--epoch", "1", input=b"1").returncode == 0
    # An epoch the volume has not reached (etcd says so too) is refused, not "retry" (exit 5).
    assert_error(fed.gns_bytes("put", "-", "/dp/epoch/ok", "--epoch", "2", input=b"2"), 4, "not reached")


def test_64_concurrent_readers_and_writers_no_torn_reads(fed: Federation) -> None:
    """Each file's content names its own hash: a reader that mixes versions notices."""
    def payload(i: int, gen: int) -> bytes:
        body = f"{i}:{gen}:".encode() * random.randint(2000, 40000)
        return sha(body).encode() + b"\n" + body

    names = [f"/dp/conc/f{i}" for i in range(8)]
    with fed.client() as c:
        for i, n in enumerate(names):
            c.put(payload(i, 0), n)
    errors: list[str] = []
    stop = threading.Event()

    def writer(k: int) -> None:
        with fed.client() as c:
            for gen in range(1, 4):
                i = (k + gen) % len(names)
                c.put(payload(i, gen * 100 + k), names[i])

    def reader(k: int) -> None:
        with fed.client(via="aws-1" if k % 2 else None) as c:
            while not stop.is_set():
                data = c.cat(names[k % len(names)])
                digest, _, body = data.partition(b"\n")
                if sha(body).encode() != digest:
                    errors.append(f"torn read of {names[k % len(names)]} ({len(data)} bytes)")
                    return

    readers = [threading.Thread(target=reader, args=(k,)) for k in range(32)]
    writers = [threading.Thread(target=writer, args=(k,)) for k in range(32)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(120)
    stop.set()
    for t in readers:
        t.join(60)
    assert not errors, errors[:3]


def test_python_client_and_fsspec_pandas(fed: Federation) -> None:
    pd = pytest.importorskip("pandas")
    csv = b"sensor,value\na,1\nb,2\nc,3\n"
    assert fed.gns_bytes("put", "-", "/dp/health/day.csv", input=csv).returncode == 0
    os.environ["GNS_ETCD"] = fed.etcd_urls
    try:
        df = pd.read_csv("gns:///dp/health/day.csv")
        assert list(df["value"]) == [1, 2, 3]
        import fsspec

        with fsspec.open("gns:///dp/health/day.csv", "rb") as f:
            f.seek(7)
            assert f.read(5) == b"value"
        fs = fsspec.filesystem("gns")
        assert fs.ls("/dp/health", detail=False) == ["/dp/health/day.csv"]
        df.to_csv("gns:///dp/health/copy.csv", index=False)
        assert fs.cat_file("/dp/health/copy.csv") == csv
    finally:
        os.environ.pop("GNS_ETCD", None)
        # fsspec keeps the instances it made: their clients would follow this test's etcd
        # (retrying, and logging, once it is gone) for the rest of the session.
        from federation.fs import GnsFileSystem

        for cached in list(GnsFileSystem._cache.values()):
            if cached._client is not None:
                cached._client.close()
        GnsFileSystem.clear_instance_cache()
    with fed.client() as c:
        with c.open("/dp/health/w.bin", "wb") as w:
            for _ in range(5):
                w.write(b"z" * 300_000)
        assert c.stat("/dp/health/w.bin").size == 1_500_000
        with c.open("/dp/health/w.bin", "rb") as r:
            r.seek(1_499_990)
            assert r.read() == b"z" * 10
        assert c.resolve("/dp/health/w.bin").owner.cluster == "onprem-a"
        # Text modes, as the built-in open; a with block left by an exception commits nothing.
        with c.open("/dp/health/w.txt", "w") as t:
            t.write("caf\u00e9\n")
        with c.open("/dp/health/w.txt", "r") as rt:
            assert rt.read() == "caf\u00e9\n"
        version = c.stat("/dp/health/w.txt").version
        for mode, data in (("wb", b"partial"), ("w", "partial")):
            with pytest.raises(RuntimeError, match="changed my mind"):
                with c.open("/dp/health/w.txt", mode) as w2:
                    w2.write(data)
                    raise RuntimeError("changed my mind")
            assert c.cat("/dp/health/w.txt") == "caf\u00e9\n".encode()
            assert c.stat("/dp/health/w.txt").version == version
        with pytest.raises(RuntimeError):
            with c.open("/dp/health/never.bin", "wb") as w3:
                w3.write(b"x" * 3_000_000)  # past a chunk: the put had begun
                raise RuntimeError("no")
        with pytest.raises(FileNotFound):
            c.stat("/dp/health/never.bin")
        with pytest.raises(InvalidInput, match="unsupported mode"):
            c.open("/dp/health/w.txt", "a")


def test_owner_down_is_exit_5(fed: Federation) -> None:
    import signal

    fed.gns("volume", "create", "dpdown", "--cluster", "aws-1")
    fed.gns("mount", "add", "/dpdown", "dpdown")
    assert fed.gns_bytes("put", "-", "/dpdown/x", input=b"x").returncode == 0
    fed.kill("aws-1", signal.SIGKILL)
    try:
        fed.wait_state("aws-1", "Down", timeout=10)
        assert_error(fed.gns("cat", "/dpdown/x"), 5, "Down")
        assert_error(fed.gns("cat", "/dpdown/x", "--via", "onprem-a"), 5, "Down")
        assert_error(fed.gns_bytes("put", "-", "/dpdown/y", input=b"y"), 5, "Down")
    finally:
        fed.start("aws-1")
    assert fed.gns("cat", "/dpdown/x").stdout == "x"
