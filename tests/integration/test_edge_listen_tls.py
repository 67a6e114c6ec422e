"""An edge site of a TLS federation serves apps with mutual TLS, and what it forwards is
decided on the app's identity, not the site's (SPEC §8, §10). Real processes.

Before, the site's ``--listen`` port was plaintext whatever the federation ran: the CLI of
``gns up`` (TLS by default) could not reach it, and a caller with no certificate at all could
write core paths through it, since the hub ran every forwarded call as the site."""
from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from edge.harness import EdgeProcess
from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.certs import init_certs, issue_user
from tests.fixtures.federation import Federation, assert_error
from tests.support import wait_for
from tests.support.edge import edge_site, join


def site_cli(federation: Federation, site: EdgeProcess, tls: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """The gns CLI at the site's ``--listen`` port, as ``identity`` (default the admin)."""
    def at_site(*args: str, identity: str = "client", data: bytes | None = None) -> subprocess.CompletedProcess[str]:
        return federation.gns("--controller", site.listen, "--tls-dir", str(tls), "--identity", identity,
                              *args, input=data)
    return at_site


def test_site_listen_is_mutual_tls_and_forwards_the_callers_identity(federation: Federation,
                                                                     tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    init_certs(tls, ["onprem-a"])
    issue_user(tls, "carol")
    federation.tls_dir = tls
    hub = federation.add("onprem-a")
    assert federation.gns("volume", "create", "core", "--cluster", "onprem-a").returncode == 0
    assert federation.gns("mount", "add", "/core", "core").returncode == 0
    assert federation.gns("put", "-", "/core/x", input=b"core data").returncode == 0
    e = edge_site(federation, "edge-t", [hub.endpoint])
    try:
        join(federation, e, timeout=30)

        # No certificate: refused at the handshake, nothing written.
        with grpc.insecure_channel(e.listen) as ch:
            header = pb.WriteChunk(header=pb.WriteHeader(target=pb.Target(global_path="/core/anon")))
            try:
                pb_grpc.FederationStub(ch).Write(iter([header, pb.WriteChunk(data=b"x")]), timeout=10)
                raise AssertionError("a caller without a certificate wrote through the site")
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc

        at_site = site_cli(federation, e, tls)

        # The administrator (what `gns up`'s CLI uses) works through the site.
        out = at_site("cat", "/core/x")
        assert out.returncode == 0 and out.stdout == "core data", out
        assert at_site("put", "-", "/core/by-admin", data=b"a").returncode == 0
        # A user with no grants is refused by the owner, on the user's identity.
        assert_error(at_site("cat", "/core/x", identity="carol"), 4, "permission denied")
        assert_error(at_site("put", "-", "/core/by-carol", identity="carol", data=b"c"), 4,
                     "permission denied")
        assert federation.gns("acl", "grant", "/core", "user:carol", "read").returncode == 0
        out = at_site("cat", "/core/x", identity="carol")
        assert out.returncode == 0 and out.stdout == "core data", out
        assert_error(at_site("put", "-", "/core/by-carol", identity="carol", data=b"c"), 4,
                     "permission denied")
        assert federation.gns("stat", "/core/by-carol").returncode == 3
        assert federation.gns("stat", "/core/anon").returncode == 3

        # Control commands at the site go to the hub, decided on the caller's identity.
        out = at_site("edge", "list", "--json")
        assert out.returncode == 0 and [s["site"] for s in json.loads(out.stdout)] == ["edge-t"], out
        out = at_site("volume", "list", "--json")
        assert out.returncode == 0 and [v["name"] for v in json.loads(out.stdout)] == ["core"], out
        assert_error(at_site("volume", "create", "carols", "--cluster", "onprem-a", identity="carol"), 4,
                     "permission denied")
        assert at_site("volume", "create", "admins", "--cluster", "onprem-a").returncode == 0
        assert_error(at_site("edge", "token", "create", "--site", "edge-u", identity="carol"), 4,
                     "permission denied")
        out = at_site("edge", "token", "create", "--site", "edge-u")
        assert out.returncode == 0 and json.loads(out.stdout)["site"] == "edge-u", out
        # The same commands straight at a core controller (--controller), without etcd.
        core = federation.gns("--controller", hub.endpoint, "--tls-dir", str(tls), "edge", "list", "--json")
        assert core.returncode == 0 and [s["site"] for s in json.loads(core.stdout)] == ["edge-t"], core
        assert_error(federation.gns("--controller", hub.endpoint, "--tls-dir", str(tls), "edge", "token",
                                    "create", "--site", "Bad_Name"), 2, "invalid site name")
    finally:
        e.stop()


def test_site_decides_for_its_own_paths_on_the_grants_its_hub_sent(federation: Federation,
                                                                   tmp_path: Path) -> None:
    """The site serves its own volumes itself, so it decides for them (SPEC §10: the
    controller that serves a request decides), on the grants its hub sends with its slice of
    the namespace: a grant or a revoke reaches it, a denial is audited at the site, and the
    grants hold while the hub is away, across a restart of the site. Before, any holder of a
    certificate from the federation CA could read and write the site's paths there."""
    tls = tmp_path / "tls"
    init_certs(tls, ["onprem-a"])
    issue_user(tls, "carol")
    issue_user(tls, "dave", groups=["field"])
    federation.tls_dir = tls
    hub = federation.add("onprem-a")
    e = edge_site(federation, "edge-t", [hub.endpoint])
    try:
        join(federation, e, timeout=30)
        assert federation.gns("volume", "create", "sitevol", "--cluster", "edge-t").returncode == 0
        assert federation.gns("mount", "add", "/site", "sitevol").returncode == 0

        at_site = site_cli(federation, e, tls)

        wait_for(lambda: at_site("put", "-", "/site/a", data=b"site data").returncode == 0, 20,
                 "the administrator writes at the site once it has the mount")
        # No grant: refused by the site itself, audited there, nothing written.
        assert_error(at_site("cat", "/site/a", identity="carol"), 4, "permission denied")
        assert_error(at_site("put", "-", "/site/c", identity="carol", data=b"c"), 4, "permission denied")
        assert_error(at_site("rm", "/site/a", identity="carol"), 4, "permission denied")
        audit = [json.loads(ln) for ln in (e.data_dir / "audit.log").read_text().splitlines()]
        assert {(a["identity"], a["path"], a["result"]) for a in audit} >= {
            ("user:carol", "/site/a", "denied: no read"), ("user:carol", "/site/c", "denied: no write")}

        # A grant (to carol, and to dave's group) reaches the site with its slice.
        assert federation.gns("acl", "grant", "/site", "user:carol", "read").returncode == 0
        assert federation.gns("acl", "grant", "/site", "group:field", "read,write").returncode == 0
        wait_for(lambda: at_site("cat", "/site/a", identity="carol").stdout == "site data", 20,
                 "carol's grant reached the site")
        assert_error(at_site("put", "-", "/site/c", identity="carol", data=b"c"), 4, "permission denied")
        wait_for(lambda: at_site("put", "-", "/site/d", identity="dave", data=b"d").returncode == 0, 20,
                 "the group's grant reached the site")

        # The hub away, the site restarted: it decides on the grants it kept.
        federation.stop("onprem-a")
        e.stop()
        e.start()
        e.wait(lambda st: st.get("state") != "Ready", 20, "the restarted site serving, its hub away")
        assert at_site("cat", "/site/a").stdout == "site data"
        assert at_site("cat", "/site/a", identity="carol").stdout == "site data"
        assert_error(at_site("put", "-", "/site/c", identity="carol", data=b"c"), 4, "permission denied")
        assert at_site("put", "-", "/site/e", identity="dave", data=b"e").returncode == 0

        # Back: a revoke reaches the site too.
        federation.start("onprem-a")
        e.wait_link("Ready", timeout=30)
        assert federation.gns("acl", "revoke", "/site", "user:carol").returncode == 0
        wait_for(lambda: at_site("cat", "/site/a", identity="carol").returncode == 4, 20,
                 "the revoke reached the site")
        assert at_site("stat", "/site/c").returncode == 3  # carol never wrote
        assert at_site("cat", "/site/e").stdout == "e"
    finally:
        e.stop()


def test_grant_and_namespace_changes_reach_a_site_before_its_next_heartbeat(
        federation: Federation, tmp_path: Path) -> None:
    """The hub pushes a site its slice as soon as the namespace or a grant changes. Before, it
    rode only the ack of the site's next heartbeat (10 s by default), so a revoke left a
    user reading at the site for up to that long. The heartbeat here is a minute: the site
    beats once as its link comes up, and everything below must reach it long before the
    second beat."""
    heartbeat = 60.0
    tls = tmp_path / "tls"
    init_certs(tls, ["onprem-a"])
    issue_user(tls, "carol")
    federation.tls_dir = tls
    hub = federation.add("onprem-a")
    e = edge_site(federation, "edge-t", [hub.endpoint], heartbeat=heartbeat)
    try:
        join(federation, e, timeout=30)
        linked = time.monotonic()

        at_site = site_cli(federation, e, tls)

        # A volume and a mount made after the link came up: the site serves them.
        assert federation.gns("volume", "create", "sitevol", "--cluster", "edge-t").returncode == 0
        assert federation.gns("mount", "add", "/site", "sitevol").returncode == 0
        wait_for(lambda: at_site("put", "-", "/site/a", data=b"site data").returncode == 0, 15,
                 "the new mount to reach the site")
        assert_error(at_site("cat", "/site/a", identity="carol"), 4, "permission denied")
        # A grant, then a revoke, each decided by the site itself.
        assert federation.gns("acl", "grant", "/site", "user:carol", "read").returncode == 0
        wait_for(lambda: at_site("cat", "/site/a", identity="carol").stdout == "site data", 15,
                 "carol's grant to reach the site")
        assert federation.gns("acl", "revoke", "/site", "user:carol").returncode == 0
        wait_for(lambda: at_site("cat", "/site/a", identity="carol").returncode == 4, 15,
                 "the revoke to reach the site")
        took = time.monotonic() - linked
        assert took < heartbeat, f"{took:.1f}s: the changes may have ridden the second heartbeat"
    finally:
        e.stop()
