"""``python -m bench.adapters``: adapter throughput against the bare SDK, per backend.

Starts the same loopback servers as the tests (``tests/fixtures/objectstores.py``), and per
backend times, in the same process and interleaved (each rep runs the three uploads in a
rotated order, so a burst of load on the shared machine hits each one alike), for one
256 MiB object read from a file on disk, as mirroring reads a blob:

- ``raw``: the SDK's own managed upload of that file (the bare-SDK baseline);
- ``known``: the adapter's put with ``size`` and ``sha256`` given (the path mirroring
  uses: the engine knows every blob's hash from the journal);
- ``computed``: the adapter's put without a hash (it has to compute one).

Per backend it reports ``<name>_mib_s`` (median), and per rep the ratio of each adapter
put's time to the raw upload's time in that rep: ``mirror_path_ratio`` and
``computed_ratio`` as ``{median, min, max}`` (goal: mirror-path median <= 1.10), plus the
process CPU seconds per GiB of each (``cpu_s_per_gib``: every thread of this process, the
SDK's included), ``get_mib_s``, ``small_put_per_s`` (10k x 4 KiB through
``TransferPool``; ``--small 0`` skips it) and the 1-minute load average at the start of each
rep. Prints ONE JSON object on stdout; progress goes to stderr.

Each object is deleted as soon as it is timed (and read back, for ``known``), so every upload
starts from the same state: an empty prefix, the previous object's memory just freed. That
matters in a VM like this one, whose host backs guest memory on first touch and takes freed
pages back within seconds (free page reporting): memory unused for a while costs about 2 s
of system CPU per GiB to touch again (11.3 s for 6 GiB, measured), charged to whichever
upload, or server, touches it first.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from cloud_adapters.base import ObjectStore
from cloud_adapters.registry import open_store
from cloud_adapters.transfer import TransferPool
from federation.local.emulators import STARTERS, ServerHandle, ServerUnavailable

MiB = 2**20


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _raw_put(backend: str, store: ObjectStore, key: str, path: str, size: int) -> None:
    """The same upload of the file at ``path`` through the SDK object the adapter holds
    (the bare-SDK baseline)."""
    full = store._full(key)
    with open(path, "rb") as data:
        _raw_put_file(backend, store, full, data, size)


def _raw_put_file(backend: str, store: ObjectStore, full: str, data: BinaryIO,
                  size: int) -> None:
    if backend.startswith("s3"):
        from boto3.s3.transfer import TransferConfig

        from cloud_adapters.s3 import S3Store

        assert isinstance(store, S3Store)
        store._client.upload_fileobj(data, store._store_uri.container, full,
                                     Config=TransferConfig(multipart_chunksize=16 * MiB,
                                                           max_concurrency=4))
    elif backend == "gcs":
        from cloud_adapters.gcs import GCSStore

        assert isinstance(store, GCSStore)
        blob = store._bucket.blob(full, chunk_size=16 * MiB)
        blob.upload_from_file(data, size=size, checksum=None)
    elif backend == "azure":
        from cloud_adapters.azure import AzureStore

        assert isinstance(store, AzureStore)
        store._container.get_blob_client(full).upload_blob(
            data, overwrite=True, max_concurrency=4, length=size)
    else:
        from cloud_adapters.local import LocalStore

        assert isinstance(store, LocalStore)
        dest = store._path(full)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as f:
            shutil.copyfileobj(data, f, MiB)
            f.flush()
            os.fsync(f.fileno())


def _spread(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3),
            "max": round(max(xs), 3)}


def _cpu_timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, process CPU) seconds of ``fn``."""
    c = time.process_time()
    w = time.perf_counter()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def bench_backend(backend: str, store: ObjectStore, *, size_mib: int, reps: int,
                  small: int) -> dict[str, Any]:
    size = size_mib * MiB
    with tempfile.NamedTemporaryFile(prefix="gns-bench-blob-") as tf:
        h = hashlib.sha256()
        for _ in range(size_mib):
            block = os.urandom(MiB)
            h.update(block)
            tf.write(block)
        tf.flush()
        sha = h.hexdigest()
        path = tf.name

        def known(key: str) -> None:
            with open(path, "rb") as f:  # as the engine hands the adapter a blob file
                store.put(key, f, size=size, sha256=sha)

        def computed(key: str) -> None:
            with open(path, "rb") as f:
                store.put(key, f, size=size)

        kinds: dict[str, Callable[[str], None]] = {
            "raw": lambda key: _raw_put(backend, store, key, path, size),
            "known": known,
            "computed": computed,
        }
        wall: dict[str, list[float]] = {k: [] for k in kinds}
        cpu: dict[str, list[float]] = {k: [] for k in kinds}
        loads: list[float] = []
        get_t: list[float] = []
        order = list(kinds)
        for r in range(reps):
            loads.append(round(os.getloadavg()[0], 2))
            for kind in order[r % 3:] + order[:r % 3]:
                key = f"{kind}{r}"
                w, c = _cpu_timed(functools.partial(kinds[kind], key))
                wall[kind].append(w)
                cpu[kind].append(c)
                if kind == "known":
                    get_t.append(_timed(lambda: sum(len(c) for c in store.open(
                        key, chunk_size=MiB))))
                # At once, so the next upload reuses the memory this object took in the
                # server and the page cache (see the module docstring).
                store.delete(key)
            print(f"  {backend} rep {r} (load {loads[-1]}): "
                  + " ".join(f"{k} {wall[k][-1]:.2f}s/{cpu[k][-1]:.2f}cpu" for k in kinds)
                  + f" get {get_t[-1]:.2f}s", file=sys.stderr)
    out: dict[str, Any] = {
        f"{k}_mib_s": round(size_mib / statistics.median(wall[k]), 1) for k in kinds
    }
    out["mirror_path_ratio"] = _spread([a / b for a, b in zip(wall["known"], wall["raw"], strict=True)])
    out["computed_ratio"] = _spread([a / b for a, b in zip(wall["computed"], wall["raw"], strict=True)])
    out["cpu_s_per_gib"] = {k: round(statistics.median(cpu[k]) * 1024 / size_mib, 2)
                            for k in kinds}
    out["get_mib_s"] = round(size_mib / statistics.median(get_t), 1)
    if small:
        payload = os.urandom(4096)
        pool = TransferPool(workers=16)
        small_t = _timed(lambda: pool.run(lambda i: store.put(f"small/{i:05d}", payload),
                                          range(small)))
        out["small_put_per_s"] = round(small / small_t, 1)
    out.update({"object_mib": size_mib, "reps": reps, "load_1m_at_rep_start": loads})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="s3-moto,s3-seaweedfs,gcs,azure,local")
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--small", type=int, default=10_000)
    args = ap.parse_args(argv)
    out: dict[str, Any] = {"load_1m_at_start": round(os.getloadavg()[0], 2)}
    for backend in args.backends.split(","):
        print(f"{backend}...", file=sys.stderr)
        if backend == "local":
            with tempfile.TemporaryDirectory(prefix="gns-bench-") as d:
                store = open_store(f"file://{d}/store")
                store.make_container()
                out[backend] = bench_backend(backend, store, size_mib=args.size_mib,
                                             reps=args.reps, small=args.small)
            continue
        try:
            srv: ServerHandle = STARTERS[backend]()
        except ServerUnavailable as exc:
            out[backend] = {"skipped": str(exc)}
            continue
        try:
            with srv.env():
                store = open_store(srv.new_store_uri("bench"))
                out[backend] = bench_backend(backend, store, size_mib=args.size_mib,
                                             reps=args.reps, small=args.small)
        finally:
            srv.close()
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
