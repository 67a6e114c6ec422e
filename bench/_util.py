"""Shared helpers for the gns benchmarks: statistics, JSON output, RSS, and real processes.

``start_etcd`` and ``ControllerSet`` start a real etcd member and real ``gns controller``
processes on 127.0.0.1 and always stop them by PID (in ``finally`` / ``__exit__``), even when
a benchmark fails or is interrupted with SIGTERM or Ctrl-C. Progress goes to stderr; the one
JSON object a benchmark prints goes to stdout.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from federation.local.etcd_server import EtcdCluster
from federation.pids import stop_child

MIB = 1 << 20


# -- statistics ---------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by nearest rank on sorted data; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def median(values: Sequence[float]) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    mid = len(ordered) // 2
    return float(ordered[mid]) if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def rnd(x: float, digits: int = 2) -> float:
    return round(float(x), digits)


# -- output -------------------------------------------------------------------------------
def log(msg: str) -> None:
    """Progress for humans, on stderr (stdout carries only the JSON object)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def emit(result: dict[str, Any]) -> None:
    """Print the benchmark's one JSON object on stdout."""
    print(json.dumps(result, indent=2, sort_keys=False))
    sys.stdout.flush()


def at_most(value: float | None, goal: float) -> bool:
    """Goal check that is False (not an error) for a missing or NaN figure."""
    return value is not None and not math.isnan(value) and value <= goal


def at_least(value: float | None, goal: float) -> bool:
    return value is not None and not math.isnan(value) and value >= goal


# -- memory -------------------------------------------------------------------------------
def rss_bytes(pid: int | None = None) -> int:
    """Current resident set size of ``pid`` (default: this process), from /proc."""
    with open(f"/proc/{pid or 'self'}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set size (VmHWM) of a live process."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# -- signals ------------------------------------------------------------------------------
def run_threads(work: Callable[[int], None], threads: int) -> float:
    """Run ``work(k)`` for k in 0..threads-1, each in its own thread; the wall seconds it
    took. A thread that raised fails the whole run (its count would otherwise read as zero)."""
    errors: list[BaseException] = []

    def guarded(k: int) -> None:
        try:
            work(k)
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    t0 = time.perf_counter()
    workers = [threading.Thread(target=guarded, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    took = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} of {threads} threads failed") from errors[0]
    return took


def terminate_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so ``finally`` blocks stop what we started."""
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    """SIGTERM one child by PID, then SIGKILL if it lingers; reaps it."""
    stop_child(proc, timeout)


# -- etcd ---------------------------------------------------------------------------------
@contextmanager
def start_etcd(base_dir: Path) -> Iterator[EtcdCluster]:
    """A real one-member etcd on loopback ports, stopped by PID on exit."""
    cluster = EtcdCluster(base_dir / "etcd", size=1)
    try:
        cluster.start()
        log(f"etcd up at {cluster.urls} (pid {cluster.members[0].pid})")
        yield cluster
    finally:
        cluster.stop()
        for m in cluster.members:
            if m.proc is not None and m.proc.poll() is None:  # belt and braces
                m.proc.kill()
                m.proc.wait()


def machine_info() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "loadavg_1m_at_start": rnd(load[0]),
        "python": sys.version.split()[0],
    }
