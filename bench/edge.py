"""Edge benchmark (SPEC §8): join, Down detection, reconnect, backlog drain, lanes, a storm.

``python -m bench.edge`` prints one JSON object. Everything is real: etcd, hub controller
processes, ``gns edge join`` processes (environment without any etcd config), and, for the
join/Down/storm figures, simulated sites that speak the real edge protocol (``Join`` +
``Link`` stream with heartbeats) from a few client processes, one gRPC connection per site.

- ``join_to_ready_p99_ms``: Join RPC sent -> the hub's Welcome (the hub registers the site's
  cluster and lease before it welcomes it), over ``--joins`` sites; plus a real process figure.
- ``down_detect_s``: heartbeat 1s, the site falls silent (connection open) -> its cluster
  leaves etcd's ``alive/`` (as a watching client sees it).
- ``reconnect_to_shipping_ms``: a real edge process with a backlog; link back -> the core
  mirror acknowledges the first backlog version.
- ``backlog_drain_mib_s`` vs ``gns put`` (``Client.put``, what the CLI runs) of the same files
  to a core volume in the same run.
- ``live_put_p99_ms_during_drain`` / ``live_put_p99_ms_idle``: puts from an app at the site to
  a core path (through the link) while the backlog drains on the bulk lane, and idle.
- ``storm_sites`` / ``storm_all_ready_s``: every simulated site drops its link and redials at
  once; hub CPU seconds and RSS.

``--full`` runs the issue's sizes (10,000 changes, 1 GiB, storm of ``--storm`` sites).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc

from bench._util import MIB, emit, log, machine_info, median, percentile, rnd, rss_bytes
from edge.harness import EdgeProcess
from federation.api._gen.gns.edge.v1 import edge_pb2 as epb
from federation.api._gen.gns.edge.v1 import edge_pb2_grpc as epb_grpc
from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.local.etcd_server import EtcdCluster
from federation.local.harness import Federation
from federation.local.ports import free_port

_LOOP: asyncio.AbstractEventLoop | None = None
T = TypeVar("T")


def arun(coro: Coroutine[Any, Any, T]) -> T:
    """One event loop for the whole run: grpc.aio binds its poller to the first loop it sees."""
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
    return _LOOP.run_until_complete(coro)


# -- simulated sites (the real protocol, one connection each) ----------------------------------
class SimSite:
    def __init__(self, hub: str, site: str, heartbeat: float) -> None:
        self.hub, self.site, self.heartbeat = hub, site, heartbeat
        self.credential = ""
        self.silent = False
        self._q: asyncio.Queue[epb.Frame | None] = asyncio.Queue()
        self.channel: grpc.aio.Channel | None = None
        self.call: Any = None
        self.task: asyncio.Task[None] | None = None

    def _channel(self) -> grpc.aio.Channel:
        # A distinct channel argument per site: gRPC then opens a connection of its own.
        return grpc.aio.insecure_channel(self.hub, options=[("gns.bench.site", self.site)])

    async def join(self, token: str) -> float:
        t0 = time.perf_counter()
        ch = self._channel()
        reply = await epb_grpc.EdgeLinkStub(ch).Join(epb.JoinRequest(site=self.site, token=token, api_version="v1"), timeout=60)
        await ch.close()
        self.credential = reply.credential
        await self.connect()
        return time.perf_counter() - t0

    async def connect(self) -> float:
        t0 = time.perf_counter()
        self.channel = self._channel()
        self._q = asyncio.Queue()
        q = self._q

        async def frames() -> Any:
            yield epb.Frame(hello=epb.Hello(site=self.site, credential=self.credential,
                                            heartbeat_s=self.heartbeat, api_version="v1"))
            while True:
                f = await q.get()
                if f is None:
                    return
                yield f

        self.call = epb_grpc.EdgeLinkStub(self.channel).Link(frames())
        first = await self.call.read()
        assert first.WhichOneof("kind") == "welcome", first
        self.task = asyncio.create_task(self._run(q))
        return time.perf_counter() - t0

    async def _run(self, q: asyncio.Queue[epb.Frame | None]) -> None:
        async def beat() -> None:
            seq = 0
            while True:
                await asyncio.sleep(self.heartbeat)
                if not self.silent:
                    seq += 1
                    q.put_nowait(epb.Frame(heartbeat=epb.Heartbeat(seq=seq)))

        b = asyncio.create_task(beat())
        try:
            async for _ in self.call:
                pass
        except grpc.aio.AioRpcError:
            pass
        finally:
            b.cancel()

    async def close(self) -> None:
        self._q.put_nowait(None)
        if self.call is not None:
            self.call.cancel()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.channel is not None:
            await self.channel.close()


def _storm_worker(hub: str, tokens: list[tuple[str, str]], heartbeat: float, conn: Any) -> None:
    """One client process: join its sites, then on command drop every link and redial."""

    async def main() -> None:
        sites = [SimSite(hub, s, heartbeat) for s, _ in tokens]
        sem = asyncio.Semaphore(64)

        async def join(site: SimSite, tok: str) -> None:
            async with sem:
                await site.join(tok)

        await asyncio.gather(*(join(s, t) for s, (_, t) in zip(sites, tokens, strict=True)))
        conn.send("joined")
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await asyncio.gather(*(s.close() for s in sites))
        conn.send("dropped")
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        t0 = time.monotonic()
        await asyncio.gather(*(s.connect() for s in sites))
        conn.send(("ready", time.monotonic() - t0))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await asyncio.gather(*(s.close() for s in sites))
        conn.send("done")

    asyncio.run(main())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def make_tokens(etcd_urls: str, sites: list[str], hub: str) -> list[tuple[str, str]]:
    from namespace import edge
    from namespace.etcd import Etcd, EtcdConfig

    etcd = await Etcd.connect(EtcdConfig.parse(etcd_urls))
    try:
        sem = asyncio.Semaphore(64)

        async def one(s: str) -> tuple[str, str]:
            async with sem:
                return s, (await edge.create_token(etcd, s, hub, 3600, edge.INSECURE_CA))["token"]

        return list(await asyncio.gather(*(one(s) for s in sites)))
    finally:
        await etcd.close()


# -- parts ---------------------------------------------------------------------------------------
def bench_join_and_down(fed: Federation, hub: str, joins: int) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        toks = await make_tokens(fed.etcd_urls, [f"j-{i}" for i in range(joins)], "onprem-a")
        times = []
        sites = []
        for s, t in toks:
            site = SimSite(hub, s, 10.0)
            times.append(await site.join(t))
            sites.append(site)
        for site in sites:
            await site.close()
        # Down detection at --heartbeat 1s: fall silent with the connection open.
        downs = []
        toks = await make_tokens(fed.etcd_urls, [f"d-{i}" for i in range(3)], "onprem-a")
        with fed.client() as watcher:
            for s, t in toks:
                site = SimSite(hub, s, 1.0)
                await site.join(t)
                deadline = time.monotonic() + 10
                while s not in watcher.view().alive and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(2.5)  # a few beats flow first
                site.silent = True
                # Silence starts after the last beat sent; take the worst case (just after one).
                t0 = time.monotonic()
                while s in watcher.view().alive and time.monotonic() - t0 < 15:
                    await asyncio.sleep(0.01)
                downs.append(time.monotonic() - t0)
                await site.close()
        return {"join_to_ready_p50_ms": rnd(median(times) * 1000), "join_to_ready_p99_ms": rnd(percentile(times, 99) * 1000),
                "joins": joins, "down_detect_s": rnd(median(downs)), "down_detect_max_s": rnd(max(downs)),
                "down_detect_heartbeat_s": 1.0}

    return arun(run())


def bench_process_join(fed: Federation, root: Path, hub: str) -> float:
    tok = json.loads(fed.gns("edge", "token", "create", "--site", "p-1").stdout)["token"]
    e = EdgeProcess("p-1", [hub], root / "edges" / "p-1", f"127.0.0.1:{free_port()}", "1s")
    t0 = time.monotonic()
    e.start(tok)
    try:
        e.wait_link("Ready", 60)
        return time.monotonic() - t0
    finally:
        e.stop()


POLICY = """
apiVersion: gns.io/v1alpha1
kind: MirrorPolicy
metadata: {name: data-dr}
spec: {volume: data, mode: continuous, targets: [{cluster: onprem-b}]}
"""


def put_edge(stub: pb_grpc.FederationStub, path: str, data: bytes, chunk: int = 1 << 20) -> None:
    def chunks() -> Any:  # what the gns client sends: the data, then the end its header promises
        yield pb.WriteChunk(header=pb.WriteHeader(target=pb.Target(global_path=path), ends=True))
        for i in range(0, len(data), chunk):
            yield pb.WriteChunk(data=data[i:i + chunk])
        yield pb.WriteChunk(data=b"")
    stub.Write(chunks(), timeout=120)


def replica_version(endpoint: str, volume: str) -> int:
    ch = grpc.insecure_channel(endpoint)
    try:
        return int(pb_grpc.ReplicationStub(ch).State(pb.ReplicaStateRequest(volume=volume), timeout=10).version)
    finally:
        ch.close()


def profile_start(pids: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    """``GNS_BENCH_PYSPY=DIR``: sample each process of the drain path with py-spy (flame
    input in ``DIR/<name>.txt``); nothing otherwise."""
    out = os.environ.get("GNS_BENCH_PYSPY")
    if not out:
        return []
    Path(out).mkdir(parents=True, exist_ok=True)
    extra = os.environ.get("GNS_BENCH_PYSPY_ARGS", "").split()  # e.g. --native
    return [subprocess.Popen(["py-spy", "record", "-p", str(pid), "-f", "raw", "-r", "50", "--nonblocking", *extra,
                              "-o", str(Path(out) / f"{name}.txt")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, pid in pids.items()]


def profile_stop(spies: list[subprocess.Popen[bytes]]) -> None:
    for p in spies:
        p.send_signal(signal.SIGINT)
    for p in spies:
        p.wait(30)


def bench_drain(fed: Federation, root: Path, hub: Any, core: Any, changes: int, size: int, live: int) -> dict[str, Any]:
    """Backlog drain vs ``gns put``, with CPU seconds per MiB of each process on the path
    (edge, hub, core replica) so the figure says where the time goes."""
    from federation.local.tcpproxy import TcpProxy  # the same link cutter the tests use

    hub_pid, core_pid = hub.pid, core.pid
    hub, core = hub.endpoint, core.endpoint
    proxy = TcpProxy(hub).start()
    tok = json.loads(fed.gns("edge", "token", "create", "--site", "edge-b").stdout)["token"]
    e = EdgeProcess("edge-b", [proxy.endpoint], root / "edges" / "edge-b", f"127.0.0.1:{free_port()}", "1s")
    try:
        e.start(tok)
        e.wait_link("Ready", 60)
        for args in (("volume", "create", "data", "--cluster", "edge-b"), ("mount", "add", "/data", "data"),
                     ("volume", "create", "corev", "--cluster", "onprem-b"), ("mount", "add", "/corev", "corev"),
                     ("volume", "create", "live", "--cluster", "onprem-a"), ("mount", "add", "/live", "live")):
            out = fed.gns(*args)
            assert out.returncode == 0, out.stderr
        (root / "p.yaml").write_text(POLICY)
        assert fed.gns("mirror", "apply", "-f", str(root / "p.yaml")).returncode == 0
        stub = pb_grpc.FederationStub(grpc.insecure_channel(e.listen, options=[("grpc.max_send_message_length", 8 << 20)]))
        deadline = time.monotonic() + 20
        while True:
            try:
                put_edge(stub, "/data/first", b"x")
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        while replica_version(core, "data") < 1:
            time.sleep(0.05)
        small = os.urandom(4096)

        def live_puts(n: int) -> list[float]:
            lat = []
            for i in range(n):
                t0 = time.perf_counter()
                put_edge(stub, f"/live/l{i % 50}", small)  # an app at the site, through the link
                lat.append(time.perf_counter() - t0)
            return lat

        live_puts(10)  # warm-up: channels and the hub's first forward to /live's owner
        idle = live_puts(live)
        proxy.stall()
        e.wait_link("Down", 30)
        blob = os.urandom(size)
        log(f"writing a backlog of {changes} changes x {size // 1024} KiB at the site (link cut)")
        for i in range(changes):
            put_edge(stub, f"/data/f{i:05d}", blob[:size - 8] + i.to_bytes(8, "big"))
        head = changes + 1
        before = replica_version(core, "data")
        assert e.proc is not None
        pids = {"edge": e.proc.pid, "hub": hub_pid, "core": core_pid}
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        spies = profile_start(pids)
        proxy.heal()
        t_up = time.monotonic()
        e.wait_link("Ready", 60)
        marks: dict[str, float] = {}

        def watch_drain() -> None:
            ch = grpc.insecure_channel(core)
            rs = pb_grpc.ReplicationStub(ch)
            while True:
                v = int(rs.State(pb.ReplicaStateRequest(volume="data"), timeout=10).version)
                if v > before and "first" not in marks:
                    marks["first"] = time.monotonic() - t_up
                if v >= head:
                    marks["done"] = time.monotonic() - t_up
                    ch.close()
                    return
                time.sleep(0.005)

        import threading

        watcher = threading.Thread(target=watch_drain, daemon=True)
        watcher.start()
        while "first" not in marks:
            time.sleep(0.005)
        first = marks["first"]
        during = live_puts(live)  # apps at the site while the backlog drains on the bulk lane
        watcher.join(600)
        drain_s = marks["done"]
        drain_cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
        profile_stop(spies)
        drained_bytes = changes * size
        after_first = (changes - 1) * size
        put_cpu0 = cpu_seconds(core_pid)
        # The peer: `gns put` (Client.put) of the same files to a core volume, same run.
        with fed.client() as c:
            t0 = time.monotonic()
            for i in range(changes):
                c.put(blob[:size - 8] + i.to_bytes(8, "big"), f"/corev/f{i:05d}")
            put_s = time.monotonic() - t0
        put_core_cpu = cpu_seconds(core_pid) - put_cpu0
        mib = drained_bytes / MIB
        shipped = e.status().get("shipped", {}).get("data->onprem-b", [])
        return {
            "backlog_changes": changes, "backlog_mib": rnd(drained_bytes / MIB),
            "reconnect_to_shipping_ms": rnd(first * 1000),
            # Draining proper: first backlog version acknowledged -> last one (the redial
            # before it is reconnect_to_shipping_ms, its own goal); the bytes of the first
            # version are left out, so this is not flattered.
            "backlog_drain_s": rnd(drain_s - first),
            "backlog_drain_mib_s": rnd(after_first / MIB / max(drain_s - first, 1e-9)),
            "gns_put_mib_s": rnd(drained_bytes / MIB / put_s),
            "drain_vs_put_ratio": rnd((after_first / max(drain_s - first, 1e-9)) / (drained_bytes / put_s)),
            # The same counted from the moment the link was let through again (redial included).
            "backlog_drain_incl_reconnect_s": rnd(drain_s),
            "drain_incl_reconnect_vs_put_ratio": rnd((drained_bytes / drain_s) / (drained_bytes / put_s)),
            "shipped_in_order": shipped == sorted(shipped) and len(set(shipped)) == len(shipped),
            "live_put_p99_ms_idle": rnd(percentile(idle, 99) * 1000),
            "live_put_p99_ms_during_drain": rnd(percentile(during, 99) * 1000),
            "live_put_p99_ratio": rnd(percentile(during, 99) / percentile(idle, 99)),
            "live_puts": live,
            # CPU seconds per MiB drained (live puts during the drain included, a small share).
            "drain_cpu_s_per_mib": {k: rnd(v / mib, 4) for k, v in drain_cpu.items()},
            "put_core_cpu_s_per_mib": rnd(put_core_cpu / mib, 4),
        }
    finally:
        e.stop()
        proxy.stop()


def bench_storm(fed: Federation, hub: str, hub_pid: int, sites: int, procs: int) -> dict[str, Any]:
    names = [f"s-{i:05d}" for i in range(sites)]
    log(f"storm: making {sites} tokens")
    rss_before = rss_bytes(hub_pid)
    toks = arun(make_tokens(fed.etcd_urls, names, "onprem-a"))
    ctx = mp.get_context("spawn")
    pipes, workers = [], []
    for k in range(procs):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_storm_worker, args=(hub, toks[k::procs], 10.0, child), daemon=True)
        p.start()
        pipes.append(parent)
        workers.append(p)
    try:
        t0 = time.monotonic()
        for c in pipes:
            assert c.recv() == "joined"
        log(f"storm: {sites} sites joined in {time.monotonic() - t0:.1f}s")
        rss_joined = rss_bytes(hub_pid)
        for c in pipes:
            c.send("drop")
        for c in pipes:
            assert c.recv() == "dropped"
        with fed.client() as watcher:
            deadline = time.monotonic() + 60
            while any(n in watcher.view().alive for n in names) and time.monotonic() < deadline:
                time.sleep(0.05)
            cpu0 = cpu_seconds(hub_pid)
            t0 = time.monotonic()
            for c in pipes:
                c.send("go")
            for c in pipes:
                kind, _ = c.recv()
            welcomed = time.monotonic() - t0
            while not all(n in watcher.view().alive for n in names) and time.monotonic() - t0 < 120:
                time.sleep(0.02)
            all_ready = time.monotonic() - t0
            ready = sum(1 for n in names if n in watcher.view().alive)
        cpu = cpu_seconds(hub_pid) - cpu0
        rss = rss_bytes(hub_pid)
        for c in pipes:
            c.send("stop")
        for c in pipes:
            c.recv()
        return {"storm_sites": sites, "storm_ready": ready, "storm_all_welcomed_s": rnd(welcomed),
                "storm_all_ready_s": rnd(all_ready), "storm_client_processes": procs,
                "hub_cpu_s_during_storm": rnd(cpu), "hub_rss_mib": rnd(rss / MIB),
                "hub_rss_mib_all_joined": rnd(rss_joined / MIB),
                "hub_rss_mib_before_sites": rnd(rss_before / MIB),
                "hub_rss_kib_per_site": rnd((rss_joined - rss_before) / 1024 / sites),
                "hub_cpu_ms_per_site_reconnect": rnd(cpu * 1000 / sites)}
    finally:
        for p in workers:
            p.join(10)
            if p.is_alive():
                p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.edge")
    ap.add_argument("--full", action="store_true", help="the issue's sizes: 10,000 changes / 1 GiB")
    ap.add_argument("--changes", type=int, default=None)
    ap.add_argument("--size-kib", type=int, default=None)
    ap.add_argument("--joins", type=int, default=50)
    ap.add_argument("--storm", type=int, default=1000)
    ap.add_argument("--storm-procs", type=int, default=4)
    ap.add_argument("--live", type=int, default=100)
    ap.add_argument("--parts", default="join,drain,storm", help="comma-separated subset of join,drain,storm")
    args = ap.parse_args()
    changes = args.changes or (10_000 if args.full else 200)
    size = (args.size_kib or (105 if args.full else 256)) * 1024
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts <= {"join", "drain", "storm"}:
        ap.error(f"--parts: unknown part(s) {sorted(parts - {'join', 'drain', 'storm'})}")
    with tempfile.TemporaryDirectory(prefix="gns-bench-edge-") as tmp:
        root = Path(tmp)
        etcd = EtcdCluster(root / "etcd", size=1)
        etcd.start()
        fed = Federation(etcd, root, lease_ttl=10)
        try:
            a = fed.add("onprem-a")
            b = fed.add("onprem-b")
            result: dict[str, Any] = {"benchmark": "edge", "loadavg_start": [rnd(x) for x in os.getloadavg()]}
            goals: dict[str, bool] = {}
            if "join" in parts:
                log("join / down detection")
                result.update(bench_join_and_down(fed, a.endpoint, args.joins))
                result["join_to_ready_process_s"] = rnd(bench_process_join(fed, root, a.endpoint))
                goals["join_to_ready_p99_ms<=1000"] = result["join_to_ready_p99_ms"] <= 1000
                goals["down_detect_s<=3.5"] = result["down_detect_s"] <= 3.5
            if "drain" in parts:
                log("backlog drain")
                result.update(bench_drain(fed, root, a, b, changes, size, args.live))
                goals["reconnect_to_shipping_ms<=1000"] = result["reconnect_to_shipping_ms"] <= 1000
                goals["backlog_drain>=0.7x_put"] = result["drain_vs_put_ratio"] >= 0.7
                goals["live_put_p99_ratio<=2"] = result["live_put_p99_ratio"] <= 2
            if "storm" in parts:
                log("storm")
                result.update(bench_storm(fed, a.endpoint, a.pid, args.storm, args.storm_procs))
                goals["storm_all_ready_s<=30"] = (result["storm_all_ready_s"] <= 30
                                                  and result["storm_ready"] == result["storm_sites"])
            result["goals"] = goals
            result["loadavg_end"] = [rnd(x) for x in os.getloadavg()]
            result["machine"] = machine_info()
            emit(result)
        finally:
            fed.stop_all()
            etcd.stop()


if __name__ == "__main__":
    main()
