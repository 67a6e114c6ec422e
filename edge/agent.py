"""The edge controller process (``gns edge join``): wiring, supervision, clean shutdown.

Why it exists: it puts the three edge pieces together (bootstrap -> identity, the link and
its registration, store-and-forward) around the controller's own Federation service and
volume storage. The process holds NO etcd configuration at all: everything it learns
about the federation arrives over the link and is kept in its data dir.

Servers it runs, all on loopback except ``--listen``:

- ``--listen``: the Federation API for apps at the site (``--controller``), and the target
  of calls the hub relays down the link; ``Mirroring`` of the site's own volumes
  (``edge.mirroring``); ``Control/Resolve`` of its own paths (``edge.control``), every
  other control command relayed up to the hub;
- one "up" relay server per destination (the hub itself, each mirror target cluster): a
  real gRPC call made to it crosses the link, so the Federation service's forwarding and
  the mirror engine's cluster target work unchanged.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from edge.bootstrap import Dialer, Identity, join, load_identity, save_identity
from edge.control import SiteControl
from edge.follow import Follower
from edge.link import DIVERGED_KIND, HubLink, Report
from edge.mirroring import SiteMirroring
from edge.shipping import Shipper
from edge.site import UPLINK, EdgeFederationService, EdgeVolumes, LocalNamespace, NeverFenced
from edge.sitecert import cert_dir, has_certificate
from federation import event_loop
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.channels import (
    BASE_OPTIONS,
    SERVER_OPTIONS,
    AioChannelPool,
    GenericHandlersOnly,
    bind,
    check_can_listen,
)
from federation.edge_mux import InCall, LinkMux, RelayHandler, forwardable, replay
from federation.sitekit import (
    AuditLog,
    AuthzInterceptor,
    ControllerMetrics,
    ErrorInterceptor,
    IOPool,
    SiteAuthorizer,
    add_federation_service,
    claim_data_dir,
    forward_metadata,
)
from federation.tls import channel_credentials, channel_options, reloading_server_credentials
from namespace.edge import parse_token
from namespace.errors import InvalidInput, PermissionDenied, Unavailable
from namespace.paths import check_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EdgeConfig:
    site: str
    hubs: tuple[str, ...]
    data_dir: Path
    token: str | None = None
    listen: str = "127.0.0.1:0"
    heartbeat: float = 10.0
    max_backoff: float = 2.0
    """Cap of the full-jitter redial backoff: a site that has been away long comes back within
    about a second on average once its hub answers again."""
    tls_dir: Path | None = None
    """Mutual TLS to the hubs for the join (a CA the token must pin, and a certificate to dial
    with); once the hub has signed the site's own certificate (``<data-dir>/tls``), that is
    used instead and this is no longer needed."""
    identity: str = "client"

    def __post_init__(self) -> None:
        check_name("site", self.site)
        if not self.hubs:
            raise InvalidInput("--hub: give at least one HOST:PORT")
        for h in (*self.hubs, self.listen):
            host, sep, port = h.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
                raise InvalidInput(f"invalid address {h!r}: expected HOST:PORT")
        for h in self.hubs:
            if h.endswith(":0"):
                raise InvalidInput(f"invalid --hub {h!r}: port 0")
        if not 0.05 <= self.heartbeat <= 3600:
            raise InvalidInput(f"invalid --heartbeat {self.heartbeat:g}s: 50ms..1h")

    @staticmethod
    def parse_hubs(text: str) -> tuple[str, ...]:
        return tuple(h.strip() for h in text.split(",") if h.strip())


class EdgeController:
    def __init__(self, cfg: EdgeConfig) -> None:
        self.cfg = cfg
        self._stop = asyncio.Event()
        self.port: int | None = None
        self.link: HubLink | None = None
        self._uplinks: dict[str, tuple[grpc.aio.Server, str]] = {}
        self._uplink_lock = asyncio.Lock()

    def request_stop(self) -> None:
        self._stop.set()

    # -- up relays ----------------------------------------------------------------------------
    def _route_up(self, cluster: str, bulk: bool) -> Any:
        def route(method: str, md: dict[str, str]) -> tuple[LinkMux, str, bool]:
            mux = self.link.mux if self.link is not None else None
            if mux is None or mux.closed:
                raise Unavailable(f"edge site {self.cfg.site} is disconnected from its hub; "
                                  "only paths the site owns are served")
            return mux, cluster, bulk
        return route

    async def uplink(self, cluster: str = "") -> str:
        """Loopback endpoint whose calls run at ``cluster`` (empty: the hub) over the link."""
        async with self._uplink_lock:
            found = self._uplinks.get(cluster)
            if found is None:
                server = grpc.aio.server(options=SERVER_OPTIONS)
                server.add_generic_rpc_handlers((RelayHandler(self._route_up(cluster, bulk=bool(cluster))),))
                port = server.add_insecure_port("127.0.0.1:0")
                await server.start()
                found = self._uplinks[cluster] = (server, f"127.0.0.1:{port}")
            return found[1]

    def _own_dialer(self, identity: Identity | None) -> Dialer | None:
        """Mutual TLS with the site's own certificate (``<data-dir>/tls``), once it has one.

        Its CA must still be the one the join token pinned."""
        if identity is None or not has_certificate(self.cfg.data_dir, self.cfg.site):
            return None
        own = Dialer(cert_dir(self.cfg.data_dir), self.cfg.site)
        if own.ca_fingerprint() != identity.ca_sha256:
            raise PermissionDenied(f"{cert_dir(self.cfg.data_dir)} holds a CA other than the one the site "
                                   "joined with: refusing to trust it")
        from federation.tls import check_tls_dir

        check_tls_dir(cert_dir(self.cfg.data_dir), self.cfg.site)
        return own

    # -- run ------------------------------------------------------------------------------------
    async def run(self) -> None:
        cfg = self.cfg
        identity = load_identity(cfg.data_dir, cfg.site)
        if identity is None:
            if not cfg.token:
                raise InvalidInput(f"site {cfg.site} has no identity in {cfg.data_dir}: pass --token")
            parse_token(cfg.token)  # a malformed token is refused before anything is written
        dialer = self._own_dialer(identity)
        if dialer is None:
            dialer = Dialer(cfg.tls_dir, cfg.identity)
            if cfg.tls_dir is not None:
                from federation.tls import check_tls_dir

                check_tls_dir(cfg.tls_dir, cfg.identity)
        claim_data_dir(cfg.data_dir)
        if identity is None and cfg.token:
            # Before the single-use token is spent: a join that then could not serve changed
            # something (SPEC §4), and the token was gone.
            check_can_listen(cfg.listen)
            identity = await join(list(cfg.hubs), cfg.token, cfg.site, max_delay=cfg.max_backoff, dialer=dialer,
                                  data_dir=cfg.data_dir)
            save_identity(cfg.data_dir, identity)
            log.warning("site %s joined (identity kept in %s)", cfg.site, cfg.data_dir)
            dialer = self._own_dialer(identity) or dialer
        if identity is None:  # unreachable: checked above, before anything was written
            raise InvalidInput(f"site {cfg.site} has no identity in {cfg.data_dir}: pass --token")
        cache = LocalNamespace(cfg.site, cfg.data_dir)
        cache.load()
        metrics = ControllerMetrics(cfg.site)
        pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"io-{cfg.site}")
        # LocalNamespace / NeverFenced stand in for NamespaceCache / LeaseKeeper (the parts the
        # volume manager uses); the controller types them as those classes, not protocols.
        volumes = EdgeVolumes(cfg.site, cfg.data_dir, cache, NeverFenced(), metrics)  # type: ignore[arg-type]
        up = await self.uplink("")
        peers = _EdgePeers(AioChannelPool(None, cfg.site), up)
        # The same stand-ins, plus _EdgePeers for the controller's AioChannelPool.
        service = EdgeFederationService(cfg.site, cache, volumes, metrics, peers, pool)  # type: ignore[arg-type]
        # A site with its own certificate (it joined a hub that runs TLS) serves apps with
        # mutual TLS too, as every controller of such a federation does (SPEC §10): a caller
        # without a certificate from the federation CA is refused at the handshake. The site
        # decides on the identity TLS proved for its own paths (with the grants its hub
        # sent), and passes it on with every call it forwards, for the hub and the owner.
        tls = cert_dir(cfg.data_dir) if has_certificate(cfg.data_dir, cfg.site) else None
        interceptors: list[grpc.aio.ServerInterceptor] = [ErrorInterceptor(metrics, where=f"site {cfg.site}")]
        authz: SiteAuthorizer | None = None
        if tls is not None:
            audit = AuditLog(cfg.data_dir / "audit.log")
            authz = SiteAuthorizer(cfg.site, cache, audit)
            interceptors.append(AuthzInterceptor(authz))
        link_up = asyncio.Event()
        shipper = Shipper(cfg.site, cache, volumes, pool, self.uplink, link_up)
        server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
        add_federation_service(service, server)
        # `gns mirror sync/verify` of the site's own volumes: the hub forwards them down the
        # link (or apps at the site call them); the shipper does the work.
        io = IOPool(pool)
        pb_grpc.add_MirroringServicer_to_server(
            SiteMirroring(cfg.site, cache, volumes, shipper, io, authz), GenericHandlersOnly(server))
        # The site resolves its own paths itself, so `mv` of them works offline (SPEC §8).
        server.add_generic_rpc_handlers((SiteControl(
            cfg.site, cache, volumes, shipper, io, lambda: peers.get(UPLINK), authz).handler(),))
        # Every other control command sent to the site (--controller) is the hub's to answer:
        # it holds the namespace and the grants. Relayed up the link as the caller TLS proved.
        server.add_generic_rpc_handlers((RelayHandler(
            self._route_up("", bulk=False), extra_metadata=lambda _md: list(forward_metadata()),
            prefix="/gns.control.v1.Control/"),))
        self.port = bind(server, cfg.listen, reloading_server_credentials(tls, cfg.site) if tls is not None else None)
        listen = f"{cfg.listen.rpartition(':')[0]}:{self.port}"
        await server.start()
        # Calls the hub relays down the link enter the site's own server (as the site).
        own = (grpc.aio.secure_channel(f"127.0.0.1:{self.port}", channel_credentials(tls, cfg.site),
                                       options=[*BASE_OPTIONS, *channel_options(tls)])
               if tls is not None else grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=BASE_OPTIONS))

        async def replay_down(inc: InCall) -> None:
            md = forwardable(tuple((kv.key, kv.value) for kv in inc.start.metadata))
            await replay(inc, own, md)

        follower = Follower(cfg.site, cache, volumes, pool, self.uplink, link_up)

        def report() -> Report:
            """The shipper's report, plus diverged-write reports (SPEC §7) for the hub to publish."""
            r = shipper.report()
            diverged = volumes.diverged_reports()
            if diverged:
                entries = json.loads(r.mirror_status_json or b"[]")
                entries += [dict(d, kind=DIVERGED_KIND) for d in diverged]
                r.mirror_status_json = json.dumps(entries).encode()
            return r

        self.link = link = HubLink(list(cfg.hubs), identity, cfg.heartbeat, cfg.data_dir, replayer=replay_down,
                                   on_view=cache.update, report=report, listen=listen,
                                   max_backoff=cfg.max_backoff, dialer=dialer)
        link.up = link_up
        link.on_up += [shipper.kick, follower.kick]
        shipper.on_report.append(link.report_soon)  # a target caught up, the backlog moved
        volumes.subscribe_commits(shipper.committed)
        volumes.subscribe_commits(lambda *_: link.report_soon())  # the version, federation-wide
        cache.subscribe(lambda kind, name, value: shipper.kick())
        cache.subscribe(lambda kind, name, value: follower.kick())
        status = _StatusFile(cfg.data_dir, cfg.site, listen, link, shipper, follower)
        tasks = [
            asyncio.create_task(self._stop.wait(), name="stop-signal"),
            asyncio.create_task(link.run(), name="edge-link"),
            asyncio.create_task(shipper.run(), name="edge-shipper"),
            asyncio.create_task(follower.run(), name="edge-follower"),
            asyncio.create_task(status.run(), name="edge-status"),
            asyncio.create_task(volumes.run(), name="edge-volumes"),
        ]
        log.warning("edge site %s serving on %s, hubs %s", cfg.site, listen, ",".join(cfg.hubs))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = t.exception()
                if exc is not None:
                    raise exc
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.stop(grace=1.0)
            for srv, _ in self._uplinks.values():
                await srv.stop(grace=0.5)
            await own.close()
            await peers.close()
            await volumes.stop()
            pool.shutdown(wait=True, cancel_futures=True)


