"""Mutual TLS between client, forwarder and owner (SPEC §10) with real controller processes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.tls import init_certs
from tests.fixtures.federation import Federation, assert_error, metric


def test_mutual_tls_everywhere(federation: Federation, tmp_path: Path) -> None:
    fed = federation
    fed.tls_dir = tmp_path / "tls"
    init_certs(fed.tls_dir, ["onprem-a", "onprem-b"])
    fed.add("onprem-a")
    fed.add("onprem-b")
    assert fed.gns("volume", "create", "sec", "--cluster", "onprem-a").returncode == 0
    assert fed.gns("mount", "add", "/sec", "sec").returncode == 0

    # good certificates: direct, through a forwarder's bulk tunnel (TLS end to end with the
    # owner: the forwarder moves ciphertext), and relayed by a forwarder (controller-to-controller TLS)
    assert fed.gns_bytes("put", "-", "/sec/a", input=b"secret").returncode == 0
    assert fed.gns_bytes("cat", "/sec/a", "--via", "onprem-b").stdout == b"secret"
    big = b"s" * ((1 << 20) + 1)
    assert fed.gns_bytes("put", "-", "/sec/big", "--via", "onprem-b", input=big).returncode == 0
    assert metric(fed, "onprem-b", "gns_tunnel_bytes_total", direction="to-owner") > len(big)
    with fed.client(via="onprem-b", tunnel=False) as relayed:
        assert relayed.cat("/sec/big") == big
    assert metric(fed, "onprem-b", "gns_forwarded_total", method="Read") == 1
    assert metric(fed, "onprem-b", "gns_forwarded_total", method="Write") == 0

    endpoint = fed.controllers["onprem-a"].endpoint
    # plaintext to a TLS controller is refused
    with grpc.insecure_channel(endpoint) as ch:
        try:
            pb_grpc.FederationStub(ch).Health(pb.HealthRequest(), timeout=3)
            raise AssertionError("plaintext accepted")
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
    # a certificate from a foreign CA is refused
    foreign = tmp_path / "foreign"
    init_certs(foreign, [])
    env = fed.env()
    env["GNS_TLS_DIR"] = str(foreign)
    proc = subprocess.run([sys.executable, "-m", "federation.cli.main", "cat", "/sec/a"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert_error(proc, 5)
    # no client certificate at all (TLS without one) is refused
    ca = (fed.tls_dir / "ca.crt").read_bytes()
    with grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(root_certificates=ca),
                             options=[("grpc.ssl_target_name_override", "localhost")]) as ch:
        try:
            pb_grpc.FederationStub(ch).Health(pb.HealthRequest(), timeout=3)
            raise AssertionError("a client without a certificate was accepted")
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
    # a client that speaks plaintext via the CLI (no --tls-dir) is refused too
    env = fed.env()
    env.pop("GNS_TLS_DIR")
    proc = subprocess.run([sys.executable, "-m", "federation.cli.main", "cat", "/sec/a"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert_error(proc, 5, "give --tls-dir")  # told what is missing, not "Socket closed"


def test_certs_init_cli(tmp_path: Path) -> None:
    def run(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "federation.cli.main", *a],
                              capture_output=True, text=True, timeout=60)

    ok = run("certs", "init", "--dir", str(tmp_path / "t"), "--cluster", "onprem-a", "--json")
    assert ok.returncode == 0, ok.stderr
    for name in ("ca.crt", "ca.key", "onprem-a.crt", "onprem-a.key", "client.crt", "client.key"):
        assert (tmp_path / "t" / name).exists()
    assert_error(run("certs", "init", "--dir", str(tmp_path / "u"), "--cluster", "Bad_Name"), 2, "invalid")
    assert not (tmp_path / "u" / "ca.key").exists()
    # a controller pointed at a TLS dir without its certificate refuses to start
    bad = run("controller", "--cluster", "onprem-z", "--listen", "127.0.0.1:0", "--data-dir",
              str(tmp_path / "d"), "--etcd", "127.0.0.1:1", "--tls-dir", str(tmp_path / "t"))
    assert_error(bad, 2, "onprem-z")
