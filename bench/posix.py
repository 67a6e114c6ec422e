"""POSIX benchmark: ``python -m bench.posix`` prints one JSON object (issue 10).

Starts a real etcd, one real ``gns controller`` (volume ``bench`` mounted at ``/bench``), a
real ``gns fuse`` mount of the namespace, SeaweedFS (S3) and ``rclone mount`` (Debian's
rclone, ``--vfs-cache-mode writes``) of a bucket on it; the same figures for both mounts:

* ``*_seq_write_mib_s``: a ``--size-mib`` file copied into the mount with 1 MiB writes,
  timed to the end of ``close()`` (gns: committed on the owner). rclone uploads after close
  (``--vfs-write-back 0s``), so its figure is timed until the object is in S3 (durable, as
  gns's is); ``rclone_close_write_mib_s`` is the time to close only.
* ``*_seq_read_mib_s``: a file of the same size put beside the mount (``Client.put`` /
  boto3), read through the mount for the first time (nothing in the page cache).
* ``put_mib_s`` / ``get_mib_s``: ``Client.put`` / ``Client.get`` (what ``gns put/get`` do;
  get fsyncs) of the same size; these and the two gns mount figures above are medians of
  ``--rounds`` interleaved rounds (the machine is shared); ``fuse_*_vs_*`` are the ratios.
  Every put, and every write through the mount, carries content of its own (the source with
  a header naming the round and the kind): blobs are content-addressed, so with one content
  for all, every read after the first read a blob already read, and its page-cache history
  decided the figure (the owner reads a cold blob's second read buffered, at about half the
  speed, and serves later reads from its page cache). Now ``get_mib_s`` and
  ``fuse_seq_read_mib_s`` are both a blob's first read, and ``get_hot_mib_s`` and
  ``fuse_seq_read_hot_mib_s`` the same two blobs' third read, from the owner's page cache
  (the mount's own cached pages of the file dropped first), with the ratio
  ``fuse_seq_read_hot_vs_get_hot``.
* ``*_stat_uncached_per_s``: ``os.stat`` of ``--files`` 4 KiB files (in 10 directories) on a
  fresh mount, each path for the first time (gns: a lookup RPC each; nothing listed before);
  ``fuse_stat_after_readdir_per_s``: the same after one directory listing (what ``ls -l``,
  ``find``, ``rsync`` do); ``*_stat_cached_per_s``: the same paths again within the
  attribute timeout.
* ``*_create_per_s``: create + write 4 KiB + close of ``--creates`` new files, one thread;
  ``*_create_parallel_per_s``: the same from 8 threads.
* ``*_ls_lR_s``: ``ls -lR`` over the ``--files`` tree on a fresh mount (``--files 10000``
  gives the issue's ``ls_lR_10k`` figure).

Defaults are small (256 MiB, 2,000 files) so a run takes about two minutes; ``--size-mib
1024 --files 10000`` is the issue's full size. Everything started is stopped by PID.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._util import (
    MIB,
    at_least,
    emit,
    log,
    machine_info,
    median,
    rnd,
    run_threads,
    start_etcd,
    stop_process,
    terminate_on_sigterm,
)
from federation.fuse.mountinfo import answers
from federation.local.harness import Federation

RCLONE = shutil.which("rclone") or "rclone"
GOALS = {
    "fuse_seq_read_vs_get": ">= 0.8",
    "fuse_seq_write_vs_put": ">= 0.8",
    "fuse_stat_cached_per_s": ">= 20000",
    "fuse_stat_uncached_per_s": ">= 5000",
    "fuse_create_per_s": ">= 1000",
    "every fuse figure": ">= rclone's",
}


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _unmount(proc: subprocess.Popen[Any] | None, mnt: Path) -> None:
    stop_process(proc, 20)
    if os.path.ismount(mnt):
        subprocess.run(["fusermount3", "-uz", str(mnt)], check=False, capture_output=True)


class Mounted:
    """A mount process started with ``argv`` at ``point`` (stopped by PID); ``mnt`` is where
    global paths are laid out (the point itself, or a parent for an rclone bucket mount)."""

    def __init__(self, argv: list[str], mnt: Path, env: dict[str, str], log_file: Path,
                 layout: Path | None = None) -> None:
        mnt.mkdir(parents=True, exist_ok=True)
        self.point = mnt
        self.mnt = layout or mnt
        with open(log_file, "ab") as err:
            self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                         stdin=subprocess.DEVNULL)
        _wait(lambda: self.proc.poll() is not None or answers(mnt), 60, f"mount at {mnt}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"mount at {mnt} failed: {log_file.read_text()[-2000:]}")

    def stop(self) -> None:
        _unmount(self.proc, self.point)


def _write_through(src: Path, dst: Path) -> float:
    t0 = time.perf_counter()
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while b := fi.read(MIB):
            fo.write(b)
    return time.perf_counter() - t0


def _read_through(path: Path) -> float:
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.read(MIB):
            pass
    return time.perf_counter() - t0


def _stats(paths: list[Path]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        os.stat(p)
    return len(paths) / (time.perf_counter() - t0)


def _cached_stats(paths: list[Path], seconds: float = 0.5) -> float:
    sample = paths[:500]
    for p in sample:
        os.stat(p)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for p in sample[:100]:
            os.stat(p)
        n += 100
    return n / (time.perf_counter() - t0)


def _creates(base: Path, n: int, threads: int) -> float:
    base.mkdir(parents=True, exist_ok=True)
    payload = os.urandom(4096)

    def work(k: int) -> None:
        for i in range(k, n, threads):
            with open(base / f"c{i}", "wb") as f:
                f.write(payload)

    return n / run_threads(work, threads)


def _ls_lr(path: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["ls", "-lR", str(path)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _tree_paths(root: Path, files: int) -> list[Path]:
    return [root / f"d{i % 10}" / f"f{i}" for i in range(files)]


def _own_content(src: Path, r: int, kind: str) -> Path:
    """``src`` with a header naming round ``r`` and ``kind``: content no other put has."""
    with open(src, "r+b") as f:
        f.write(f"{r:08d}-{kind:<23}".encode()[:32])
    return src


def _drop_cached(path: Path) -> None:
    """Drop the mount's cached pages of ``path`` (the owner's page cache is left alone)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _large_round(c: Any, mnt: Path, big: Path, work: Path, r: int) -> dict[str, float]:
    """Seconds for one round of: Client put, Client get (+fsync), a write through the mount
    (to close, i.e. committed), a first read through the mount of a file put beside it; then
    the get and the mount's read again from the owner's page cache (``*_hot``)."""
    out: dict[str, float] = {}
    got = work / "got.bin"
    t0 = time.perf_counter()
    c.put(_own_content(big, r, "put"), f"/bench/io/get{r}.bin")
    out["put_mib_s"] = time.perf_counter() - t0
    # Put early: the mount learns of a file put beside it from the change stream (SPEC §12).
    c.put(_own_content(big, r, "read"), f"/bench/io/read{r}.bin")
    t0 = time.perf_counter()
    c.get(f"/bench/io/get{r}.bin", got)
    out["get_mib_s"] = time.perf_counter() - t0
    (mnt / "bench/io").mkdir(parents=True, exist_ok=True)
    out["fuse_seq_write_mib_s"] = _write_through(_own_content(big, r, "write"), mnt / f"bench/io/seq{r}.bin")
    read_through = mnt / f"bench/io/read{r}.bin"
    out["fuse_seq_read_mib_s"] = _read_through(read_through)
    # Second reads fill the owner's page cache (untimed); the third ones come from it.
    c.get(f"/bench/io/get{r}.bin", got)
    _drop_cached(read_through)
    _read_through(read_through)
    t0 = time.perf_counter()
    c.get(f"/bench/io/get{r}.bin", got)
    out["get_hot_mib_s"] = time.perf_counter() - t0
    _drop_cached(read_through)
    out["fuse_seq_read_hot_mib_s"] = _read_through(read_through)
    got.unlink()
    return out


