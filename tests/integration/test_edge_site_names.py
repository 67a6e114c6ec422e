"""SPEC §8 and §4: an edge site may not take a core cluster's name. ``edge token create``
refuses it (exit 4, nothing stored); a join with a token minted before the name was taken
is refused by the hub (exit 4) without using the token up, issuing anything, registering a
site, or leaving the data dir it created behind; and a site that got in under such a name
before cannot take that cluster's record."""
from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import grpc
import pytest

from federation.api._gen.gns.edge.v1 import edge_pb2 as epb
from federation.api._gen.gns.edge.v1 import edge_pb2_grpc as epb_grpc
from namespace import edge
from namespace.etcd import Etcd, EtcdConfig
from tests.fixtures.federation import Federation, assert_error
from tests.support.edge import edge_list, edge_site, token


def tokens(fed: Federation) -> list[dict[str, Any]]:
    async def main() -> list[dict[str, Any]]:
        client = await Etcd.connect(EtcdConfig.parse(fed.etcd_urls))
        try:
            kvs, _ = await client.get_prefix(edge.TOKENS.encode())
            return [json.loads(v) for _, v in kvs]
        finally:
            await client.close()

    return asyncio.run(main())


def test_token_for_a_core_cluster_name_refused(federation: Federation) -> None:
    federation.add("onprem-a")
    assert_error(federation.gns("edge", "token", "create", "--site", "onprem-a"), 4, "onprem-a")
    assert tokens(federation) == []
    assert json.loads(federation.gns("edge", "list", "--json").stdout) == []


def test_join_under_a_name_taken_after_the_token_refused(federation: Federation) -> None:
    hub = federation.add("onprem-a")
    early = token(federation, "onprem-b", "--hub", "onprem-a")  # no onprem-b yet: accepted
    federation.add("onprem-b")
    e = edge_site(federation, "onprem-b", [hub.endpoint])
    try:
        e.start(early)
        assert e.proc is not None
        e.proc.wait(60)  # the old code joined, then redialed for ever
    finally:
        e.stop()
    errors = [ln for ln in e.tail().splitlines() if ln.startswith("gns: error:")]
    assert e.proc.returncode == 4, e.tail()
    assert errors and "core cluster" in errors[-1] and "onprem-b" in errors[-1], errors
    [rec] = tokens(federation)
    assert rec["site"] == "onprem-b" and not rec["used_at"]  # not used up
    assert not e.data_dir.exists()  # created by the join, removed again: no lock, no node id
    assert edge_list(federation) == {}
    shown = json.loads(federation.gns("cluster", "show", "onprem-b", "--json").stdout)
    assert shown["provider"] == "onprem" and shown["state"] == "Ready"


def test_a_join_that_cannot_listen_keeps_its_token(federation: Federation) -> None:
    """SPEC §4, §8: a join whose --listen address is taken failed after it had redeemed the
    single-use token (and written the site's identity), so the next try with another
    address was refused "already used". It fails first now, the token still usable."""
    hub = federation.add("onprem-a")
    tok = token(federation, "store-9", "--hub", "onprem-a")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        e = edge_site(federation, "store-9", [hub.endpoint])
        e.listen = f"127.0.0.1:{taken.getsockname()[1]}"
        try:
            e.start(tok)
            assert e.proc is not None
            e.proc.wait(60)
        finally:
            e.stop()
    assert e.proc.returncode == 5, e.tail()
    assert "cannot listen on" in e.tail()
    [rec] = tokens(federation)
    assert not rec["used_at"]
    assert not e.data_dir.exists()
    assert edge_list(federation) == {}
    again = edge_site(federation, "store-9", [hub.endpoint])
    try:
        again.start(tok)
        again.wait_link("Ready", timeout=30)
    finally:
        again.stop()


def test_ghost_site_under_a_core_name_cannot_take_its_record(federation: Federation) -> None:
    """A site record that slipped in before joins refused core names: its link is refused,
    even while that cluster is Down, and the cluster's record is left alone."""
    hub = federation.add("onprem-a")
    early = token(federation, "onprem-b", "--hub", "onprem-a")

    async def redeem() -> str:  # what the old hub did: redeem without checking the name
        client = await Etcd.connect(EtcdConfig.parse(federation.etcd_urls))
        try:
            credential, _ = await edge.redeem_token(client, early, "onprem-b", "onprem-a", edge.INSECURE_CA, 600)
            return credential
        finally:
            await client.close()

    credential = asyncio.run(redeem())
    federation.add("onprem-b")
    federation.kill("onprem-b")
    federation.wait_state("onprem-b", "Down", timeout=20)
    ch = grpc.insecure_channel(hub.endpoint)
    hello = epb.Frame(hello=epb.Hello(site="onprem-b", credential=credential, heartbeat_s=0.3, api_version="v1"))
    try:
        with pytest.raises(grpc.RpcError) as info:
            for _ in epb_grpc.EdgeLinkStub(ch).Link(iter([hello]), timeout=20):
                pass
    finally:
        ch.close()
    assert "core cluster" in (info.value.details() or ""), info.value
    shown = json.loads(federation.gns("cluster", "show", "onprem-b", "--json").stdout)
    assert shown["provider"] == "onprem" and shown["state"] == "Down"
