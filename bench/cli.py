"""CLI latency benchmark: ``python -m bench.cli`` prints one JSON object (issue 14, item 6).

A user types ``gns stat PATH`` and waits for a whole new Python process: interpreter start,
imports, one client, one RPC, output. This measures that wall time, from outside, against a
real federation (a real etcd and one real ``gns controller`` on 127.0.0.1, volume ``bench``
mounted at ``/bench`` holding one small file), for:

* ``stat``: ``gns stat /bench/f`` (etcd mode: the default ``GNS_ETCD`` route);
* ``stat_controller``: ``gns --controller HOST:PORT stat /bench/f`` (no etcd);
* ``ls``: ``gns ls /bench``;
* ``help``: ``gns --help`` (start-up and command registration alone);
* ``python_floor``: ``python -c pass``, the interpreter's own start, the floor under all of them.

``--tls`` runs the federation with mutual TLS (``federation.certs.init_certs``, as ``gns up``
does), so every command dials with the ``client`` identity's certificate; ``tls`` in the
output says which.

``--mounts N`` first adds N more mounts of volume ``bench`` (``/other/m-i``, values exactly as
``ControlPlane.add_mount`` writes them), so a command's cost can be seen against the size of
the namespace: one path's command should not read all of it.

Each is ``--runs`` new processes, interleaved round-robin so machine load hits all alike;
medians and p90 in milliseconds, and the median CPU time (user+system) of the process. ``import_cli_main_ms`` is the median cumulative time of
``import federation.cli.main`` as ``python -X importtime`` reports it (``--import-runs``
processes). The command run is the installed ``gns`` console script beside ``sys.executable``
when there is one (what users run), else ``python -m federation.cli.main``.

"Cold" here means a new process each time; the OS page cache and ``.pyc`` files are warm,
as they are for anyone who runs ``gns`` twice. Everything it starts is stopped by PID.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._util import (
    emit,
    log,
    machine_info,
    median,
    percentile,
    rnd,
    start_etcd,
    terminate_on_sigterm,
)
from federation.local.harness import Federation

IMPORT_LINE = re.compile(r"^import time:\s+\d+\s+\|\s+(\d+)\s+\|\s+federation\.cli\.main\s*$", re.M)


def gns_command() -> list[str]:
    script = Path(sys.executable).parent / "gns"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "federation.cli.main"]


CPU: dict[str, list[float]] = {}
"""CPU seconds (user+system) of each timed process, by command: on a loaded machine the
wall time mostly says how loaded it was, the CPU time says what the command cost."""


def time_run(cmd: list[str], env: dict[str, str], name: str = "") -> float:
    """Wall seconds of one whole process; a failing command is an error, not a figure."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, timeout=60)
    elapsed = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd} exited {out.returncode}: {out.stderr.decode(errors='replace')[-500:]}")
    if name:
        CPU.setdefault(name, []).append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    return elapsed


def import_time_ms(env: dict[str, str]) -> float:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import federation.cli.main"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60)
    m = IMPORT_LINE.search(out.stderr)
    if out.returncode != 0 or m is None:
        raise RuntimeError(f"import federation.cli.main failed: {out.stderr[-500:]}")
    return int(m.group(1)) / 1000.0


async def add_mounts(urls: str, count: int) -> None:
    from namespace import schema
    from namespace.etcd import Etcd, EtcdConfig
    from namespace.models import Mount

    etcd = await Etcd.connect(EtcdConfig.parse(urls))
    try:
        for start in range(0, count, 100):
            puts = []
            for i in range(start, min(start + 100, count)):
                m = Mount(path=f"/other/g-{i % 97}/m-{i}", volume="bench")
                puts.append(etcd.tx.put(schema.mount(m.path), m.dump()))
            await etcd.txn([], puts)
    finally:
        await etcd.close()


def summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000.0 for s in seconds]
    return {"median_ms": rnd(median(ms), 1), "p90_ms": rnd(percentile(ms, 90), 1),
            "min_ms": rnd(min(ms), 1), "runs": len(ms)}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=15, help="processes per command")
    p.add_argument("--import-runs", type=int, default=9, help="processes for the import-time figure")
    p.add_argument("--mounts", type=int, default=0, help="extra mounts in the namespace")
    p.add_argument("--tls", action="store_true", help="mutual TLS, as gns up runs it")
    args = p.parse_args()
    terminate_on_sigterm()
    started = time.monotonic()
    result: dict[str, Any] = {"bench": "cli", "machine": machine_info()}
    gns = gns_command()
    result["command"] = " ".join(Path(gns[0]).name if i == 0 else a for i, a in enumerate(gns))
    root = Path(tempfile.mkdtemp(prefix="gns-bench-cli-"))
    try:
        tls_dir = None
        if args.tls:
            from federation.certs import init_certs

            tls_dir = root / "tls"
            init_certs(tls_dir, ["onprem-a"])
        result["tls"] = args.tls
        with start_etcd(root) as etcd, Federation(etcd.urls, root, lease_ttl=5, tls_dir=tls_dir) as fed:
            ctl = fed.add("onprem-a", "onprem", "local")
            env = fed.env()
            env.pop("GNS_CONTROLLER", None)
            seed = root / "f"
            seed.write_bytes(b"x" * 4096)
            for argv in (["volume", "create", "bench", "--cluster", "onprem-a"],
                         ["mount", "add", "/bench", "bench"], ["put", str(seed), "/bench/f"]):
                done = subprocess.run(gns + argv, env=env, capture_output=True, timeout=60, text=True)
                if done.returncode:
                    raise RuntimeError(f"gns {' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
            if args.mounts:
                log(f"adding {args.mounts} mounts")
                asyncio.run(add_mounts(etcd.urls, args.mounts))
            result["mounts"] = args.mounts + 1
            cases = {
                "stat": gns + ["stat", "/bench/f"],
                "stat_controller": gns + ["--controller", ctl.endpoint, "stat", "/bench/f"],
                "ls": gns + ["ls", "/bench"],
                "help": gns + ["--help"],
                "python_floor": [sys.executable, "-c", "pass"],
            }
            for cmd in cases.values():  # warm the page cache and .pyc files: not measured
                time_run(cmd, env)
            log(f"timing {len(cases)} commands x {args.runs} processes, interleaved")
            times: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(args.runs):
                for name, cmd in cases.items():
                    times[name].append(time_run(cmd, env, name))
            for name, ts in times.items():
                result[name] = summary(ts)
                result[name]["cpu_median_ms"] = rnd(median(CPU[name]) * 1000.0, 1)
            imports = [import_time_ms(env) for _ in range(args.import_runs)]
            result["import_cli_main_ms"] = {"median": rnd(median(imports), 1),
                                            "p90": rnd(percentile(imports, 90), 1)}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["loadavg_1m_at_end"] = rnd(os.getloadavg()[0])
    result["notes"] = (
        "Whole-process wall time of new gns processes against etcd + 1 real controller on "
        "127.0.0.1; commands interleaved round-robin; python_floor is the interpreter's start "
        f"alone. Machine shared with other jobs (load {result['machine']['loadavg_1m_at_start']} "
        f"on {result['machine']['cpus']} cores at start)."
    )
    result["runtime_s"] = rnd(time.monotonic() - started, 1)
    emit(result)


if __name__ == "__main__":
    main()
