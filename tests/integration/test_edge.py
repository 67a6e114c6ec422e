"""Edge sites with real processes (SPEC §8): join, tokens, serving through the link,
disconnected operation with kill -9, store-and-forward in version order, hub failover.

Hubs are real controllers on a real etcd; the edge is a real ``gns edge join`` process
whose environment holds no etcd configuration at all. Links are cut with a loopback TCP
proxy the test owns.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from edge.harness import EdgeProcess
from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from tests.fixtures.federation import Federation, assert_error
from tests.support import holds_for, wait_for
from tests.support.edge import (
    HB,
    edge_list,
    edge_site,
    join,
    mirrored,
    put,
    read,
    replica_files,
    start_mirrored_site,
    stub,
    token,
    try_rpc,
    wait_cluster,
)


def test_join_ready_serve_both_ways(federation: Federation) -> None:
    hub = federation.add("onprem-a")
    e = edge_site(federation, "edge-1", [hub.endpoint])
    try:
        join(federation, e)
        shown = json.loads(federation.gns("cluster", "show", "edge-1", "--json").stdout)
        assert shown["provider"] == "edge" and shown["endpoint"] == hub.endpoint
        site = edge_list(federation)["edge-1"]
        assert site["hub"] == "onprem-a" and site["state"] == "Ready" and site["connected_since"]
        assert "GNS_ETCD" not in e.env()
        assert federation.gns("volume", "create", "sensors", "--cluster", "edge-1").returncode == 0
        assert federation.gns("mount", "add", "/sensors", "sensors").returncode == 0
        assert federation.gns("volume", "create", "core", "--cluster", "onprem-a").returncode == 0
        assert federation.gns("mount", "add", "/core", "core").returncode == 0
        s = stub(e)
        wait_for(lambda: try_rpc(lambda: put(s, "/sensors/a.txt", b"at the site").served_by == "edge-1"), 10, "local write")
        # Core -> hub -> down the site's own stream (nothing dials the edge).
        out = federation.gns("cat", "/sensors/a.txt")
        assert out.returncode == 0 and out.stdout == "at the site", out.stderr
        assert federation.gns("put", "-", "/sensors/b.txt", input=b"from the core").returncode == 0
        assert read(s, "/sensors/b.txt") == b"from the core"
        # Site -> up the link for paths owned elsewhere.
        assert federation.gns("put", "-", "/core/x", input=b"core file").returncode == 0
        assert read(s, "/core/x") == b"core file"
        with pytest.raises(grpc.RpcError) as info:
            read(s, "/core/missing")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        # Control commands at the site (--controller) are answered by the hub, as at any
        # controller: the same answers as through etcd.
        for args in (["volume", "list", "--json"], ["edge", "list", "--json"], ["mount", "list", "--json"]):
            at_site = federation.gns("--controller", e.listen, *args)
            assert at_site.returncode == 0, at_site.stderr
            direct = json.loads(federation.gns(*args).stdout)
            if args[0] == "edge":  # connected_since and backlog move with every heartbeat
                assert [d["site"] for d in json.loads(at_site.stdout)] == [d["site"] for d in direct]
            else:
                assert json.loads(at_site.stdout) == direct
        # A restart needs no token: the identity is in the data dir.
        e.stop()
        e.start()
        e.wait_link("Ready")
    finally:
        e.stop()


def test_bad_tokens_refused_nothing_registered(federation: Federation) -> None:
    hub = federation.add("onprem-a")

    def join(site: str, tok: str, name: str, wait: bool = True) -> EdgeProcess:
        e = edge_site(federation, site, [hub.endpoint])
        e.data_dir = federation.root / "edges" / name
        e.start(tok)
        assert e.proc is not None
        if wait:
            e.proc.wait(30)
        return e

    good = token(federation, "edge-ok")
    first = join("edge-ok", good, "first", wait=False)
    try:
        first.wait_link("Ready")
        reused = join("edge-ok", good, "second")
        assert reused.proc is not None and reused.proc.returncode == 4
        assert "already used" in reused.tail()
    finally:
        first.stop()
    cases = {
        "wrong-site": (token(federation, "edge-a"), "edge-b", "issued for site"),
        "expired": (token(federation, "edge-c", "--ttl", "0.2s"), "edge-c", "expired"),
        "forged": (token(federation, "edge-d")[:-3] + "xyz", "edge-d", "forged"),
        "forged-ca": ("K10" + "0" * 64 + "::" + token(federation, "edge-e").split("::", 1)[1], "edge-e", "pins"),
    }
    time.sleep(0.3)  # let the short token expire
    for name, (tok, site, reason) in cases.items():
        e = join(site, tok, name)
        assert e.proc is not None and e.proc.returncode == 4, (name, e.tail())
        lines = [ln for ln in e.tail().splitlines() if ln.startswith("gns: error:")]
        assert lines and reason in lines[-1], (name, lines)
        assert not (e.data_dir / "identity.json").exists()
        assert federation.gns("cluster", "show", site).returncode == 3, name
    # Mistyped or cut short: bad input (exit 2), refused before anything is written.
    for site, tok in (("edge-f", "not-a-token"), ("edge-g", good.split(".")[0])):
        e = join(site, tok, site)
        assert e.proc is not None and e.proc.returncode == 2, (site, e.tail())
        lines = [ln for ln in e.tail().splitlines() if ln.startswith("gns: error:")]
        assert lines and "token malformed" in lines[-1], (site, lines)
        assert not (e.data_dir / "identity.json").exists()
        assert federation.gns("cluster", "show", site).returncode == 3
    sites = edge_list(federation)
    assert set(sites) == {"edge-ok"}


@pytest.mark.slow
def test_offline_writes_kill9_backlog_ships_in_order(federation: Federation, tmp_path: Path) -> None:
    hub, core, proxy, e = start_mirrored_site(federation, tmp_path)
    try:
        s = stub(e)
        expected: dict[str, str] = {}

        def write(i: int) -> bool:
            data = f"reading {i} ".encode() * (i % 7 + 1)
            put(s, f"/sensors/r{i:03d}", data)
            expected[f"r{i:03d}"] = hashlib.sha256(data).hexdigest()
            return True

        wait_for(lambda: try_rpc(lambda: write(0)), 10, "first write")
        for i in range(1, 5):
            write(i)
        wait_for(lambda: replica_files(core.endpoint, "sensors")[0] == 5, 20, "live shipping")
        wait_for(lambda: mirrored(federation) == 5, 10, "mirror status published by the hub")
        # Cut the link (silence, no reset): Down after three beats, seen by the core.
        with federation.client() as watcher:  # a watch-fed view: sees Down within ms of etcd
            assert "edge-1" in watcher.view().alive
            proxy.stall()
            cut = time.monotonic()
            wait_for(lambda: "edge-1" not in watcher.view().alive, 10, "edge-1 Down")
            down_after = time.monotonic() - cut
        # Three beats, then the hub revokes the site's lease and the core's watch sees it. Under
        # two loaded test workers, etcd's revoke and watch took 2.6 s of a 3.8 s total in CI
        # (the hub had decided 1.2 s after the cut). Without the hub's watchdog the link would
        # live on until gRPC's keepalive gave up (10 s + 5 s), its lease refreshed all along.
        assert down_after < 3 * HB + 5, down_after
        e.wait_link("Down", timeout=5)
        for i in range(5, 15):
            write(i)  # the site keeps accepting writes to its own volume
        # Core reads while away: served by the core mirror, marked stale.
        st = json.loads(federation.gns("stat", "/sensors/r001", "--json").stdout)
        assert st.get("stale") is True and st.get("mirrored_version") == 5
        via = json.loads(federation.gns("stat", "/sensors/r001", "--via", "onprem-a", "--json").stdout)
        assert via.get("stale") is True and via.get("served_by") == "onprem-b", via  # a core controller's answer
        # A file written while away: not found, and the answer says it came from a stale copy
        # (it said only "no such file or directory").
        for way in ([], ["--via", "onprem-a"]):
            miss = federation.gns("stat", "/sensors/r010", *way)
            assert miss.returncode == 3, miss.stderr
            assert "answered stale by onprem-b's copy of volume 'sensors' at version 5" in miss.stderr, miss.stderr
            assert "its owner edge-1 may hold newer files" in miss.stderr, miss.stderr
        out = federation.gns("cat", "/sensors/r002")
        assert out.returncode == 0 and out.stdout == "reading 2 " * 3, out.stderr
        assert_error(federation.gns("put", "-", "/sensors/new", input=b"x"), 5)  # writes need the site
        res = json.loads(federation.gns("resolve", "/sensors/r001", "--json").stdout)
        assert res.get("stale") is True and res.get("mirrored_version") == 5
        # The leader never promotes an edge-owned volume, even with automatic failover.
        holds_for(lambda: json.loads(federation.gns("volume", "show", "sensors", "--json").stdout)["owner"]
                  == "edge-1", 1.5, "edge-1's ownership of sensors")
        e.kill()  # kill -9 while offline
        e.start()
        s = stub(e)
        wait_for(lambda: try_rpc(lambda: write(15)), 15, "write after restart")
        for i in range(16, 20):
            write(i)
        assert replica_files(core.endpoint, "sensors")[0] == 5
        proxy.heal()  # the stalled connections are dead: the site redials
        e.wait_link("Ready", timeout=20)
        wait_for(lambda: replica_files(core.endpoint, "sensors")[0] == 20, 30, "backlog shipped")
        version, files = replica_files(core.endpoint, "sensors")
        assert files == expected
        shipped = wait_for(lambda: (got := e.status()["shipped"].get("sensors->onprem-b")) and got[-1] == 20 and got,
                           5, "shipping record")
        assert shipped == list(range(6, 21)), shipped  # resumed at the target's v5: every version, in order
        wait_cluster(federation, "edge-1", "Ready", timeout=10)
        site = wait_for(lambda: (s := edge_list(federation)["edge-1"])["backlog"]["versions"] == 0 and s, 10, "backlog 0")
        assert site["state"] == "Ready"
    finally:
        e.stop()
        proxy.stop()


@pytest.mark.slow
def test_two_hubs_first_killed_site_moves(federation: Federation) -> None:
    a = federation.add("onprem-a")
    b = federation.add("onprem-b")
    e = edge_site(federation, "edge-1", [a.endpoint, b.endpoint])
    try:
        e.start(token(federation, "edge-1"))
        e.wait_link("Ready")
        assert e.status()["hub"] == "onprem-a"
        federation.kill("onprem-a")
        wait_for(lambda: e.status().get("hub") == "onprem-b" and e.status().get("state") == "Ready", 20, "move to onprem-b")
        shown = wait_for(lambda: (d := json.loads(federation.gns("cluster", "show", "edge-1", "--json").stdout))["state"] == "Ready"
                         and d["endpoint"] == b.endpoint and d, 20, "registered through onprem-b")
        assert shown["provider"] == "edge"
        assert edge_list(federation)["edge-1"]["hub"] == "onprem-b"
    finally:
        e.stop()


def test_edge_cli_bad_input(federation: Federation) -> None:
    federation.add("onprem-a")
    g = federation.gns
    assert_error(g("edge", "token", "create"), 2, "--site")
    assert_error(g("edge", "token", "create", "--site", "Bad_Name"), 2, "invalid site name")
    assert_error(g("edge", "token", "create", "--site", "s1", "--ttl", "soon"), 2, "--ttl")
    assert_error(g("edge", "token", "create", "--site", "s1", "--ttl", "0"), 2, "ttl")
    assert_error(g("edge", "token", "create", "--site", "s1", "--ttl", "-5s"), 2)
    assert_error(g("edge", "token", "create", "--site", "s1", "--ttl", "90d"), 2)
    assert_error(g("edge", "token", "create", "--site", "s1", "--hub", "nope"), 3, "nope")
    assert_error(g("edge", "token", "create", "--site", "s1", "--hub", "Bad!"), 2)
    assert_error(g("edge", "token", "create", "--site", "s1", "--bogus"), 2)
    d = str(federation.root / "x")
    join = ["edge", "join", "--token", "K10a::b.c"]
    assert_error(g(*join, "--site", "s1", "--data-dir", d), 2, "--hub")
    assert_error(g(*join, "--hub", "127.0.0.1:1", "--data-dir", d), 2, "--site")
    assert_error(g(*join, "--hub", "127.0.0.1:1", "--site", "s1"), 2, "--data-dir")
    assert_error(g(*join, "--hub", "nohost", "--site", "s1", "--data-dir", d), 2, "HOST:PORT")
    assert_error(g(*join, "--hub", "127.0.0.1:0", "--site", "s1", "--data-dir", d), 2, "port 0")
    assert_error(g(*join, "--hub", ",", "--site", "s1", "--data-dir", d), 2, "--hub")
    assert_error(g(*join, "--hub", "127.0.0.1:1", "--site", "S 1", "--data-dir", d), 2, "site")
    assert_error(g(*join, "--hub", "127.0.0.1:1", "--site", "s1", "--data-dir", d, "--listen", "x"), 2, "HOST:PORT")
    assert_error(g(*join, "--hub", "127.0.0.1:1", "--site", "s1", "--data-dir", d, "--heartbeat", "fast"), 2, "--heartbeat")
    assert_error(g(*join, "--hub", "127.0.0.1:1", "--site", "s1", "--data-dir", d, "--heartbeat", "1ms"), 2, "heartbeat")
    assert_error(g("edge", "join", "--hub", "127.0.0.1:1", "--site", "s1", "--data-dir", d), 2, "--token")
    assert_error(g("edge", "list", "--bogus"), 2)
    assert_error(g("edge", "list", "--etcd", "nota url"), 2)
    assert not Path(d, "identity.json").exists()
    assert json.loads(g("edge", "list", "--json").stdout) == []


@pytest.mark.slow
def test_full_disk_refuses_new_writes_keeps_old(federation: Federation, tmp_path: Path) -> None:
    import subprocess

    hub = federation.add("onprem-a")
    e = edge_site(federation, "edge-1", [hub.endpoint])
    e.data_dir.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(e.data_dir)],
                             capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        join(federation, e)
        assert federation.gns("volume", "create", "sensors", "--cluster", "edge-1").returncode == 0
        assert federation.gns("mount", "add", "/sensors", "sensors").returncode == 0
        s = stub(e)
        wait_for(lambda: try_rpc(lambda: put(s, "/sensors/keep", b"kept")), 10, "first write")
        refused = None
        for i in range(40):
            try:
                put(s, f"/sensors/big{i}", os.urandom(512 * 1024))
            except grpc.RpcError as exc:
                refused = exc
                break
        assert refused is not None, "the disk never filled"
        assert refused.code() == grpc.StatusCode.UNAVAILABLE and "disk full" in (refused.details() or "")
        # small files (a unary Put, each put of a PutBatch) are refused the same way
        small = None
        for i in range(40):
            try:
                s.Put(pb.PutRequest(header=pb.WriteHeader(target=pb.Target(global_path=f"/sensors/s{i}")),
                                    data=os.urandom(60 * 1024)), timeout=30)
            except grpc.RpcError as exc:
                small = exc
                break
        assert small is not None and small.code() == grpc.StatusCode.UNAVAILABLE, small
        assert "disk full" in (small.details() or "")
        batch = s.PutBatch(pb.PutBatchRequest(puts=[
            pb.PutRequest(header=pb.WriteHeader(target=pb.Target(global_path=f"/sensors/b{i}")),
                          data=os.urandom(60 * 1024)) for i in range(3)]), timeout=30)
        assert [o.error_kind for o in batch.outcomes] == ["unavailable"] * 3
        assert read(s, "/sensors/keep") == b"kept"
    finally:
        e.stop()
        subprocess.run(["umount", "-l", str(e.data_dir)], capture_output=True)


def test_tls_join_trades_token_for_own_certificate(federation: Federation, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """With TLS and the CA key at the hub, the site's CSR comes back signed as cluster:<site>;
    it is renewed over the link (a new key, a new certificate) and a restart dials with it
    alone (no token, no --tls-dir)."""
    from cryptography import x509

    from federation.certs import init_certs
    from federation.tls import identity_of

    federation.tls_dir = tmp_path / "tls"
    init_certs(federation.tls_dir, ["onprem-a"])
    monkeypatch.setenv("GNS_EDGE_CERT_TTL", "20s")  # renewal is due after two thirds: ~13 s
    hub = federation.add("onprem-a")
    # The site holds nothing but the token: no CA file, no certificate, no --tls-dir.
    e = edge_site(federation, "edge-t", [hub.endpoint])
    try:
        e.start(token(federation, "edge-t"))
        e.wait_link("Ready", timeout=30)
        wait_cluster(federation, "edge-t", "Ready", timeout=20)
        own = e.data_dir / "tls"
        cert = x509.load_pem_x509_certificate((own / "edge-t.crt").read_bytes())
        ca = x509.load_pem_x509_certificate((federation.tls_dir / "ca.crt").read_bytes())
        assert identity_of(cert).subject == "cluster:edge-t"
        assert cert.issuer == ca.subject
        cert.verify_directly_issued_by(ca)
        assert (own / "ca.crt").read_bytes() == (federation.tls_dir / "ca.crt").read_bytes()
        assert os.stat(own / "edge-t.key").st_mode & 0o777 == 0o600
        ident = json.loads((e.data_dir / "identity.json").read_text())
        assert ident["cert_expires_at"] == pytest.approx(cert.not_valid_after_utc.timestamp(), abs=1)
        assert 0 < ident["cert_expires_at"] - time.time() <= 21
        key_before = (own / "edge-t.key").read_bytes()
        renewed = wait_for(lambda: _renewed_cert(own / "edge-t.crt", cert), 40, "certificate renewal")
        assert identity_of(renewed).subject == "cluster:edge-t"
        renewed.verify_directly_issued_by(ca)
        assert (own / "edge-t.key").read_bytes() != key_before  # a new key pair each renewal
        assert os.stat(own / "edge-t.key").st_mode & 0o777 == 0o600
        # Restart: no token (and still no --tls-dir): the site's own certificate is all it has.
        e.stop()
        e.start()
        e.wait_link("Ready", timeout=30)
        wait_cluster(federation, "edge-t", "Ready", timeout=20)
    finally:
        e.stop()


def _renewed_cert(path: Path, old: Any) -> Any:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert if cert.serial_number != old.serial_number else None
