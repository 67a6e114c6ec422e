"""Several real controller processes on loopback: what tests and benchmarks drive.

``Federation`` starts ``gns controller`` processes against a real etcd and can kill -9,
SIGSTOP/SIGCONT, restart and stop them (always by PID). ``gns(...)`` runs the real CLI as a
subprocess, the way a user would. No pytest here, so ``bench/`` uses it too.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federation.local.etcd_server import EtcdCluster
from federation.local.ports import free_port
from federation.local.runner import ClusterConfig, controller_command, spawn_controller
from namespace.models import Provider

if TYPE_CHECKING:
    from federation.client import Client


@dataclass
class Controller:
    cluster: ClusterConfig
    port: int
    metrics_port: int
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    """``time.monotonic()`` just before the process was spawned."""
    extra: list[str] = field(default_factory=list)
    """More ``gns controller`` arguments, after those every controller gets."""

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


@dataclass
class Federation:
    etcd: EtcdCluster | str
    """The etcd to use: a running :class:`EtcdCluster` or its endpoint list."""
    root: Path
    lease_ttl: int = 3
    tls_dir: Path | None = None
    log_level: str = ""
    """The controllers' ``GNS_LOG_LEVEL`` (empty: whatever the environment says)."""
    controllers: dict[str, Controller] = field(default_factory=dict)

    @property
    def etcd_urls(self) -> str:
        return self.etcd if isinstance(self.etcd, str) else self.etcd.urls

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_all()

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["GNS_ETCD"] = self.etcd_urls
        env["GNS_HOME"] = str(self.root / "home")
        env.pop("GNS_TLS_DIR", None)
        if self.tls_dir is not None:
            env["GNS_TLS_DIR"] = str(self.tls_dir)
        return env

    def add(self, cid: str, provider: Provider = "onprem", region: str = "", start: bool = True,
            wait: bool = True, extra: list[str] | None = None) -> Controller:
        c = Controller(
            ClusterConfig(id=cid, provider=provider, region=region),
            port=free_port(), metrics_port=free_port(),
            data_dir=self.root / "clusters" / cid, log=self.root / "logs" / f"{cid}.log",
            extra=extra or [],
        )
        self.controllers[cid] = c
        if start:
            self.start(cid, wait=wait)
        return c

    def command(self, cid: str) -> list[str]:
        c = self.controllers[cid]
        return controller_command(
            c.cluster, listen=c.endpoint, data_dir=c.data_dir, etcd=self.etcd_urls,
            lease_ttl=self.lease_ttl, metrics_port=c.metrics_port, tls_dir=self.tls_dir,
        ) + c.extra

    def start(self, cid: str, wait: bool = True) -> Controller:
        c = self.controllers[cid]
        c.started_at = time.monotonic()
        env = self.env()
        if self.log_level:
            env["GNS_LOG_LEVEL"] = self.log_level
        c.proc = spawn_controller(self.command(cid), c.log, env=env)
        if wait:
            self.wait_healthy(cid, timeout=20)
        return c

    def wait_healthy(self, cid: str, timeout: float) -> None:
        """Until this very process is registered and serving (a dead predecessor's lease
        may still show the cluster Ready for a while)."""
        import grpc

        from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
        from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc

        c = self.controllers[cid]
        if self.tls_dir is not None:
            from federation.channels import sync_channel

            channel = sync_channel(c.endpoint, self.tls_dir)
        else:
            channel = grpc.insecure_channel(c.endpoint)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if c.proc is not None and c.proc.poll() is not None:
                    raise AssertionError(f"controller {cid} exited: {c.log.read_text()[-2000:]}")
                try:
                    if pb_grpc.FederationStub(channel).Health(pb.HealthRequest(), timeout=1).ready:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{cid} not healthy after {timeout}s")
                time.sleep(0.05)
        finally:
            channel.close()

    def state(self, cid: str) -> str:
        out = self.gns("cluster", "show", cid, "--json")
        if out.returncode != 0:
            return "Missing"
        return str(json.loads(out.stdout)["state"])

    def wait_state(self, cid: str, state: str, timeout: float) -> float:
        start = time.monotonic()
        while True:
            c = self.controllers[cid]
            if state == "Ready" and c.proc is not None and c.proc.poll() is not None:
                raise AssertionError(f"controller {cid} exited: {c.log.read_text()[-2000:]}")
            if self.state(cid) == state:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{cid} not {state} after {timeout}s")
            time.sleep(0.1)

    def kill(self, cid: str, sig: int = signal.SIGKILL) -> None:
        c = self.controllers[cid]
        if c.proc is not None and c.proc.poll() is None:
            os.kill(c.proc.pid, sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                c.proc.wait(15)

    def stop(self, cid: str) -> None:
        """SIGTERM (after SIGCONT, in case it is frozen); SIGKILL if it lingers."""
        c = self.controllers[cid]
        if c.proc is not None and c.proc.poll() is None:
            try:
                os.kill(c.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            c.proc.terminate()
            try:
                c.proc.wait(10)
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait()

    def stop_all(self) -> None:
        for cid in self.controllers:
            self.stop(cid)

    def log_digest(self, lines: int = 25) -> str:
        """The last notable lines of each controller's log: warnings, errors, and our own
        packages' INFO lines (mirror passes, hand-overs) where ``log_level`` lets them in.
        What a failed test's report shows, since timing failures in CI cannot be re-run
        with a debugger."""
        parts = []
        for cid, c in self.controllers.items():
            try:
                text = c.log.read_text(errors="replace")
            except OSError:
                continue
            notable = [ln for ln in text.splitlines() if _notable(ln)]
            parts.append(f"-- {cid} ({len(notable)} notable lines; the last {lines}):")
            parts.extend(notable[-lines:])
        return "\n".join(parts)

    def gns(self, *args: str, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the real CLI (text output)."""
        return subprocess.run(
            [sys.executable, "-m", "federation.cli.main", *args], input=input.decode() if input else None,
            capture_output=True, text=True, env=self.env(), timeout=timeout,
        )

    def gns_bytes(self, *args: str, input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "federation.cli.main", *args], input=input,
            capture_output=True, env=self.env(), timeout=timeout,
        )

    def client(self, **kw: Any) -> Client:
        from federation.client import Client

        return Client(self.etcd_urls, tls_dir=self.tls_dir, **kw)


_OUR_LOGGERS = (" mirroring.", " federation.", " namespace.", " edge.", " cloud_adapters.")


def _notable(line: str) -> bool:
    """A warning, an error, a traceback, or an INFO line of one of our packages (not the
    libraries': an SDK's INFO is a line per HTTP request)."""
    if " WARNING " in line or " ERROR " in line or line.startswith(("Traceback", "  File")):
        return True
    return " INFO " in line and any(name in line for name in _OUR_LOGGERS)
