"""Join tokens on a real etcd (namespace.edge): one transaction decides, only hashes stored."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from federation.local.etcd_server import EtcdCluster
from namespace import edge
from namespace.errors import Conflict, InvalidInput, PermissionDenied
from namespace.etcd import Etcd, EtcdConfig

T = TypeVar("T")


def run(etcd: EtcdCluster, body: Callable[[Etcd], Awaitable[T]]) -> T:
    async def main() -> T:
        client = await Etcd.connect(EtcdConfig.parse(etcd.urls))
        try:
            return await body(client)
        finally:
            await client.close()

    return asyncio.run(main())


def test_racing_joins_exactly_one_wins_and_no_secret_in_etcd(etcd: EtcdCluster) -> None:
    async def body(client: Etcd) -> None:
        made = await edge.create_token(client, "edge-1", "onprem-a", 60, edge.INSECURE_CA)
        secret = made["token"].rsplit(".", 1)[1]
        results = await asyncio.gather(
            *(edge.redeem_token(client, made["token"], "edge-1", f"hub-{i}", edge.INSECURE_CA, 3600) for i in range(8)),
            return_exceptions=True,
        )
        wins = [r for r in results if not isinstance(r, BaseException)]
        assert len(wins) == 1
        assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException))
        kvs, _ = await client.get_prefix(edge.EDGE.encode())
        dump = b"".join(k + v for k, v in kvs)
        assert secret.encode() not in dump and wins[0][0].encode() not in dump  # hashes only
        rec = json.loads(await client.get(edge.site_key("edge-1")) or b"{}")
        assert rec["hub"] == wins[0][1]["hub"]
        await edge.check_credential(client, "edge-1", wins[0][0])
        with pytest.raises(PermissionDenied):
            await edge.check_credential(client, "edge-1", "guess")
        fresh, _ = await edge.renew_credential(client, "edge-1", wins[0][0], 3600)
        await edge.check_credential(client, "edge-1", fresh)
        await edge.check_credential(client, "edge-1", wins[0][0])  # kept until the next renewal

    run(etcd, body)


def test_token_refusals_write_nothing(etcd: EtcdCluster) -> None:
    async def body(client: Etcd) -> None:
        made = await edge.create_token(client, "edge-2", "onprem-a", 60, edge.INSECURE_CA)
        tok = made["token"]
        with pytest.raises(PermissionDenied, match="issued for site"):
            await edge.redeem_token(client, tok, "edge-3", "onprem-a", edge.INSECURE_CA, 60)
        with pytest.raises(PermissionDenied, match="pins another CA"):
            await edge.redeem_token(client, tok, "edge-2", "onprem-a", "f" * 64, 60)
        with pytest.raises(PermissionDenied, match="forged"):
            await edge.redeem_token(client, tok[:-2] + "zz", "edge-2", "onprem-a", edge.INSECURE_CA, 60)
        with pytest.raises(InvalidInput, match="malformed"):
            await edge.redeem_token(client, "K10x", "edge-2", "onprem-a", edge.INSECURE_CA, 60)
        short = await edge.create_token(client, "edge-4", "onprem-a", 0.05, edge.INSECURE_CA)
        await asyncio.sleep(0.1)
        with pytest.raises(Conflict, match="expired"):
            await edge.redeem_token(client, short["token"], "edge-4", "onprem-a", edge.INSECURE_CA, 60)
        for bad in (0, -1, 31 * 86400):
            with pytest.raises(InvalidInput):
                await edge.create_token(client, "edge-5", "onprem-a", bad, edge.INSECURE_CA)
        sites, _ = await client.get_prefix(edge.SITES.encode())
        assert sites == []
        assert await edge.list_sites(client) == []

    run(etcd, body)


def test_core_cluster_name_refused_for_tokens_and_joins(etcd: EtcdCluster) -> None:
    from namespace import schema
    from namespace.models import ClusterSpec

    async def body(client: Etcd) -> None:
        early = await edge.create_token(client, "onprem-b", "onprem-a", 60, edge.INSECURE_CA)
        await client.put(schema.cluster("onprem-a"), ClusterSpec(id="onprem-a").dump())
        await client.put(schema.cluster("onprem-b"), ClusterSpec(id="onprem-b").dump())
        tokens_before, _ = await client.get_prefix(edge.TOKENS.encode())
        with pytest.raises(Conflict, match="'onprem-a' is a registered core cluster"):
            await edge.create_token(client, "onprem-a", "onprem-b", 60, edge.INSECURE_CA)
        assert (await client.get_prefix(edge.TOKENS.encode()))[0] == tokens_before  # nothing stored
        # A token minted before the name was taken: refused, and left unused.
        with pytest.raises(Conflict, match="'onprem-b' is a registered core cluster"):
            await edge.redeem_token(client, early["token"], "onprem-b", "onprem-a", edge.INSECURE_CA, 60)
        assert (await client.get_prefix(edge.TOKENS.encode()))[0] == tokens_before
        assert (await client.get_prefix(edge.SITES.encode()))[0] == []
        # A site that joined before (its cluster is an edge one) may join again.
        await client.put(schema.cluster("edge-9"), ClusterSpec(id="edge-9", provider="edge").dump())
        again = await edge.create_token(client, "edge-9", "onprem-a", 60, edge.INSECURE_CA)
        _, rec = await edge.redeem_token(client, again["token"], "edge-9", "onprem-a", edge.INSECURE_CA, 60)
        assert rec["site"] == "edge-9"

    run(etcd, body)


def test_a_linked_site_gets_no_second_token_and_none_is_redeemed_for_it(etcd: EtcdCluster) -> None:
    """Two processes under one site name took the link from each other for ever: while a
    site is linked (its alive key), no token is made for it and none made before is
    redeemed (left unused); once it is Down it may join again."""
    from namespace import schema
    from namespace.models import ClusterSpec

    async def body(client: Etcd) -> None:
        await client.put(schema.cluster("edge-7"), ClusterSpec(id="edge-7", provider="edge").dump())
        early = await edge.create_token(client, "edge-7", "onprem-a", 60, edge.INSECURE_CA)
        await client.put(schema.alive("edge-7"), b"linked")
        tokens_before, _ = await client.get_prefix(edge.TOKENS.encode())
        with pytest.raises(Conflict, match="'edge-7' is joined and linked now"):
            await edge.create_token(client, "edge-7", "onprem-a", 60, edge.INSECURE_CA)
        with pytest.raises(Conflict, match="linked now"):
            await edge.redeem_token(client, early["token"], "edge-7", "onprem-a", edge.INSECURE_CA, 60)
        assert (await client.get_prefix(edge.TOKENS.encode()))[0] == tokens_before  # unused
        await client.call(client.client.delete, schema.alive("edge-7"))  # Down
        _, rec = await edge.redeem_token(client, early["token"], "edge-7", "onprem-a", edge.INSECURE_CA, 60)
        assert rec["site"] == "edge-7"

    run(etcd, body)


def test_a_down_site_shows_its_last_reported_backlog_with_its_time(etcd: EtcdCluster) -> None:
    """The hub's live count while the link lives; once it is gone, the last count the site
    reported, dated (it can only have grown since), not a 0 nobody counted."""
    from namespace import schema

    async def body(client: Etcd) -> None:
        made = await edge.create_token(client, "edge-5", "onprem-a", 60, edge.INSECURE_CA)
        await edge.redeem_token(client, made["token"], "edge-5", "onprem-a", edge.INSECURE_CA, 3600)
        [site] = await edge.list_sites(client)
        assert (site["state"], site["backlog"], site["backlog_as_of"]) == ("Down", {"versions": 0, "bytes": 0}, None)

        lease = await client.call(client.client.lease, 30)
        tx = client.tx
        live = {"versions": 3, "bytes": 300}
        await client.txn([], [
            tx.put(schema.alive("edge-5"), b"{}", lease=lease.id),
            tx.put(edge.link_key("edge-5"), json.dumps({"site": "edge-5", "hub": "onprem-a",
                                                        "connected_since": 1.0, "backlog": live}).encode(),
                   lease=lease.id),
            tx.put(edge.backlog_key("edge-5"), json.dumps({"backlog": {"versions": 2, "bytes": 200},
                                                           "reported_at": 5.0}).encode()),
        ])
        [site] = await edge.list_sites(client)
        assert (site["state"], site["backlog"], site["backlog_as_of"]) == ("Ready", live, None)

        await client.call(client.client.revoke_lease, lease.id)  # the link is gone
        [site] = await edge.list_sites(client)
        assert (site["state"], site["backlog"], site["backlog_as_of"]) == ("Down", {"versions": 2, "bytes": 200}, 5.0)
        assert site["connected_since"] is None

        await edge.forget_site(client, "edge-5")
        assert await client.get(edge.backlog_key("edge-5")) is None

    run(etcd, body)