class _EdgePeers:
    """Peer channels of an edge site: the hub is the ``uplink`` relay; nothing else is dialled."""

    def __init__(self, peers: AioChannelPool, uplink: str) -> None:
        self.peers, self.uplink = peers, uplink

    def get(self, endpoint: str) -> grpc.aio.Channel:
        return self.peers.get(self.uplink)

    async def close(self) -> None:
        await self.peers.close()


class _StatusFile:
    """``<data-dir>/edge.json``: state, hub, listen address, backlog (for operators and tests)."""

    def __init__(self, data_dir: Path, site: str, listen: str, link: HubLink, shipper: Shipper,
                 follower: Follower) -> None:
        self.path = data_dir / "edge.json"
        self.site, self.listen, self.link, self.shipper, self.follower = site, listen, link, shipper, follower

    async def run(self) -> None:
        last = b""
        while True:
            versions, nbytes = self.shipper.backlog()
            doc = json.dumps({
                "site": self.site, "listen": self.listen, "state": self.link.state, "hub": self.link.hub,
                "hub_address": self.link.hub_address, "connected_since": self.link.connected_since,
                "pid": os.getpid(), "backlog": {"versions": versions, "bytes": nbytes},
                "shipped": {f"{w.volume}->{w.target}": w.shipped[-50:] for w in self.shipper.workers.values()},
                "first_ack_after_up": self.shipper.first_ack_after_up,
                "followed": {n: list(ve) for n, ve in self.follower.followed.items()},
            }, sort_keys=True).encode()
            if doc != last:
                tmp = self.path.with_name("edge.json.tmp")
                tmp.write_bytes(doc)
                os.replace(tmp, self.path)
                last = doc
            await asyncio.sleep(0.1)


def run_edge(cfg: EdgeConfig) -> None:
    """Run until SIGTERM/SIGINT; raises what made start-up (or the join) fail."""

    async def main() -> None:
        ctl = EdgeController(cfg)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, ctl.request_stop)
        await ctl.run()

    event_loop.run(main())
