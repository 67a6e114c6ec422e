"""`gns up` on a federation that is already running starts again what of it stopped (a
controller or etcd killed with -9), with its old ports and data, and leaves what runs alone,
as `docker compose up` does. Until now it refused with exit 4, and the only way back was
`gns down` + `gns up`, which restarts everything."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from federation.client import Client
from federation.local.etcd_server import etcd_binary
from federation.pids import pid_alive
from tests.fixtures.federation import assert_error


def _wait_dead(pid: int) -> None:
    import time

    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid)


@pytest.mark.slow
def test_up_restarts_what_stopped_and_leaves_the_rest(tmp_path: Path) -> None:
    try:
        etcd_binary()
    except FileNotFoundError as exc:
        pytest.skip(f"etcd not installed: {exc}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GNS_")}
    home = tmp_path / "home"
    env["GNS_HOME"] = str(home)
    config = tmp_path / "up.yaml"
    config.write_text("clusters:\n  - id: onprem-a\n  - id: onprem-b\nedges: []\n")

    def gns(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "federation.cli.main", *args], input=data,
                              capture_output=True, env=env, timeout=120)
        return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(),
                                           proc.stderr.decode())

    def state() -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((home / "federation.json").read_text())
        return loaded

    up = gns("up", "--config", str(config), "--detach")
    assert up.returncode == 0, up.stderr
    try:
        assert gns("volume", "create", "sensors", "--cluster", "onprem-a").returncode == 0
        assert gns("mount", "add", "/s", "sensors").returncode == 0
        assert gns("put", "-", "/s/day.csv", data=b"a,b\n1,2\n").returncode == 0
        before = state()

        # Nothing stopped: nothing restarted, same processes, exit 0.
        again = gns("up", "--config", str(config), "--detach")
        assert again.returncode == 0, again.stderr
        assert "nothing to restart" in again.stderr
        assert state()["controllers"] == before["controllers"]

        # kill -9 one controller and etcd: both come back on their old ports, with their data.
        a_pid = before["controllers"]["onprem-a"]["pid"]
        b_pid = before["controllers"]["onprem-b"]["pid"]
        etcd_pid = before["etcd_pids"][0]
        for pid in (a_pid, etcd_pid):
            os.kill(pid, signal.SIGKILL)
            _wait_dead(pid)
        again = gns("up", "--config", str(config), "--detach")
        assert again.returncode == 0, again.stderr
        assert "restarted etcd, onprem-a" in again.stderr
        after = state()
        assert after["controllers"]["onprem-b"]["pid"] == b_pid  # left alone
        assert after["controllers"]["onprem-a"]["pid"] != a_pid
        assert pid_alive(after["controllers"]["onprem-a"]["pid"]) and pid_alive(after["etcd_pids"][0])
        assert after["controllers"]["onprem-a"]["port"] == before["controllers"]["onprem-a"]["port"]
        assert after["etcd"] == before["etcd"]
        # up returned only once the new process holds the lease: the killed one's lease
        # (restored with etcd's data) said Ready before the new one served anything.
        with Client(after["etcd"], home=home, watch=False) as client:
            holder = json.loads(client.view().alive["onprem-a"])
        assert f":{after['controllers']['onprem-a']['pid']}:" in holder["instance"]
        cat = gns("cat", "/s/day.csv")
        assert (cat.returncode, cat.stdout) == (0, "a,b\n1,2\n"), cat.stderr
        assert gns("put", "-", "/s/two.csv", data=b"2\n").returncode == 0

        # Another federation under the same home is refused, and nothing is started or stopped.
        other = tmp_path / "other.yaml"
        other.write_text("clusters:\n  - id: onprem-a\nedges: []\n")
        refused = gns("up", "--config", str(other), "--detach")
        assert_error(refused, 4, "a different federation is running")
        assert "onprem-b" in refused.stderr
        assert state()["controllers"] == after["controllers"]
        assert all(pid_alive(c["pid"]) for c in after["controllers"].values())
    finally:
        gns("down")
