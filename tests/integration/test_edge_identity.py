"""Edge site identity with TLS (SPEC §8), real processes: the hub authenticates a site's
link by its client certificate ``cluster:<site>`` (signed by the federation CA), not by a
bearer credential; a certificate naming another site is refused with the reason; tokens
name a join port that survives a hub restart.
"""
from __future__ import annotations

import json
import signal
from pathlib import Path

import grpc
import pytest

from federation.api._gen.gns.edge.v1 import edge_pb2 as epb
from federation.api._gen.gns.edge.v1 import edge_pb2_grpc as epb_grpc
from federation.certs import init_certs
from federation.tls import channel_credentials, channel_options
from namespace.edge import parse_token
from tests.fixtures.federation import Federation
from tests.support.edge import (
    edge_site,
    token,
    wait_cluster,
)


def tls_federation(fed: Federation, tmp_path: Path) -> None:
    fed.tls_dir = tmp_path / "tls"
    init_certs(fed.tls_dir, ["onprem-a"])


def link_as(endpoint: str, tls_dir: Path, identity: str, site: str) -> grpc.RpcError:
    """Open a link to the hub with ``identity``'s certificate, claiming to be ``site``."""
    ch = grpc.secure_channel(endpoint, channel_credentials(tls_dir, identity),
                             options=channel_options(tls_dir, endpoint))
    hello = epb.Frame(hello=epb.Hello(site=site, credential="", heartbeat_s=0.3, api_version="v1"))
    try:
        with pytest.raises(grpc.RpcError) as info:
            for _ in epb_grpc.EdgeLinkStub(ch).Link(iter([hello]), timeout=20):
                pass
        return info.value
    finally:
        ch.close()


def test_tls_link_is_the_sites_certificate_not_a_credential(federation: Federation, tmp_path: Path) -> None:
    tls_federation(federation, tmp_path)
    hub = federation.add("onprem-a")
    t = edge_site(federation, "edge-t", [hub.endpoint])
    u = edge_site(federation, "edge-u", [hub.endpoint])
    try:
        t.start(token(federation, "edge-t"))
        u.start(token(federation, "edge-u"))
        t.wait_link("Ready", timeout=40)
        u.wait_link("Ready", timeout=40)
        wait_cluster(federation, "edge-t", "Ready", timeout=20)
        # No bearer credential exists with TLS: the site's certificate is its identity.
        for e in (t, u):
            ident = json.loads((e.data_dir / "identity.json").read_text())
            assert ident["credential"] == "" and ident["credential_expires_at"] == 0, ident
            assert ident["cert_expires_at"] > 0
        u.stop()
        wait_cluster(federation, "edge-u", "Down", timeout=20)
        # edge-t's certificate (a valid federation certificate) claiming to be edge-u: refused.
        err = link_as(hub.endpoint, t.data_dir / "tls", "edge-t", "edge-u")
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err
        assert "names cluster:edge-t, not cluster:edge-u" in (err.details() or ""), err.details()
        assert federation.state("edge-u") == "Down"  # nothing registered for the impostor
        # The administrator's certificate is not a site's either.
        assert federation.tls_dir is not None
        err = link_as(hub.endpoint, federation.tls_dir, "client", "edge-t")
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "not cluster:edge-t" in (err.details() or ""), err.details()
        # Its own certificate, from its own data dir, with no credential at all: accepted
        # (edge-u restarts with nothing but what the join left in its data dir).
        u.start()
        u.wait_link("Ready", timeout=30)
        wait_cluster(federation, "edge-u", "Ready", timeout=20)
    finally:
        t.stop()
        u.stop()


def test_token_made_before_hub_restart_still_joins(federation: Federation, tmp_path: Path) -> None:
    tls_federation(federation, tmp_path)
    hub = federation.add("onprem-a")
    tok = token(federation, "edge-r")
    join_port = tok.rsplit("@", 1)[1]
    federation.kill("onprem-a")
    federation.start("onprem-a", wait=False)
    federation.wait_healthy("onprem-a", timeout=30)
    # The restarted hub opened the same token-only port again (it is published in etcd).
    again = token(federation, "edge-other")
    assert again.rsplit("@", 1)[1] == join_port
    e = edge_site(federation, "edge-r", [hub.endpoint])
    try:
        e.start(tok)  # made before the restart
        e.wait_link("Ready", timeout=40)
        wait_cluster(federation, "edge-r", "Ready", timeout=20)
        assert (e.data_dir / "tls" / "edge-r.crt").exists()
    finally:
        e.stop()


def test_token_is_redeemed_at_the_hub_the_site_is_told(federation: Federation, tmp_path: Path) -> None:
    """A token made through one hub, joined with ``--hub`` another hub of the federation:
    the site redeems it there, not at the port of the hub that made it (frozen here)."""
    federation.tls_dir = tmp_path / "tls"
    init_certs(federation.tls_dir, ["onprem-a", "onprem-b"])
    federation.add("onprem-a")
    b = federation.add("onprem-b")
    tok = token(federation, "edge-m", "--hub", "onprem-a")
    federation.kill("onprem-a", signal.SIGSTOP)  # its join port accepts, and never answers
    e = edge_site(federation, "edge-m", [b.endpoint])
    try:
        e.start(tok)
        e.wait_link("Ready", timeout=40)
        wait_cluster(federation, "edge-m", "Ready", timeout=20)
        ident = json.loads((e.data_dir / "identity.json").read_text())
        assert ident["hub"] == "onprem-b", ident
        assert (e.data_dir / "tls" / "edge-m.crt").exists()
        assert parse_token(tok).join not in e.tail(), e.tail()  # never tried onprem-a's join port
    finally:
        e.stop()
        federation.kill("onprem-a", signal.SIGCONT)
