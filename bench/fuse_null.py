"""Which FUSE binding for ``gns fuse``: ``python -m bench.fuse_null`` prints one JSON object.

Mounts the same null file system (one file of ``--size-mib`` zeros, ``--files`` empty
files) with pyfuse3 (async, Cython over libfuse 3, trio loop) and with mfusepy (ctypes,
libfuse 3, single-threaded), and measures in a separate process what the bindings
themselves cost: sequential reads with 1 MiB blocks, cold stats (first lookup of each
file) and cached stats. No gns code runs: these are the ceilings of each binding.
"""
from __future__ import annotations

import argparse
import errno
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._util import emit, machine_info, rnd

MIB = 1 << 20


def _serve_pyfuse3(mnt: str, size: int, files: int) -> None:
    import pyfuse3
    import trio

    names = {f"f{i}".encode(): i + 3 for i in range(files)}

    class Null(pyfuse3.Operations):
        def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
            e = pyfuse3.EntryAttributes()
            e.st_ino = ino
            e.entry_timeout = e.attr_timeout = 1.0
            if ino == pyfuse3.ROOT_INODE:
                e.st_mode = stat.S_IFDIR | 0o755
            else:
                e.st_mode = stat.S_IFREG | 0o644
                e.st_size = size if ino == 2 else 0
            return e

        async def lookup(self, parent: int, name: bytes, ctx: Any = None) -> Any:
            if name == b"big":
                return self._attr(2)
            if name in names:
                return self._attr(names[name])
            raise pyfuse3.FUSEError(errno.ENOENT)

        async def getattr(self, inode: int, ctx: Any = None) -> Any:
            return self._attr(inode)

        async def open(self, inode: int, flags: int, ctx: Any) -> Any:
            return pyfuse3.FileInfo(fh=inode)

        async def read(self, fh: int, off: int, n: int) -> bytes:
            return bytes(max(0, min(n, size - off)))

    pyfuse3.init(Null(), mnt, set(pyfuse3.default_options))
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


def _serve_mfusepy(mnt: str, size: int, files: int) -> None:
    import mfusepy

    names = {f"/f{i}" for i in range(files)}

    class Null(mfusepy.Operations):
        use_ns = True

        def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
            if path == "/":
                return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
            if path == "/big":
                return {"st_mode": stat.S_IFREG | 0o644, "st_size": size, "st_nlink": 1}
            if path in names:
                return {"st_mode": stat.S_IFREG | 0o644, "st_size": 0, "st_nlink": 1}
            raise mfusepy.FuseOSError(errno.ENOENT)

        def read(self, path: str, n: int, off: int, fh: Any) -> bytes:
            return bytes(max(0, min(n, size - off)))

    mfusepy.FUSE(Null(), mnt, foreground=True, nothreads=True, attr_timeout=1.0,
                 entry_timeout=1.0)


def _measure(mnt: Path, size: int, files: int) -> dict[str, float]:
    t0 = time.perf_counter()
    with open(mnt / "big", "rb", buffering=0) as f:
        while f.read(MIB):
            pass
    read = size / MIB / (time.perf_counter() - t0)
    paths = [mnt / f"f{i}" for i in range(files)]
    t0 = time.perf_counter()
    for p in paths:
        os.stat(p)
    cold = files / (time.perf_counter() - t0)
    sample = paths[:100]
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.5:
        for p in sample:
            os.stat(p)
        n += len(sample)
    return {"read_mib_s": read, "stat_uncached_per_s": cold,
            "stat_cached_per_s": n / (time.perf_counter() - t0)}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.fuse_null", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--serve", choices=["pyfuse3", "mfusepy"], help=argparse.SUPPRESS)
    ap.add_argument("--mnt", help=argparse.SUPPRESS)
    args = ap.parse_args()
    size = args.size_mib * MIB
    if args.serve:
        serve = _serve_pyfuse3 if args.serve == "pyfuse3" else _serve_mfusepy
        serve(args.mnt, size, args.files)
        return
    out: dict[str, Any] = {"machine": machine_info(), "size_mib": args.size_mib,
                           "files": args.files}
    for binding in ("pyfuse3", "mfusepy"):
        with tempfile.TemporaryDirectory(prefix="gns-null-") as d:
            mnt = Path(d)
            proc = subprocess.Popen([sys.executable, "-m", "bench.fuse_null", "--serve", binding,
                                     "--mnt", str(mnt), "--size-mib", str(args.size_mib),
                                     "--files", str(args.files)])
            try:
                deadline = time.monotonic() + 20
                while not os.path.ismount(mnt):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{binding} did not mount")
                    time.sleep(0.05)
                for k, v in _measure(mnt, size, args.files).items():
                    out[f"{binding}_{k}"] = rnd(v, 1)
            finally:
                subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    out["pyfuse3_vs_mfusepy_read"] = rnd(out["pyfuse3_read_mib_s"] / out["mfusepy_read_mib_s"], 2)
    emit(out)


if __name__ == "__main__":
    main()
