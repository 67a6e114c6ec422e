"""``python -m bench.adapters``: adapter throughput against the bare SDK, per backend.

Starts the same loopback servers as the tests (``tests/fixtures/objectstores.py``), and per
backend measures, as medians of ``--reps`` runs in the same process: ``put_mib_s`` and
``get_mib_s`` for one 256 MiB object (sha256 computed by the adapter, the default path),
``put_known_sha_mib_s`` (same, sha256 supplied, as mirroring does), ``small_put_per_s``
(10k x 4 KiB through ``TransferPool``), ``raw_sdk_put_mib_s`` (the same 256 MiB upload by
the SDK's own managed call), and ``adapter_overhead_ratio`` = raw / adapter put time - 1
(<= 0.10 is the goal). Prints ONE JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from cloud_adapters.base import ObjectStore
from cloud_adapters.registry import open_store
from cloud_adapters.transfer import TransferPool
from federation.local.emulators import STARTERS, ServerHandle, ServerUnavailable

MiB = 2**20


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _raw_put(backend: str, store: ObjectStore, key: str, data: bytes) -> None:
    """The same upload through the SDK object the adapter holds (the bare-SDK baseline)."""
    full = store._full(key)
    if backend.startswith("s3"):
        from boto3.s3.transfer import TransferConfig

        from cloud_adapters.s3 import S3Store

        assert isinstance(store, S3Store)
        store._client.upload_fileobj(io.BytesIO(data), store._store_uri.container, full,
                                     Config=TransferConfig(multipart_chunksize=16 * MiB,
                                                           max_concurrency=4))
    elif backend == "gcs":
        from cloud_adapters.gcs import GCSStore

        assert isinstance(store, GCSStore)
        blob = store._bucket.blob(full, chunk_size=16 * MiB)
        blob.upload_from_file(io.BytesIO(data), size=len(data), checksum=None)
    elif backend == "azure":
        from cloud_adapters.azure import AzureStore

        assert isinstance(store, AzureStore)
        store._container.get_blob_client(full).upload_blob(
            data, overwrite=True, max_concurrency=4, length=len(data))
    else:
        from cloud_adapters.local import LocalStore

        assert isinstance(store, LocalStore)
        path = store._path(full)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def bench_backend(backend: str, store: ObjectStore, *, size_mib: int, reps: int,
                  small: int) -> dict[str, Any]:
    data = os.urandom(size_mib * MiB)
    sha = hashlib.sha256(data).hexdigest()
    put_t, put_sha_t, get_t, raw_t = [], [], [], []
    for r in range(reps):
        raw_t.append(_timed(lambda: _raw_put(backend, store, f"raw{r}", data)))
        put_t.append(_timed(lambda: store.put(f"big{r}", data)))
        put_sha_t.append(_timed(lambda: store.put(f"bigsha{r}", data, sha256=sha)))
        get_t.append(_timed(lambda: sum(len(c) for c in store.open(f"big{r}", chunk_size=MiB))))
        store.delete_many([f"raw{r}", f"bigsha{r}"])
        print(f"  {backend} rep {r}: raw {raw_t[-1]:.2f}s put {put_t[-1]:.2f}s "
              f"put+sha {put_sha_t[-1]:.2f}s get {get_t[-1]:.2f}s", file=sys.stderr)
    payload = os.urandom(4096)
    pool = TransferPool(workers=16)
    small_t = _timed(lambda: pool.run(lambda i: store.put(f"small/{i:05d}", payload),
                                      range(small)))
    mp = statistics.median(put_t)
    mr = statistics.median(raw_t)
    return {
        "put_mib_s": round(size_mib / mp, 1),
        "put_known_sha_mib_s": round(size_mib / statistics.median(put_sha_t), 1),
        "get_mib_s": round(size_mib / statistics.median(get_t), 1),
        "small_put_per_s": round(small / small_t, 1),
        "raw_sdk_put_mib_s": round(size_mib / mr, 1),
        "adapter_overhead_ratio": round(mp / mr - 1.0, 3),
        "object_mib": size_mib,
        "reps": reps,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="s3-moto,s3-seaweedfs,gcs,azure,local")
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--small", type=int, default=10_000)
    args = ap.parse_args(argv)
    out: dict[str, Any] = {}
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
