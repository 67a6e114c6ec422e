"""Real edge site processes on loopback, for tests and benchmarks (no pytest here).

An :class:`EdgeProcess` runs ``gns edge join`` exactly as a user would, with an environment
that holds NO etcd configuration (no ``GNS_ETCD``, an empty ``GNS_HOME``): whatever works
at the site works without etcd. It is stopped or killed by its PID only.
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
from typing import Any


@dataclass
class EdgeProcess:
    site: str
    hubs: list[str]
    data_dir: Path
    listen: str
    heartbeat: str = "0.3s"
    log: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GNS_")}
        env["GNS_HOME"] = str(self.data_dir.parent / f".{self.site}-no-federation")
        env.update(self.extra_env)
        return env

    def command(self, token: str | None) -> list[str]:
        cmd = [sys.executable, "-m", "federation.cli.main", "edge", "join", "--hub", ",".join(self.hubs),
               "--site", self.site, "--data-dir", str(self.data_dir), "--listen", self.listen,
               "--heartbeat", self.heartbeat]
        if token:
            cmd += ["--token", token]
        return cmd

    def start(self, token: str | None = None) -> EdgeProcess:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log = self.log or self.data_dir.parent / f"{self.site}.log"
        self.log = log
        out = open(log, "ab")
        self.proc = subprocess.Popen(self.command(token), env=self.env(), stdout=out, stderr=out)
        out.close()
        return self

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.data_dir / "edge.json").read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def wait(self, pred: Any, timeout: float, what: str = "condition") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"edge {self.site} exited {self.proc.returncode}: {self.tail()}")
            if st and st.get("pid") == (self.proc.pid if self.proc else None) and pred(st):
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"edge {self.site}: no {what} after {timeout}s (status {st}): {self.tail()}")
            time.sleep(0.05)

    def wait_link(self, state: str, timeout: float = 20.0) -> dict[str, Any]:
        return self.wait(lambda st: st.get("state") == state, timeout, f"link {state}")

    def tail(self, n: int = 3000) -> str:
        try:
            return (self.log.read_text(errors="replace") if self.log else "")[-n:]
        except FileNotFoundError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(15)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
