"""Malformed input to ``gns csi`` and ``gns controller --kubernetes``: exit 2, one error line,
nothing started. No servers needed: both refuse before connecting anywhere."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.federation import assert_error


def gns(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "federation.cli.main", *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GNS_ETCD": "http://127.0.0.1:1", **(env or {})})


@pytest.mark.parametrize(("args", "fragment"), [
    (["--endpoint", "tcp://127.0.0.1:1", "--node-id", "n1"], "--endpoint"),
    (["--endpoint", "unix://relative.sock", "--node-id", "n1"], "--endpoint"),
    (["--endpoint", "unix:///tmp/x.sock", "--node-id", ""], "--node-id"),
    (["--endpoint", "unix:///tmp/x.sock", "--node-id", "n1", "--cluster", "Bad_Name"], "cluster"),
    (["--node-id", "n1"], "--endpoint"),
    (["--endpoint", "unix:///tmp/x.sock"], "--node-id"),
])
def test_gns_csi_refuses_malformed_flags(args: list[str], fragment: str, tmp_path: Path) -> None:
    out = gns("csi", "--state-dir", str(tmp_path / "state"), *args)
    assert_error(out, 2, fragment)
    assert not (tmp_path / "state").exists()


def test_controller_kubernetes_without_a_kubeconfig(tmp_path: Path) -> None:
    out = gns("controller", "--cluster", "c1", "--listen", "127.0.0.1:0",
              "--data-dir", str(tmp_path / "d"), "--kubernetes",
              env={"KUBECONFIG": str(tmp_path / "missing"), "KUBERNETES_SERVICE_HOST": ""})
    assert_error(out, 2, "kubernetes")
    assert not (tmp_path / "d").exists()


def test_controller_kubernetes_with_a_broken_kubeconfig(tmp_path: Path) -> None:
    cfg = tmp_path / "kubeconfig"
    cfg.write_text("apiVersion: v1\nkind: Config\ncurrent-context: nope\ncontexts: []\n")
    out = gns("controller", "--cluster", "c1", "--listen", "127.0.0.1:0",
              "--data-dir", str(tmp_path / "d"), "--kubernetes", env={"KUBECONFIG": str(cfg)})
    assert_error(out, 2, "kubeconfig")
