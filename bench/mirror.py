"""Mirror benchmark: ``python -m bench.mirror`` prints ONE JSON object (gns vs rclone).

Both tools sync the same data to the same S3 server (SeaweedFS ``weed mini`` on loopback,
started and stopped here by PID through ``federation.local.emulators``): rclone (Debian's
``/usr/bin/rclone``, configured through ``RCLONE_CONFIG_GNSS3_*`` variables, no config file)
from a plain local directory, gns from a ``VolumeStorage`` holding the same files, through the
mirror engine and ``ObjectStoreTarget`` in this process (``gns_path``).

* full sync: 2,000 files totalling 1 GiB to an empty prefix (median of ``--full-reps``).
* incremental: 20,000 files already mirrored by both; 1% rewritten (same size, new bytes);
  time to bring the target up to date (median of ``--inc-reps``). gns reads the journal;
  rclone relists both sides (with its defaults, and with ``--fast-list --checksum``: the
  faster variant is the one the ratio is computed against).
* ``continuous_lag_p99_s``: end to end through real controllers (``bench.mirror_lag``): 50
  writes/s for 60 s into a volume mirrored continuously to a replica cluster and to S3.

It must never touch anything outside its temporary directory and its own server, and it
stops every process it started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from cloud_adapters.registry import open_store
from federation.local.emulators import ServerHandle, start_seaweed
from federation.storage import FileMeta, VolumeStorage
from mirroring.engine import run_pass
from mirroring.targets import ObjectStoreTarget

MIB = 1 << 20
RCLONE = shutil.which("rclone") or "/usr/bin/rclone"


def _write_tree(root: Path, n: int, size: int, vol: VolumeStorage) -> None:
    """n files of ``size`` bytes in ``root`` and, as ONE version, in ``vol``."""
    metas: list[FileMeta] = []
    block = os.urandom(max(size, 64))
    for i in range(n):
        rel = f"d{i % 50:02d}/f{i:05d}.bin"
        data = os.urandom(16) + block[16:size]
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        sha = vol.ingest_blob([data])
        metas.append(FileMeta(rel, len(data), sha, p.stat().st_mtime, 0))
    vol.apply_changes(metas, [], vol.version + 1)


def _rewrite(root: Path, vol: VolumeStorage, paths: list[str]) -> None:
    metas: list[FileMeta] = []
    for rel in paths:
        p = root / rel
        data = os.urandom(p.stat().st_size)
        p.write_bytes(data)
        os.utime(p, (time.time() + 2, time.time() + 2))  # a distinct mtime for rclone
        metas.append(FileMeta(rel, len(data), vol.ingest_blob([data]), p.stat().st_mtime, 0))
    vol.apply_changes(metas, [], vol.version + 1)


@contextlib.contextmanager
def _rclone_env(srv: ServerHandle, cfg_dir: Path) -> Iterator[dict[str, str]]:
    # The AWS SDK inside rclone refuses a custom CA bundle on its HTTP transport; the server
    # is plain HTTP on loopback, so no AWS_* variable of ours is passed on.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "RCLONE_CONFIG": str(cfg_dir / "absent.conf"),
        "RCLONE_CONFIG_GNSS3_TYPE": "s3",
        "RCLONE_CONFIG_GNSS3_PROVIDER": "Other",
        "RCLONE_CONFIG_GNSS3_ENDPOINT": srv.endpoint,
        "RCLONE_CONFIG_GNSS3_ACCESS_KEY_ID": "testing",
        "RCLONE_CONFIG_GNSS3_SECRET_ACCESS_KEY": "testing",
        "RCLONE_CONFIG_GNSS3_REGION": "us-east-1",
        "RCLONE_CONFIG_GNSS3_FORCE_PATH_STYLE": "true",
    }
    yield env


def _rclone(env: dict[str, str], src: Path, uri: str, workers: int, *extra: str) -> float:
    bucket_path = uri.split("://", 1)[1]
    argv = [RCLONE, "sync", str(src), f"gnss3:{bucket_path}", "--transfers", str(workers),
            "--checkers", str(workers), "--log-level", "ERROR", *extra]
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _gns(vol: VolumeStorage, srv: ServerHandle, uri: str, workers: int,
         target: ObjectStoreTarget | None = None) -> tuple[float, ObjectStoreTarget, int]:
    if target is None:
        with srv.env():
            store = open_store(uri)
            store.exists("warm-up")
        target = ObjectStoreTarget(store, uri, volume=vol.name)
    t0 = time.perf_counter()
    r = run_pass(vol, target, workers=workers)
    dt = time.perf_counter() - t0
    assert r.committed
    return dt, target, r.files_copied


def _count(srv: ServerHandle, uri: str) -> int:
    with srv.env():
        store = open_store(uri)
        return sum(1 for i in store.list() if not i.key.startswith(".gns/"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full-files", type=int, default=2000)
    ap.add_argument("--full-mib", type=int, default=1024)
    ap.add_argument("--full-reps", type=int, default=2)
    ap.add_argument("--inc-files", type=int, default=20000)
    ap.add_argument("--inc-size", type=int, default=4096)
    ap.add_argument("--inc-reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--skip-full", action="store_true", help="only the 20k-file figures")
    ap.add_argument("--skip-lag", action="store_true", help="no continuous_lag (controllers)")
    args = ap.parse_args()
    loadavg = os.getloadavg()[0]

    work = Path(tempfile.mkdtemp(prefix="gns-bench-mirror-"))
    srv = start_seaweed()
    out: dict[str, object] = {}
    try:
        with _rclone_env(srv, work) as renv:
            # ---- full sync
            full_dir = work / "full-src"
            full_vol = VolumeStorage.open(work / "full-vol", "bench-full", create=True)
            size = args.full_mib * MIB // args.full_files
            _write_tree(full_dir, args.full_files, size, full_vol)
            gns_full, rc_full = [], []
            for _ in range(0 if args.skip_full else args.full_reps):
                uri = srv.new_store_uri("full")
                dt, _, n = _gns(full_vol, srv, uri, args.workers)
                assert n == args.full_files
                gns_full.append(dt)
                uri = srv.new_store_uri("full")
                rc_full.append(_rclone(renv, full_dir, uri, args.workers))
                assert _count(srv, uri) == args.full_files
            full_vol.close()
            shutil.rmtree(full_dir)
            shutil.rmtree(work / "full-vol")

            # ---- incremental
            inc_dir = work / "inc-src"
            inc_vol = VolumeStorage.open(work / "inc-vol", "bench-inc", create=True)
            _write_tree(inc_dir, args.inc_files, args.inc_size, inc_vol)
            g_uri, r_uri = srv.new_store_uri("inc"), srv.new_store_uri("inc")
            r2_uri = srv.new_store_uri("inc")
            initial_gns, target, _ = _gns(inc_vol, srv, g_uri, args.workers)
            initial_rc = _rclone(renv, inc_dir, r_uri, args.workers)
            _rclone(renv, inc_dir, r2_uri, args.workers, "--fast-list", "--checksum")
            all_paths = sorted(p.relative_to(inc_dir).as_posix()
                               for p in inc_dir.rglob("*.bin"))
            changed = max(1, args.inc_files // 100)
            gns_inc, rc_inc, rc_inc_fast = [], [], []
            for rep in range(args.inc_reps):
                _rewrite(inc_dir, inc_vol, all_paths[rep::args.inc_reps][:changed])
                dt, _, n = _gns(inc_vol, srv, g_uri, args.workers, target)
                assert n == changed, n
                gns_inc.append(dt)
                rc_inc.append(_rclone(renv, inc_dir, r_uri, args.workers))
                rc_inc_fast.append(_rclone(renv, inc_dir, r2_uri, args.workers,
                                           "--fast-list", "--checksum"))
            inc_vol.close()
            # what the last incremental pass rewrote at the commit point
            manifest_bytes = target.store.stat(".gns/manifest.json").size

        med = statistics.median
        full_s = med(gns_full) if gns_full else float("nan")
        rclone_full_s = med(rc_full) if rc_full else float("nan")
        inc_s = med(gns_inc)
        rc_default, rc_fast = med(rc_inc), med(rc_inc_fast)
        rclone_inc_s = min(rc_default, rc_fast)
        out = {
            "server": "SeaweedFS weed mini (S3) on 127.0.0.1",
            "gns_path": "engine in-process (mirroring.engine.run_pass + ObjectStoreTarget) "
                        "from a VolumeStorage",
            "rclone": subprocess.run([RCLONE, "version"], capture_output=True, text=True,
                                     check=False).stdout.splitlines()[0],
            "loadavg_1m_at_start": round(loadavg, 2),
            "workers": args.workers,
            "rclone_flags": f"sync --transfers {args.workers} --checkers {args.workers}",
            "full_files": args.full_files,
            "full_bytes": args.full_files * size,
            "full_sync_s": round(full_s, 3),
            "rclone_full_sync_s": round(rclone_full_s, 3),
            "full_sync_ratio_vs_rclone": round(full_s / rclone_full_s, 3),
            "full_sync_runs_s": [round(x, 3) for x in gns_full],
            "rclone_full_sync_runs_s": [round(x, 3) for x in rc_full],
            "inc_files": args.inc_files,
            "inc_file_size": args.inc_size,
            "inc_changed_files": changed,
            "initial_sync_20k_s": round(initial_gns, 3),
            "rclone_initial_sync_20k_s": round(initial_rc, 3),
            "incremental_s": round(inc_s, 3),
            "rclone_incremental_s": round(rclone_inc_s, 3),
            "rclone_incremental_default_s": round(rc_default, 3),
            "rclone_incremental_fastlist_checksum_s": round(rc_fast, 3),
            "incremental_speedup_vs_rclone": round(rclone_inc_s / inc_s, 2),
            "incremental_runs_s": [round(x, 3) for x in gns_inc],
            "rclone_incremental_runs_s": [round(x, 3) for x in rc_inc],
            "rclone_incremental_fastlist_runs_s": [round(x, 3) for x in rc_inc_fast],
            "manifest_object_bytes_after_incremental": manifest_bytes,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        if not args.skip_lag:
            from bench.mirror_lag import measure

            lag = measure(dict(srv.env_vars), srv.new_store_uri("lag"), seconds=60, rate=50)
            out["continuous_lag_p99_s"] = lag["continuous_lag_p99_s"]
            out["continuous_lag"] = lag
    finally:
        srv.close()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
