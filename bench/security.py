"""Access-control benchmark: ``python -m bench.security`` prints one JSON object (issue 13).

* ``authz_check_p99_us`` (goal <= 20): one permission check (``Authorizer.allowed``: user,
  two groups and ``*`` against every ancestor of a 5-component path) with ``--grants``
  (10,000) grants spread over 100 top-level trees, in process, ``--checks`` samples;
  ``authz_request_p99_us`` is the whole per-request decision the interceptor makes for a
  ``Stat`` (targets found in the message, path normalised, checked).
* ``put_mib_s_acl_on`` / ``put_mib_s_acl_off`` and ``small_put_per_s_acl_on`` /
  ``..._off``: two real ``gns controller`` processes with mutual TLS on one etcd holding the
  same 10,000 grants; ``acl-on`` checks every request, ``acl-off`` runs with
  ``GNS_ACCESS_CONTROL=off`` (TLS, no checks). A user certificate (``user:bench``, with a
  ``write,read`` grant) puts ``--size-mib`` files and 4 KiB files to each owner straight,
  interleaved, ``--rounds`` rounds; medians and the on/off ratios (goal >= 0.95). On a
  shared, busy machine the rates swing from round to round, so the owner's CPU seconds per
  GiB put (``owner_cpu_s_per_gib_acl_on/off``, from /proc) are reported too.
* ``revoke_visible_p99_ms`` (goal <= 1,000): time from a revoke's etcd commit to the first
  request the owner refuses, polled by the user's client every millisecond, ``--revokes``
  times.

Everything it starts is stopped by PID in ``finally``; the work directory is removed.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._util import (
    MIB,
    at_least,
    at_most,
    emit,
    log,
    machine_info,
    median,
    percentile,
    rnd,
    start_etcd,
)
from federation.local.harness import Federation

GOALS = {
    "authz_check_p99_us": "<= 20",
    "put_acl_on_over_off": ">= 0.95",
    "small_put_acl_on_over_off": ">= 0.95",
    "revoke_visible_p99_ms": "<= 1000",
}


def _grant_set(n: int) -> list[tuple[str, str, frozenset[str]]]:
    rng = random.Random(13)
    out = []
    for i in range(n):
        path = f"/t{i % 100}/p{i // 100}" + ("/deep" if i % 3 == 0 else "")
        subject = rng.choice([f"user:u{i % 500}", f"group:g{i % 50}", "*"]) if i % 7 else f"user:u{i % 500}"
        out.append((path, subject, frozenset(rng.sample(["read", "write", "admin"], k=rng.randint(1, 2)))))
    return out


def bench_checks(n_grants: int, n_checks: int) -> dict[str, Any]:
    from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
    from federation.controller.authz import Authorizer
    from federation.tls import Identity
    from namespace.acl import Grant, Grants
    from namespace.cache import NamespaceView

    grants = Grants()
    for path, subject, perms in _grant_set(n_grants):
        grants.set(Grant(path, subject, perms))
    view = NamespaceView()
    authz = Authorizer(grants, lambda: view, None, registry=None)
    who = Identity("user", "u7", ("g3", "g9"))
    rng = random.Random(7)
    paths = [f"/t{rng.randrange(100)}/p{rng.randrange(100)}/deep/a/file.csv" for _ in range(1000)]
    samples: list[float] = []
    perf = time.perf_counter_ns
    for i in range(n_checks):
        p = paths[i % len(paths)]
        t0 = perf()
        authz.allowed(who, "write", [p])
        samples.append((perf() - t0) / 1000)
    requests = [pb.StatRequest(target=pb.Target(global_path=p)) for p in paths]
    req_samples: list[float] = []
    for i in range(n_checks):
        r = requests[i % len(requests)]
        t0 = perf()
        try:
            authz.check_message(who, "Federation", "Stat", r)
        except Exception:  # a denial is a decision too; its cost is what we measure
            pass
        req_samples.append((perf() - t0) / 1000)
    return {
        "grants": len(grants),
        "authz_check_p50_us": rnd(percentile(samples, 50)),
        "authz_check_p99_us": rnd(percentile(samples, 99)),
        "authz_request_p50_us": rnd(percentile(req_samples, 50)),
        "authz_request_p99_us": rnd(percentile(req_samples, 99)),
    }


async def _load_grants(urls: str, n: int) -> None:
    import json

    from namespace.acl import grant_key
    from namespace.etcd import Etcd, EtcdConfig

    etcd = await Etcd.connect(EtcdConfig.parse(urls))
    try:
        ops = []
        for path, subject, perms in _grant_set(n):
            body = json.dumps({"path": path, "subject": subject, "perms": sorted(perms)}).encode()
            ops.append(etcd.tx.put(grant_key(path, subject), body))
        for i in range(0, len(ops), 100):
            await etcd.txn([], ops[i:i + 100])
    finally:
        await etcd.close()


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, from /proc (robust to a busy machine, unlike rates)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _put_rate(client: Any, path: str, blob_file: Path, size: int, pid: int, cpu: list[float]) -> float:
    c0, t0 = _cpu_s(pid), time.perf_counter()
    client.put(blob_file, path)
    elapsed = time.perf_counter() - t0
    cpu.append((_cpu_s(pid) - c0) / (size / (1024 * MIB)))
    return size / MIB / elapsed


def _small_rate(client: Any, prefix: str, seconds: float) -> float:
    data = os.urandom(4096)
    n, end = 0, time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < end:
        client.put(data, f"{prefix}/s{n % 200}")
        n += 1
    return n / (time.perf_counter() - t0)


def bench_federation(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    from federation.certs import init_certs, issue_user
    from federation.client import Client
    from namespace.errors import PermissionDenied

    out: dict[str, Any] = {}
    tls = root / "tls"
    init_certs(tls, ["acl-on", "acl-off"])
    issue_user(tls, "bench")
    with start_etcd(root) as etcd, Federation(etcd.urls, root, lease_ttl=5) as fed:
        asyncio.run(_load_grants(etcd.urls, args.grants))
        fed.tls_dir = tls
        fed.add("acl-on", wait=False)
        os.environ["GNS_ACCESS_CONTROL"] = "off"
        try:
            fed.add("acl-off", wait=False)
        finally:
            os.environ.pop("GNS_ACCESS_CONTROL", None)
        for cid in ("acl-on", "acl-off"):
            fed.wait_healthy(cid, 60)
        with Client(etcd.urls, tls_dir=tls, watch=False) as admin:
            for side in ("on", "off"):
                admin.create_volume(f"v{side}", f"acl-{side}")
                admin.add_mount(f"/{side}", f"v{side}")
                admin.acl_grant(f"/{side}", "user:bench", "read,write")
            # Revokes are timed on a tree where the user holds nothing else.
            admin.create_volume("vrevoke", "acl-on")
            admin.add_mount("/revoke", "vrevoke")
        blob = root / "blob"
        size = args.size_mib * MIB
        with open(blob, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(MIB))
        rates: dict[str, list[float]] = {"on": [], "off": [], "small_on": [], "small_off": []}
        cpu: dict[str, list[float]] = {"on": [], "off": []}
        with Client(etcd.urls, tls_dir=tls, identity="bench") as user:
            user.put(b"warm", "/on/warm")
            user.put(b"warm", "/off/warm")
            for r in range(args.rounds):
                order = ("on", "off") if r % 2 == 0 else ("off", "on")
                for side in order:
                    rates[side].append(_put_rate(user, f"/{side}/big", blob, size,
                                                 fed.controllers[f"acl-{side}"].pid, cpu[side]))
                for side in order:
                    rates[f"small_{side}"].append(_small_rate(user, f"/{side}/small", args.small_seconds))
                log(f"round {r}: " + ", ".join(f"{k}={v[-1]:.1f}" for k, v in rates.items()))
            out["put_mib_s_acl_on"] = rnd(median(rates["on"]))
            out["put_mib_s_acl_off"] = rnd(median(rates["off"]))
            out["put_acl_on_over_off"] = rnd(median(rates["on"]) / median(rates["off"]), 3)
            out["owner_cpu_s_per_gib_acl_on"] = rnd(median(cpu["on"]), 3)
            out["owner_cpu_s_per_gib_acl_off"] = rnd(median(cpu["off"]), 3)
            out["small_put_per_s_acl_on"] = rnd(median(rates["small_on"]))
            out["small_put_per_s_acl_off"] = rnd(median(rates["small_off"]))
            out["small_put_acl_on_over_off"] = rnd(median(rates["small_on"]) / median(rates["small_off"]), 3)

            visible: list[float] = []
            with Client(etcd.urls, tls_dir=tls, watch=False) as admin:
                for i in range(args.revokes):
                    path = f"/revoke/r{i}"
                    admin.put(b"r", path)
                    admin.acl_grant(path, "user:bench", "read")
                    deadline = time.monotonic() + 5
                    while True:  # the grant has reached the owner
                        try:
                            user.stat(path)
                            break
                        except PermissionDenied:
                            if time.monotonic() > deadline:
                                raise
                            time.sleep(0.005)
                    admin.acl_revoke(path, "user:bench")
                    t0 = time.perf_counter()
                    while True:
                        try:
                            user.stat(path)
                        except PermissionDenied:
                            visible.append((time.perf_counter() - t0) * 1000)
                            break
                        if time.perf_counter() - t0 > 10:
                            raise AssertionError("revoke never took effect")
                        time.sleep(0.001)
            out["revoke_visible_p50_ms"] = rnd(percentile(visible, 50))
            out["revoke_visible_p99_ms"] = rnd(percentile(visible, 99))
            out["revokes"] = len(visible)
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.security", description=__doc__)
    p.add_argument("--grants", type=int, default=10_000)
    p.add_argument("--checks", type=int, default=50_000)
    p.add_argument("--size-mib", type=int, default=128, help="large put size")
    p.add_argument("--rounds", type=int, default=5, help="interleaved on/off rounds")
    p.add_argument("--small-seconds", type=float, default=3.0)
    p.add_argument("--revokes", type=int, default=20)
    p.add_argument("--skip-federation", action="store_true", help="only the in-process check")
    args = p.parse_args()
    result: dict[str, Any] = {"bench": "security", "machine": machine_info()}
    started = time.monotonic()
    result.update(bench_checks(args.grants, args.checks))
    if not args.skip_federation:
        root = Path(tempfile.mkdtemp(prefix="gns-bench-sec-"))
        try:
            result.update(bench_federation(root, args))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    result["goals"] = GOALS
    result["goals_met"] = {
        "authz_check_p99_us": at_most(result.get("authz_check_p99_us"), 20),
        "put_acl_on_over_off": at_least(result.get("put_acl_on_over_off"), 0.95),
        "small_put_acl_on_over_off": at_least(result.get("small_put_acl_on_over_off"), 0.95),
        "revoke_visible_p99_ms": at_most(result.get("revoke_visible_p99_ms"), 1000),
    }
    result["seconds"] = rnd(time.monotonic() - started, 1)
    emit(result)


if __name__ == "__main__":
    main()
