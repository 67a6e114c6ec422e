"""Micro-benchmark of volume storage: ``python -m bench.storage`` prints one JSON object.

Measures a large put and get through ``VolumeStorage`` against plain copies of the same file
on the same disk, and the rate of small (4 KiB) durable puts. It must never touch etcd or the
network, and it cleans up everything it writes.

Keys: ``put_1gib_mib_s`` (stream, hash, fsync, commit), ``get_1gib_mib_s`` (stream the blob
back), ``cp_1gib_mib_s`` (``cp`` then fsync of the copy: the same durability as a put),
``cp_nosync_1gib_mib_s`` (``cp`` alone, mostly page cache), ``small_put_per_s``,
``peak_rss_mib`` (of this process: stays flat whatever the file size), ``put_cpu_s_per_gib`` and
``small_put_cpu_ms`` (this process's CPU, user + system: robust on a busy machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from federation.storage import VolumeStorage

MIB = 1 << 20


def _make_source(path: Path, size_mib: int) -> None:
    block = os.urandom(4 * MIB)
    with open(path, "wb") as f:
        # distinct blocks, cheap to generate
        f.writelines(block[:-8] + os.urandom(8) for _ in range(size_mib // 4))
        f.flush()
        os.fsync(f.fileno())


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def run(workdir: Path, size_mib: int, small_seconds: float) -> dict[str, float]:
    load = os.getloadavg()[0]
    src = workdir / "source.bin"
    _make_source(src, size_mib)
    vol = VolumeStorage.open(workdir / "vol", "bench", create=True)
    try:
        t0, cpu0 = time.perf_counter(), time.process_time()
        with open(src, "rb", buffering=0) as f, vol.writer("big.bin") as w:
            while chunk := f.read(4 * MIB):
                w.write(chunk)
            w.commit()
        put_s, put_cpu = time.perf_counter() - t0, time.process_time() - cpu0

        t0 = time.perf_counter()
        n = 0
        for chunk in vol.read("big.bin", chunk_size=4 * MIB):
            n += len(chunk)
        get_s = time.perf_counter() - t0
        assert n == size_mib * MIB

        dst = workdir / "copy.bin"
        t0 = time.perf_counter()
        subprocess.run(["cp", str(src), str(dst)], check=True)
        cp_nosync_s = time.perf_counter() - t0
        _fsync_file(dst)
        cp_s = time.perf_counter() - t0
        dst.unlink()

        small = os.urandom(4096)
        count = 0
        t0, cpu0 = time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < small_seconds:
            vol.put_bytes(f"small/{count // 1000}/{count}", small[:-8] + count.to_bytes(8, "big"))
            count += 1
        small_s, small_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        vol.close()
    return {
        "size_mib": size_mib,
        "put_1gib_mib_s": round(size_mib / put_s, 1),
        "put_cpu_s_per_gib": round(put_cpu * 1024 / size_mib, 2),
        "get_1gib_mib_s": round(size_mib / get_s, 1),
        "cp_1gib_mib_s": round(size_mib / cp_s, 1),
        "cp_nosync_1gib_mib_s": round(size_mib / cp_nosync_s, 1),
        "put_vs_cp_ratio": round(cp_s / put_s, 2),
        "small_put_per_s": round(count / small_s, 1),
        "small_put_cpu_ms": round(small_cpu * 1000 / max(1, count), 3),
        "loadavg_1m_at_start": round(load, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.storage", description=__doc__)
    p.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir)")
    p.add_argument("--size-mib", type=int, default=1024, help="large file size (MiB)")
    p.add_argument("--small-seconds", type=float, default=5.0, help="duration of small puts")
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="gns-bench-storage-", dir=args.dir))
    try:
        print(json.dumps(run(workdir, args.size_mib, args.small_seconds)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
