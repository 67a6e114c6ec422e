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
* Requests in flight: gns copies at most ``--workers`` large files at once and keeps up to
  ``--small-workers`` (default 4 x workers) requests in flight for files under 1 MiB
  (``mirroring.engine.SMALL_FILE``); rclone gets ``--transfers`` and ``--checkers`` equal to
  ``--small-workers`` in the same run, so both tools have the same number of requests in
  flight on these files.
* CPU: each figure also has the CPU seconds of the tool itself (gns: this process's
  ``process_time`` over the pass; rclone: its child rusage), and the 1-minute load average
  at the start of each phase, since the machine may be shared.
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
from typing import Any

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


CPU: list[dict[str, Any]] = []
"""One record per timed run: tool, phase, wall and CPU seconds, load at its start."""


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _rclone(env: dict[str, str], src: Path, uri: str, transfers: int, *extra: str,
            phase: str = "") -> float:
    bucket_path = uri.split("://", 1)[1]
    argv = [RCLONE, "sync", str(src), f"gnss3:{bucket_path}", "--transfers", str(transfers),
            "--checkers", str(transfers), "--log-level", "ERROR", *extra]
    load, c0, t0 = os.getloadavg()[0], _children_cpu(), time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdin=subprocess.DEVNULL)
    dt = time.perf_counter() - t0
    CPU.append({"tool": "rclone" + ("-fast" if extra else ""), "phase": phase,
                "wall_s": round(dt, 3), "cpu_s": round(_children_cpu() - c0, 3),
                "load_1m": round(load, 2)})
    return dt


def _gns(vol: VolumeStorage, srv: ServerHandle, uri: str, workers: int, small_workers: int,
         target: ObjectStoreTarget | None = None, phase: str = ""
         ) -> tuple[float, ObjectStoreTarget, int]:
    if target is None:
        with srv.env():
            store = open_store(uri)
            store.exists("warm-up")
        target = ObjectStoreTarget(store, uri, volume=vol.name)
    load, c0, t0 = os.getloadavg()[0], time.process_time(), time.perf_counter()
    r = run_pass(vol, target, workers=workers, small_workers=small_workers)
    dt = time.perf_counter() - t0
    CPU.append({"tool": "gns", "phase": phase, "wall_s": round(dt, 3),
                "cpu_s": round(time.process_time() - c0, 3), "load_1m": round(load, 2)})
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
    ap.add_argument("--small-workers", type=int, default=None,
                    help="requests in flight for small files (default 4 x workers); "
                         "rclone gets the same --transfers/--checkers")
    ap.add_argument("--skip-full", action="store_true", help="only the 20k-file figures")
    ap.add_argument("--skip-lag", action="store_true", help="no continuous_lag (controllers)")
    args = ap.parse_args()
    loadavg = os.getloadavg()[0]
    small = args.small_workers or 4 * args.workers

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
                dt, _, n = _gns(full_vol, srv, uri, args.workers, small, phase="full")
                assert n == args.full_files
                gns_full.append(dt)
                uri = srv.new_store_uri("full")
                rc_full.append(_rclone(renv, full_dir, uri, small, phase="full"))
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
            initial_gns, target, _ = _gns(inc_vol, srv, g_uri, args.workers, small,
                                          phase="initial")
            initial_rc = _rclone(renv, inc_dir, r_uri, small, phase="initial")
            _rclone(renv, inc_dir, r2_uri, small, "--fast-list", "--checksum",
                    phase="initial")
            all_paths = sorted(p.relative_to(inc_dir).as_posix()
                               for p in inc_dir.rglob("*.bin"))
            changed = max(1, args.inc_files // 100)
            gns_inc, rc_inc, rc_inc_fast = [], [], []
            for rep in range(args.inc_reps):
                _rewrite(inc_dir, inc_vol, all_paths[rep::args.inc_reps][:changed])
                dt, _, n = _gns(inc_vol, srv, g_uri, args.workers, small, target,
                                phase="incremental")
                assert n == changed, n
                gns_inc.append(dt)
                rc_inc.append(_rclone(renv, inc_dir, r_uri, small, phase="incremental"))
                rc_inc_fast.append(_rclone(renv, inc_dir, r2_uri, small,
                                           "--fast-list", "--checksum", phase="incremental"))
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
            "gns_small_requests_in_flight": small,
            "rclone_flags": f"sync --transfers {small} --checkers {small}",
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
            "runs": CPU,
            "initial_cpu_s": {t: next((r["cpu_s"] for r in CPU if r["tool"] == t
                                       and r["phase"] == "initial"), None)
                              for t in ("gns", "rclone")},
            "incremental_cpu_s_median": {
                t: med([r["cpu_s"] for r in CPU if r["tool"] == t
                        and r["phase"] == "incremental"] or [float("nan")])
                for t in ("gns", "rclone", "rclone-fast")},
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
