"""Failover benchmark: kill -9 the owner 10 times under steady writes and measure recovery.

``python -m bench.failover`` prints one JSON object: ``rto_p50_s`` and ``rto_max_s`` (kill ->
first acknowledged write on the new owner, sync volume), ``lost_acked_writes_sync`` (must be
0) and ``lost_acked_writes_continuous_max``, with failover.after = 3 s and lease TTL = 3 s,
at 20 writes/s per volume. Real etcd and controller processes on loopback.
"""
from __future__ import annotations

import json
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from federation.local.etcd_server import EtcdCluster
from federation.local.harness import Federation

ROUNDS = 10
AFTER = 3
TTL = 3
RATE = 20.0


class Writer(threading.Thread):
    def __init__(self, fed: Federation, prefix: str) -> None:
        super().__init__(daemon=True)
        self.fed, self.prefix = fed, prefix
        self.acked: dict[str, bytes] = {}
        self.ack_times: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        with self.fed.client() as c:
            while not self.stop.is_set():
                path, data = f"{self.prefix}/w{i:05d}", f"{self.prefix} {i}".encode()
                try:
                    c.put(data, path)
                    self.acked[path] = data
                    self.ack_times.append(time.monotonic())
                except Exception:
                    pass
                i += 1
                time.sleep(1.0 / RATE)


def policy(name: str, volume: str, mode: str, target: str) -> bytes:
    return json.dumps({
        "apiVersion": "gns.io/v1alpha1", "kind": "MirrorPolicy", "metadata": {"name": name},
        "spec": {"volume": volume, "mode": mode, "targets": [{"cluster": target}],
                 "failover": {"automatic": True, "after": f"{AFTER}s"}},
    }).encode()


def lost(fed: Federation, acked: dict[str, bytes]) -> int:
    n = 0
    with fed.client() as c:
        for p, data in acked.items():
            try:
                n += c.cat(p) != data
            except Exception:
                n += 1
    return n


def one_round(fed: Federation, i: int, owner: str, target: str) -> dict[str, Any]:
    sv, cv = f"sync{i}", f"cont{i}"
    for vol, mode in ((sv, "sync"), (cv, "continuous")):
        fed.gns("volume", "create", vol, "--cluster", owner)
        fed.gns("mount", "add", f"/{vol}", vol)
        out = fed.gns("mirror", "apply", "-f", "-", input=policy(f"{vol}-dr", vol, mode, target))
        assert out.returncode == 0, out.stderr
    writers = [Writer(fed, f"/{sv}"), Writer(fed, f"/{cv}")]
    for w in writers:
        w.start()
    time.sleep(3.0)
    killed = time.monotonic()
    fed.kill(owner, signal.SIGKILL)
    deadline = killed + 60
    rto = None
    while time.monotonic() < deadline:
        after = [t for t in writers[0].ack_times if t > killed]
        if after:
            rto = after[0] - killed
            break
        time.sleep(0.05)
    time.sleep(1.0)
    for w in writers:
        w.stop.set()
    for w in writers:
        w.join(30)
    result = {
        "round": i, "owner": owner, "rto_s": round(rto, 3) if rto is not None else None,
        "lost_sync": lost(fed, writers[0].acked), "lost_continuous": lost(fed, writers[1].acked),
        "acked_sync": len(writers[0].acked), "acked_continuous": len(writers[1].acked),
    }
    fed.start(owner)  # it comes back and fails back to a replica
    return result


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="gns-bench-failover-"))
    etcd = EtcdCluster(root / "etcd", size=1)
    etcd.start()
    fed = Federation(etcd, root, lease_ttl=TTL)
    clusters = ["onprem-a", "onprem-b", "aws-1"]
    rounds = []
    try:
        for cid in clusters:
            fed.add(cid, wait=False)
        for cid in clusters:
            fed.wait_healthy(cid, 30)
        for i in range(ROUNDS):
            owner, target = clusters[i % 3], clusters[(i + 1) % 3]
            rounds.append(one_round(fed, i, owner, target))
            print(json.dumps(rounds[-1]), file=sys.stderr)
    finally:
        fed.stop_all()
        etcd.stop()
        shutil.rmtree(root, ignore_errors=True)
    rtos = [r["rto_s"] for r in rounds if r["rto_s"] is not None]
    out = {
        "rounds": len(rounds),
        "after_s": AFTER, "lease_ttl_s": TTL, "writes_per_s_per_volume": RATE,
        "rto_p50_s": round(statistics.median(rtos), 3) if rtos else None,
        "rto_max_s": max(rtos) if rtos else None,
        "rto_all_s": rtos,
        "failed_rounds": sum(r["rto_s"] is None for r in rounds),
        "lost_acked_writes_sync": sum(r["lost_sync"] for r in rounds),
        "lost_acked_writes_continuous_max": max(r["lost_continuous"] for r in rounds),
        "goals": {"rto_max_s": AFTER + 2, "lost_acked_writes_sync": 0},
    }
    out["met"] = {
        "rto_max_s": out["rto_max_s"] is not None and out["rto_max_s"] <= AFTER + 2 and not out["failed_rounds"],
        "lost_acked_writes_sync": out["lost_acked_writes_sync"] == 0,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