def _measure_mount(mount: Callable[[], Mounted], tree: Path, files: int, rounds_dir: Path,
                   big_local: Path, read_name: str, creates: int,
                   after_write: Callable[[str], None] | None = None,
                   large: bool = True) -> dict[str, float]:
    """The per-mount figures (each fresh-mount phase remounts)."""
    out: dict[str, float] = {}
    m = mount()
    try:
        rel = rounds_dir.relative_to(rounds_dir.anchor)
        base = m.mnt / rel
        base.mkdir(parents=True, exist_ok=True)
        if large:
            t_write = _write_through(big_local, base / "seq.bin")
            t_durable = t_write
            if after_write is not None:
                t0 = time.perf_counter()
                after_write("seq.bin")
                t_durable += time.perf_counter() - t0
            size_mib = big_local.stat().st_size / MIB
            out["seq_write_mib_s"] = size_mib / t_durable
            out["close_write_mib_s"] = size_mib / t_write
            out["seq_read_mib_s"] = size_mib / _read_through(m.mnt / rel / read_name)
        out["create_per_s"] = _creates(base / "creates1", creates, 1)
        out["create_parallel_per_s"] = _creates(base / "creates8", creates, 8)
    finally:
        m.stop()
    m = mount()
    try:
        paths = _tree_paths(m.mnt / tree.relative_to(tree.anchor), files)
        out["stat_uncached_per_s"] = _stats(paths)
        out["stat_cached_per_s"] = _cached_stats(paths)
    finally:
        m.stop()
    m = mount()
    try:
        treem = m.mnt / tree.relative_to(tree.anchor)
        for d in range(10):
            os.listdir(treem / f"d{d}")
        out["stat_after_readdir_per_s"] = _stats(_tree_paths(treem, files))
    finally:
        m.stop()
    m = mount()
    try:
        out["ls_lR_s"] = _ls_lr(m.mnt / tree.relative_to(tree.anchor))
    finally:
        m.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.posix", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=256, help="large file size (issue: 1024)")
    ap.add_argument("--files", type=int, default=2000, help="stat / ls -lR tree (issue: 10000)")
    ap.add_argument("--creates", type=int, default=300, help="files created per create figure")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of large files")
    ap.add_argument("--skip-rclone", action="store_true")
    args = ap.parse_args()
    terminate_on_sigterm()
    started = time.monotonic()
    result: dict[str, Any] = {"machine": machine_info(), "size_mib": args.size_mib,
                              "files": args.files, "creates": args.creates}
    work = Path(tempfile.mkdtemp(prefix="gns-bench-posix-"))
    srv = None
    try:
        with start_etcd(work) as etcd:
            fed = Federation(etcd, work / "fed", lease_ttl=5)
            try:
                fed.add("onprem-a", region="dc1")
                assert fed.gns("volume", "create", "bench", "--cluster", "onprem-a").returncode == 0
                assert fed.gns("mount", "add", "/bench", "bench").returncode == 0
                big = work / "big.bin"
                with open(big, "wb") as f:
                    for _ in range(args.size_mib):
                        f.write(os.urandom(MIB))
                def gns_mount() -> Mounted:
                    return Mounted([sys.executable, "-m", "federation.cli.main", "fuse",
                                    str(work / "gmnt"), "--cache-dir", str(work / "gcache")],
                                   work / "gmnt", fed.env(), work / "gfuse.log")

                with fed.client() as c:
                    log(f"large files, {args.size_mib} MiB x {args.rounds} rounds: Client "
                        "put/get and the mount, interleaved (the machine is shared: noisy)")
                    figures: dict[str, list[float]] = {}
                    m = gns_mount()
                    try:
                        for r in range(args.rounds):
                            for name, seconds in _large_round(c, m.mnt, big, work, r).items():
                                figures.setdefault(name, []).append(args.size_mib / seconds)
                    finally:
                        m.stop()
                    for name, vals in figures.items():
                        result[name] = rnd(median(vals), 1)
                    log(f"populating {args.files} files for stat / ls -lR")
                    payload = b"x" * 4096
                    for i in range(args.files):
                        c.put(payload, f"/bench/tree/d{i % 10}/f{i}")

                log("gns fuse figures")
                g = _measure_mount(gns_mount, Path("/bench/tree"), args.files,
                                   Path("/bench/io"), big, "read0.bin", args.creates, large=False)
                for k, v in g.items():
                    result[f"fuse_{k}"] = rnd(v, 1 if "mib" in k or "per_s" in k else 3)
                if not args.skip_rclone:
                    srv = _start_seaweed()
                    log("rclone mount figures")
                    rc = _rclone_figures(srv, work, big, args)
                    for k, v in rc.items():
                        result[f"rclone_{k}"] = rnd(v, 1 if "mib" in k or "per_s" in k else 3)
            finally:
                fed.stop_all()
    finally:
        if srv is not None:
            srv.stop()
            srv.close()
        shutil.rmtree(work, ignore_errors=True)
    result["fuse_ls_lR_10k_s" if args.files == 10000 else "fuse_ls_lR_s_for_files"] = result.get("fuse_ls_lR_s")
    result["fuse_seq_read_vs_get"] = rnd(result["fuse_seq_read_mib_s"] / result["get_mib_s"], 2)
    result["fuse_seq_read_hot_vs_get_hot"] = rnd(result["fuse_seq_read_hot_mib_s"] / result["get_hot_mib_s"], 2)
    result["fuse_seq_write_vs_put"] = rnd(result["fuse_seq_write_mib_s"] / result["put_mib_s"], 2)
    vs_rclone: dict[str, float] = {}
    for k in ("seq_read_mib_s", "seq_write_mib_s", "stat_cached_per_s", "stat_uncached_per_s",
              "stat_after_readdir_per_s", "create_per_s", "create_parallel_per_s"):
        if f"rclone_{k}" in result and result[f"rclone_{k}"]:
            vs_rclone[k] = rnd(result[f"fuse_{k}"] / result[f"rclone_{k}"], 2)
    if "rclone_ls_lR_s" in result:
        vs_rclone["ls_lR_speedup"] = rnd(result["rclone_ls_lR_s"] / result["fuse_ls_lR_s"], 2)
    result["fuse_vs_rclone"] = vs_rclone
    result["goals"] = GOALS
    result["met"] = {
        "fuse_seq_read_vs_get": at_least(result["fuse_seq_read_vs_get"], 0.8),
        "fuse_seq_write_vs_put": at_least(result["fuse_seq_write_vs_put"], 0.8),
        "fuse_stat_cached_per_s": at_least(result.get("fuse_stat_cached_per_s"), 20000),
        "fuse_stat_uncached_per_s": at_least(result.get("fuse_stat_uncached_per_s"), 5000),
        "fuse_create_per_s": at_least(result.get("fuse_create_per_s"), 1000),
        "every fuse figure >= rclone's": bool(vs_rclone) and all(v >= 1 for v in vs_rclone.values()),
    }
    result["notes"] = (
        "etcd + 1 controller on 127.0.0.1; gns fuse (pyfuse3) of the whole namespace; rclone "
        "mount --vfs-cache-mode writes --vfs-write-back 0s of a SeaweedFS bucket with the same "
        "tree. Each stat/ls phase runs on a fresh mount. rclone's write is timed until the "
        "object is in S3 (its close returns before the upload). Machine shared with other "
        f"jobs (load {result['machine']['loadavg_1m_at_start']} on {result['machine']['cpus']} "
        "cores at start): figures are noisy."
    )
    result["runtime_s"] = rnd(time.monotonic() - started, 1)
    emit(result)


