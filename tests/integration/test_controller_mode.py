"""``--controller`` mode (SPEC §4): every command through one controller, no etcd at all.

A table of commands runs twice against the same federation: once the usual way (etcd) and
once with ``--controller`` from an environment that has no etcd address (GNS_ETCD unset,
GNS_HOME empty). Both must give the same JSON and the same exit codes. The table runs the CLI
in process; ``status`` and the error cases run it as separate processes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from federation.local.etcd_server import EtcdCluster
from tests.fixtures.federation import Federation, assert_error

POLICY = """
apiVersion: gns.io/v1
kind: MirrorPolicy
metadata: {name: NAME}
spec:
  volume: VOLUME
  mode: continuous
  targets: [{cluster: onprem-b}]
"""


@pytest.fixture(scope="module")
def fed(etcd_module: EtcdCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    f = Federation(etcd_module, tmp_path_factory.mktemp("ctlmode"))
    try:
        f.add("onprem-a", wait=False)
        f.add("onprem-b", wait=False)
        for cid in f.controllers:
            f.wait_healthy(cid, timeout=30)
        yield f
    finally:
        f.stop_all()


def _etcd_way(f: Federation, args: list[str], stdin: bytes | None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "federation.cli.main", *args], input=stdin,
                          capture_output=True, env=f.env(), timeout=120)


def _controller_way(f: Federation, args: list[str], stdin: bytes | None, tmp: Path) -> subprocess.CompletedProcess[bytes]:
    env = f.env()
    env.pop("GNS_ETCD")
    env["GNS_HOME"] = str(tmp / "empty-home")  # no federation.json to find etcd in
    env["GNS_CONTROLLER"] = f.controllers["onprem-b"].endpoint
    return subprocess.run([sys.executable, "-m", "federation.cli.main", *args], input=stdin,
                          capture_output=True, env=env, timeout=120)


def _stable(out: bytes) -> Any:
    """JSON with the fields that change by the second (lags, times) left out."""
    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items()
                    if k not in ("lag_seconds", "updated", "last_pass", "last_sync", "mtime", "served_by",
                                 "pending_since", "last_error_at")}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v

    return strip(json.loads(out)) if out.strip() else None


# (args with {v} = a volume name unique per way, stdin); each row runs the etcd way, then
# the controller way, and the results are compared after replacing the per-way names.
TABLE: list[tuple[list[str], bytes | None]] = [
    (["cluster", "list"], None),
    (["cluster", "show", "onprem-a"], None),
    (["cluster", "show", "nope"], None),
    (["cluster", "show", "Bad_Id"], None),
    (["volume", "create", "{v}", "--cluster", "onprem-a"], None),
    (["volume", "create", "{v}", "--cluster", "onprem-a"], None),  # exists: 4
    (["volume", "create", "{v}x", "--cluster", "nowhere"], None),  # 3
    (["volume", "create", "{v}l", "--cluster", "onprem-a", "--label", "app.io/team=data"], None),
    (["volume", "show", "{v}l"], None),
    (["volume", "create", "{v}y", "--cluster", "onprem-a", "--label", "a b=c"], None),  # 2
    (["volume", "show", "{v}"], None),
    (["volume", "show", "missing"], None),
    (["mount", "add", "/{v}", "{v}"], None),
    (["mount", "add", "/{v}", "{v}"], None),  # 4
    (["mount", "add", "relative", "{v}"], None),  # 2
    (["resolve", "/{v}/day.csv"], None),
    (["resolve", "/unmounted/x"], None),
    (["put", "-", "/{v}/day.csv"], b"a,b\n1,2\n"),
    (["stat", "/{v}/day.csv"], None),
    (["ls", "/{v}"], None),
    (["cat", "/{v}/day.csv"], None),
    (["cat", "/{v}/missing.csv"], None),
    (["put", "-", "/unmounted/x"], b"x"),
    (["mirror", "apply", "-f", "-"], POLICY.encode()),
    (["mirror", "list"], None),
    (["mirror", "sync", "{v}-dr", "--wait"], None),
    (["mirror", "status", "{v}-dr"], None),
    (["mirror", "verify", "{v}-dr"], None),
    (["mirror", "status", "nope"], None),
    (["acl", "grant", "/{v}", "user:ann", "read,write"], None),
    (["acl", "grant", "/{v}", "user:ann", "execute"], None),  # 2
    (["acl", "list", "/{v}"], None),
    (["acl", "check", "/{v}/day.csv", "--as", "user:ann"], None),
    (["acl", "revoke", "/{v}", "user:ann"], None),
    (["acl", "revoke", "/{v}", "user:ann"], None),  # 3
    (["rm", "/{v}/day.csv"], None),
    (["mirror", "remove", "{v}-dr"], None),
    (["mount", "remove", "/{v}"], None),
    (["mount", "remove", "/{v}"], None),  # 3
    (["cluster", "remove", "onprem-a"], None),  # owns volumes: 4
    (["volume", "promote", "{v}", "--to", "onprem-b"], None),  # owner Ready: 4
    (["volume", "promote", "{v}", "--to", "ghost"], None),  # no such cluster: 3, either way
]


def _in_process(fed: Federation, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes],
                argv: list[str], data: bytes | None, controller: bool, tmp: Path) -> subprocess.CompletedProcess[bytes]:
    """The real CLI in this process (a Python start-up per row would dominate the test); the
    controller way runs with no etcd address anywhere in its environment."""
    import io

    from federation.cli.main import run

    env = fed.env()
    for key in [k for k in os.environ if k.startswith("GNS_")]:
        monkeypatch.delenv(key)
    if controller:
        monkeypatch.setenv("GNS_HOME", str(tmp / "empty-home"))
        monkeypatch.setenv("GNS_CONTROLLER", fed.controllers["onprem-b"].endpoint)
    else:
        monkeypatch.setenv("GNS_ETCD", env["GNS_ETCD"])
        monkeypatch.setenv("GNS_HOME", env["GNS_HOME"])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data or b"")))
    capsysbinary.readouterr()
    code = run(argv)
    out, err = capsysbinary.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)


@pytest.mark.slow
def test_every_command_both_ways_gives_the_same_answer(fed: Federation, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    mismatches = []
    for args, stdin in TABLE:
        results = {}
        for way, name in (("etcd", "qxe"), ("controller", "qxc")):
            argv = [a.replace("{v}", name) for a in args] + ["--json"]
            data = stdin.replace(b"NAME", f"{name}-dr".encode()).replace(b"VOLUME", name.encode()) \
                if stdin else None
            proc = _in_process(fed, monkeypatch, capsysbinary, argv, data, way == "controller", tmp_path)
            assert b"Traceback" not in proc.stderr, proc.stderr
            out = proc.stdout.replace(name.encode(), b"{v}")
            results[way] = (proc.returncode, _stable(out) if proc.returncode == 0 and args[0] != "cat" else out,
                            proc.stderr.replace(name.encode(), b"{v}").decode())
        (rc_e, out_e, _), (rc_c, out_c, _) = results["etcd"], results["controller"]
        if rc_e != rc_c or out_e != out_c:
            mismatches.append((args, results))
    assert not mismatches, json.dumps([(a, {k: [v[0], str(v[1])[:300], v[2][:300]] for k, v in r.items()})
                                       for a, r in mismatches], indent=1)


def test_status_both_ways(fed: Federation, tmp_path: Path) -> None:
    a = _etcd_way(fed, ["status", "--json"], None)
    b = _controller_way(fed, ["status", "--json"], None, tmp_path)
    assert a.returncode == b.returncode == 0, (a.stderr, b.stderr)
    assert _stable(a.stdout) == _stable(b.stdout)


def test_controller_down_or_malformed(fed: Federation, tmp_path: Path) -> None:
    env = fed.env()
    env.pop("GNS_ETCD")
    env["GNS_HOME"] = str(tmp_path / "empty")
    def run(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "federation.cli.main", *a],
                              capture_output=True, text=True, env=env, timeout=60)

    assert_error(run("--controller", "127.0.0.1:1", "cluster", "list"), 5)
    assert_error(run("--controller", "127.0.0.1:1", "cat", "/x"), 5)
    assert_error(run("--controller", "no-port", "cluster", "list"), 2, "--controller")
    assert_error(run("cluster", "list", "--controller", "h:99999"), 2, "--controller")
