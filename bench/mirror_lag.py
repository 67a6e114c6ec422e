"""Continuous-mode lag, end to end through real controllers (part of ``bench.mirror``).

A writer puts 4 KiB files at a steady rate into a volume whose policy mirrors continuously
to a replica cluster and to an S3 prefix; each write's lag is the time from its
acknowledgement until the target's published status reports a version that includes it.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench._util import percentile, rnd


def measure(srv_env: dict[str, str], s3_uri: str, seconds: float = 60.0, rate: float = 50.0) -> dict[str, Any]:
    import os

    from federation.local.etcd_server import EtcdCluster
    from federation.local.harness import Federation

    saved = {k: os.environ.get(k) for k in srv_env}
    os.environ.update(srv_env)  # the controllers inherit the S3 endpoint and keys
    root = Path(tempfile.mkdtemp(prefix="gns-bench-lag-"))
    etcd = EtcdCluster(root / "etcd", size=1)
    etcd.start()
    fed = Federation(etcd, root, lease_ttl=5)
    try:
        for cid in ("onprem-a", "onprem-b"):
            fed.add(cid, wait=False)
        for cid in fed.controllers:
            fed.wait_healthy(cid, 60)
        fed.gns("volume", "create", "lag", "--cluster", "onprem-a")
        fed.gns("mount", "add", "/lag", "lag")
        doc = {"apiVersion": "gns.io/v1alpha1", "kind": "MirrorPolicy", "metadata": {"name": "lag"},
               "spec": {"volume": "lag", "mode": "continuous", "maxLag": "60s",
                        "targets": [{"cluster": "onprem-b"}, {"uri": s3_uri}]}}
        out = fed.gns("mirror", "apply", "-f", "-", input=json.dumps(doc).encode())
        assert out.returncode == 0, out.stderr
        acks: list[tuple[int, float]] = []
        seen: dict[str, list[tuple[int, float]]] = {}
        stop = threading.Event()
        client = fed.client()

        def poll() -> None:
            while not stop.is_set():
                now = time.monotonic()
                for p in client.mirror_status("lag"):
                    for t in p.targets:
                        hist = seen.setdefault(t.target, [])
                        if not hist or t.version > hist[-1][0]:
                            hist.append((t.version, now))
                time.sleep(0.01)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        data = b"x" * 4096
        start = time.monotonic()
        lock = threading.Lock()
        writers_n = 4  # one put takes tens of ms here: spread the rate over a few writers

        def write(k: int) -> None:
            with fed.client() as writer:
                i = 0
                while time.monotonic() - start < seconds:
                    info = writer.put(data, f"/lag/w{k}-{i:06d}")
                    with lock:
                        acks.append((info.version, time.monotonic()))
                    i += 1
                    time.sleep(max(0.0, start + i * writers_n / rate - time.monotonic()))

        threads = [threading.Thread(target=write, args=(k,)) for k in range(writers_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(5)
        stop.set()
        poller.join(10)
        client.close()
        result: dict[str, Any] = {"writes": len(acks), "writes_per_s": rnd(len(acks) / seconds, 1)}
        all_lags: list[float] = []
        for target, hist in seen.items():
            lags = []
            for version, acked in acks:
                when = next((t for v, t in hist if v >= version), None)
                lags.append((when - acked) if when is not None else float("inf"))
            lags = [max(0.0, x) for x in lags]
            all_lags += lags
            result[target] = {"lag_p50_s": rnd(percentile(lags, 50), 3), "lag_p99_s": rnd(percentile(lags, 99), 3),
                              "lag_max_s": rnd(max(lags), 3)}
        result["continuous_lag_p99_s"] = rnd(percentile(all_lags, 99), 3)
        return result
    finally:
        fed.stop_all()
        etcd.stop()
        shutil.rmtree(root, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


if __name__ == "__main__":
    from federation.local.emulators import start_seaweed

    srv = start_seaweed()
    try:
        print(json.dumps(measure(dict(srv.env_vars), srv.new_store_uri("lag"), seconds=20), indent=2))
    finally:
        srv.close()