def _start_seaweed() -> Any:
    from federation.local.emulators import start_seaweed

    return start_seaweed()


def _rclone_figures(srv: Any, work: Path, big: Path, args: argparse.Namespace) -> dict[str, float]:
    import boto3

    bucket = "posix-bench"
    s3 = boto3.client("s3", endpoint_url=srv.endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(str(big), bucket, "io/read.bin")
    payload = b"x" * 4096
    for i in range(args.files):
        s3.put_object(Bucket=bucket, Key=f"tree/d{i % 10}/f{i}", Body=payload)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "RCLONE_CONFIG": str(work / "absent.conf"),
        "RCLONE_CONFIG_GNSS3_TYPE": "s3",
        "RCLONE_CONFIG_GNSS3_PROVIDER": "Other",
        "RCLONE_CONFIG_GNSS3_ENDPOINT": srv.endpoint,
        "RCLONE_CONFIG_GNSS3_ACCESS_KEY_ID": "testing",
        "RCLONE_CONFIG_GNSS3_SECRET_ACCESS_KEY": "testing",
        "RCLONE_CONFIG_GNSS3_REGION": "us-east-1",
        "RCLONE_CONFIG_GNSS3_FORCE_PATH_STYLE": "true",
    }
    mnt = work / "rmnt"

    def mount() -> Mounted:
        shutil.rmtree(work / "rcache", ignore_errors=True)
        # The bucket's keys io/..., tree/... appear where gns shows /bench/io/..., /bench/tree/...
        return Mounted([RCLONE, "mount", f"gnss3:{bucket}", str(mnt / "bench"),
                        "--vfs-cache-mode", "writes", "--vfs-write-back", "0s",
                        "--cache-dir", str(work / "rcache"), "--log-level", "ERROR"],
                       mnt / "bench", env, work / "rclone.log", layout=mnt)

    def durable(name: str) -> None:
        def there() -> bool:
            try:
                return int(s3.head_object(Bucket=bucket, Key=f"io/{name}")["ContentLength"]) \
                    == big.stat().st_size
            except Exception:
                return False
        _wait(there, 600, "rclone upload")

    return _measure_mount(mount, Path("/bench/tree"), args.files, Path("/bench/io"), big,
                          "read.bin", args.creates, after_write=durable)


if __name__ == "__main__":
    main()
